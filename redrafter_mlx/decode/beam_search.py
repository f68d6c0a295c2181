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


@dataclass(frozen=True)
class BeamShape:
    """W beams of L tokens each: the LLM's own next token, then L - 1 drafted tokens; rows:
    at most this many rows in the tree verified (tokens past them are left out; greedy
    decoding only; 0: every beam token has a row)."""

    width: int = 1
    length: int = 3
    rows: int = 0

    def __post_init__(self):
        if not all(isinstance(v, int) for v in (self.width, self.length, self.rows)):
            raise UsageError(f"beam width, length and rows must be integers, got {self.width!r}x{self.length!r}"
                             f":{self.rows!r}")
        if self.width < 1:
            raise UsageError(f"beam width must be >= 1, got {self.width}")
        if not 2 <= self.length <= MAX_LENGTH:
            raise UsageError(f"beam length must be in 2..{MAX_LENGTH} (the LLM's token plus 1..{MAX_LENGTH - 1} "
                             f"drafts), got {self.length}")
        if self.width * self.length > MAX_TREE_TOKENS:
            raise UsageError(f"beam {self}: at most {MAX_TREE_TOKENS} tokens per tree (width x length)")
        if self.rows and self.rows < self.length:
            raise UsageError(f"beam {self}: rows must be 0 (all) or at least the beam length {self.length} "
                             "(room for one whole beam)")

    def __str__(self) -> str:
        return f"{self.width}x{self.length}" + (f":{self.rows}" if self.rows else "")

    @classmethod
    def parse(cls, text: str) -> "BeamShape":
        """'WxL' or 'WxL:R' (at most R tree rows), e.g. '2x4', '32x5:48'."""
        try:
            shape, _, rows = text.lower().partition(":")
            width, length = (int(v) for v in shape.split("x"))
            rows = int(rows) if rows else 0
        except ValueError:
            raise UsageError(f"--beam must be 'auto' or WIDTHxLENGTH like 2x4 (WIDTHxLENGTH:ROWS like 32x5:48: at "
                             f"most ROWS tree rows), got {text!r}") from None
        return cls(width, length, rows)

    def check(self, draft_vocab_size: int):
        """Raises UsageError when a drafter scoring `draft_vocab_size` tokens cannot fill W beams."""
        if self.width > draft_vocab_size:
            raise UsageError(f"beam width must be in 1..{draft_vocab_size} (the draft vocabulary), got {self.width}")


class Draft(NamedTuple):
    beams: mx.array  # (B, W, L) int32: beam w's first token is the LLM's own next token
    log_probs: mx.array  # (B, W, L-1, V') float32: drafter log-probs at each drafted position, over
    #   the draft vocabulary (V' = drafter.draft_vocab_size; drafter.draft_tokens names them)
    positions: mx.array  # (B, W, L-1) int32: each drafted token's position in the draft vocabulary
    scores: mx.array  # (B, W) float32: cumulative log-prob of each beam (sampled drafts: see there)


def beam_search(drafter: Drafter, embed, context: mx.array, first_token: mx.array,
                width: int, length: int) -> Draft:
    """Drafts `width` beams of `length` tokens.

    context: (B, drafter.config.context_size) LLM hidden state (or features, Model.forward's
    taps) at the last accepted token; first_token: (B,) the LLM's next token; embed: tokens
    (...) -> (..., hidden), the LLM's frozen embeddings.
    """
    batch, context_size = context.shape
    vocab = drafter.draft_vocab_size
    beams = mx.broadcast_to(first_token[:, None, None], (batch, width, 1)).astype(mx.int32)
    state = mx.zeros((batch, width, drafter.config.hidden_size), dtype=context.dtype)
    scores = mx.array([0.0] + [DEAD_BEAM] * (width - 1))[None].astype(mx.float32)
    scores = mx.broadcast_to(scores, (batch, width))
    context = mx.broadcast_to(context[:, None, :], (batch, width, context_size))
    history = mx.zeros((batch, width, 0, vocab), dtype=mx.float32)
    positions = mx.zeros((batch, width, 0), dtype=mx.int32)
    for _ in range(length - 1):
        state = drafter.next_state(state, embed(beams[:, :, -1]))
        log_probs = log_softmax(drafter(context, state))  # (B, W, V)
        candidates = (scores[:, :, None] + log_probs).reshape(batch, width * vocab)
        top = mx.argpartition(-candidates, kth=width - 1, axis=-1)[:, :width]
        top_scores = mx.take_along_axis(candidates, top, axis=-1)
        order = mx.argsort(-top_scores, axis=-1)  # best beam first
        top, scores = mx.take_along_axis(top, order, axis=-1), mx.take_along_axis(top_scores, order, axis=-1)
        parent, position = top // vocab, (top % vocab).astype(mx.int32)
        token = drafter.token_of(position).astype(mx.int32)
        state = mx.take_along_axis(state, parent[:, :, None], axis=1)
        beams = mx.take_along_axis(beams, parent[:, :, None], axis=1)
        beams = mx.concatenate([beams, token[:, :, None]], axis=-1)
        positions = mx.concatenate([mx.take_along_axis(positions, parent[:, :, None], axis=1), position[:, :, None]],
                                   axis=-1)
        history = mx.concatenate([history, log_probs[:, :, None, :]], axis=2)
        history = mx.take_along_axis(history, parent[:, :, None, None], axis=1)
    return Draft(beams, history, positions, scores)
