"""Beam search over the recurrent drafter."""

from dataclasses import dataclass
from typing import NamedTuple

import mlx.core as mx

from ..model.drafter import Drafter
from ..errors import UsageError
from .sampling import log_softmax

DEAD_BEAM = -1e30  # log-prob of beams 1..W-1 before the first drafted step
MAX_LENGTH = 16  # drafts this long are almost never accepted to the end (drafters train for 4 steps)
MAX_TREE_TOKENS = 1024  # W x L beyond this verifies far more tokens per step than any measured gain needs
ABSENT = -1  # a path's tokens past its node (best_nodes): no tree row, never accepted
DEPTH_TIE = 1e-4  # ranking nodes, a child's score counts this much less per depth: it follows a parent it ties


@dataclass(frozen=True)
class BeamShape:
    """W beams of L tokens each: the LLM's own next token, then L - 1 drafted tokens; nodes:
    greedy decoding only, verify a tree of the drafter's N best nodes instead of the W beams'
    tokens (ranked by drafted log-prob among every node the beam search scored; 0: the
    beams)."""

    width: int = 1
    length: int = 3
    nodes: int = 0

    def __post_init__(self):
        if not all(isinstance(v, int) for v in (self.width, self.length, self.nodes)):
            raise UsageError(f"beam width, length and nodes must be integers, got {self.width!r}x{self.length!r}"
                             f":{self.nodes!r}")
        if self.width < 1:
            raise UsageError(f"beam width must be >= 1, got {self.width}")
        if not 2 <= self.length <= MAX_LENGTH:
            raise UsageError(f"beam length must be in 2..{MAX_LENGTH} (the LLM's token plus 1..{MAX_LENGTH - 1} "
                             f"drafts), got {self.length}")
        if self.width * self.length > MAX_TREE_TOKENS or self.nodes > MAX_TREE_TOKENS:
            raise UsageError(f"beam {self}: at most {MAX_TREE_TOKENS} tokens per tree (width x length, nodes)")
        if self.nodes < 0:
            raise UsageError(f"beam {self}: nodes must be 0 (the beams' tokens) or at least 1")

    def __str__(self) -> str:
        return f"{self.width}x{self.length}" + (f":{self.nodes}" if self.nodes else "")

    @property
    def paths(self) -> int:
        """Drafted paths per step: the W beams, or the N best nodes' paths."""
        return self.nodes or self.width

    @classmethod
    def parse(cls, text: str) -> "BeamShape":
        """'WxL' or 'WxL:N' (a tree of the N best nodes), e.g. '2x4', '16x5:64'."""
        try:
            shape, _, nodes = text.lower().partition(":")
            width, length = (int(v) for v in shape.split("x"))
            nodes = int(nodes) if nodes else 0
        except ValueError:
            raise UsageError(f"--beam must be 'auto' or WIDTHxLENGTH like 2x4 (WIDTHxLENGTH:NODES like 16x5:64: a "
                             f"tree of the drafter's NODES best nodes), got {text!r}") from None
        return cls(width, length, nodes)

    def check(self, draft_vocab_size: int):
        """Raises UsageError when a drafter scoring `draft_vocab_size` tokens cannot fill W beams
        or N nodes."""
        if self.width > draft_vocab_size:
            raise UsageError(f"beam width must be in 1..{draft_vocab_size} (the draft vocabulary), got {self.width}")
        scorable = draft_vocab_size + (self.length - 2) * self.width * draft_vocab_size  # one beam at depth 1
        if self.nodes > scorable:
            raise UsageError(f"beam {self}: the beam search scores only {scorable} distinct nodes with this draft "
                             "vocabulary")


class Draft(NamedTuple):
    beams: mx.array  # (B, W, L) int32: beam w's first token is the LLM's own next token (BeamShape.nodes:
    #   (B, N, L), the paths to the N best nodes, ABSENT past each node)
    log_probs: mx.array  # (B, W, L-1, V') float32: drafter log-probs at each drafted position, over
    #   the draft vocabulary (V' = drafter.draft_vocab_size; drafter.draft_tokens names them)
    positions: mx.array  # (B, W, L-1) int32: each drafted token's position in the draft vocabulary
    scores: mx.array  # (B, W) float32: cumulative log-prob of each beam (sampled drafts: see there)


def beam_search(drafter: Drafter, embed, context: mx.array, first_token: mx.array, beam: BeamShape) -> Draft:
    """Drafts `beam.width` beams of `beam.length` tokens, or with beam.nodes the paths to the
    drafter's N best nodes (best_nodes).

    context: (B, drafter.config.context_size) LLM hidden state (or features, Model.forward's
    taps) at the last accepted token; first_token: (B,) the LLM's next token; embed: tokens
    (...) -> (..., hidden), the LLM's frozen embeddings.
    """
    batch, context_size = context.shape
    width, vocab = beam.width, drafter.draft_vocab_size
    scored = max(width, min(beam.nodes, width * vocab))  # candidates kept per depth
    beams = mx.broadcast_to(first_token[:, None, None], (batch, width, 1)).astype(mx.int32)
    state = mx.zeros((batch, width, drafter.config.hidden_size), dtype=context.dtype)
    scores = mx.array([0.0] + [DEAD_BEAM] * (width - 1))[None].astype(mx.float32)
    scores = mx.broadcast_to(scores, (batch, width))
    context = mx.broadcast_to(context[:, None, :], (batch, width, context_size))
    history = mx.zeros((batch, width, 0, vocab), dtype=mx.float32)
    positions = mx.zeros((batch, width, 0), dtype=mx.int32)
    candidates = []  # per depth d (0-based): the `scored` best paths (B, scored, d + 2) and their scores
    for _ in range(beam.length - 1):
        state = drafter.next_state(state, embed(beams[:, :, -1]))
        log_probs = log_softmax(drafter(context, state))  # (B, W, V)
        flat = (scores[:, :, None] + log_probs).reshape(batch, width * vocab)
        top = mx.argpartition(-flat, kth=scored - 1, axis=-1)[:, :scored]
        top_scores = mx.take_along_axis(flat, top, axis=-1)
        order = mx.argsort(-top_scores, axis=-1)  # best first
        top, top_scores = mx.take_along_axis(top, order, axis=-1), mx.take_along_axis(top_scores, order, axis=-1)
        parent, position = top // vocab, (top % vocab).astype(mx.int32)
        token = drafter.token_of(position).astype(mx.int32)
        paths = mx.concatenate([mx.take_along_axis(beams, parent[:, :, None], axis=1), token[:, :, None]], axis=-1)
        if beam.nodes:
            candidates.append((paths, top_scores))
        parent, position, beams, scores = parent[:, :width], position[:, :width], paths[:, :width], top_scores[:, :width]
        state = mx.take_along_axis(state, parent[:, :, None], axis=1)
        positions = mx.concatenate([mx.take_along_axis(positions, parent[:, :, None], axis=1), position[:, :, None]],
                                   axis=-1)
        history = mx.concatenate([history, log_probs[:, :, None, :]], axis=2)
        history = mx.take_along_axis(history, parent[:, :, None, None], axis=1)
    if beam.nodes:
        return best_nodes(candidates, beam.length, beam.nodes)
    return Draft(beams, history, positions, scores)


def best_nodes(candidates: list, length: int, nodes: int) -> Draft:
    """The paths to the `nodes` best of the scored nodes (candidates: per depth d, paths
    (B, K, d + 2) and their cumulative log-probs (B, K)), best first, each padded to `length`
    with ABSENT: Draft.beams (B, nodes, L) and .scores (B, nodes), no log-probs. A node never
    scores above its parent, and ties go to the shallower node (DEPTH_TIE), so the best N hold
    their own ancestors and pack into 1 + N rows (EAGLE-2's reranking)."""
    paths = mx.concatenate([mx.pad(p, [(0, 0), (0, 0), (0, length - p.shape[-1])], constant_values=ABSENT)
                            for p, _ in candidates], axis=1)
    scores = mx.concatenate([s for _, s in candidates], axis=1)  # (B, D K)
    depths = mx.concatenate([mx.full(s.shape, d, mx.float32) for d, (_, s) in enumerate(candidates)], axis=1)
    best = mx.argsort(depths * DEPTH_TIE - scores, axis=-1)[:, :nodes]
    paths = mx.take_along_axis(paths, best[:, :, None], axis=1)
    return Draft(paths, None, None, mx.take_along_axis(scores, best, axis=-1))
