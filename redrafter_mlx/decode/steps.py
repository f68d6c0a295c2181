"""One decoding step as a function of arrays (compiled where shapes are fixed), and the
inputs of a tree packed on the host.

Compiled, a step is traced once per cache capacity and its elementwise operations fused,
instead of a graph of ~1,000 operations built in Python at every step (16x4 on an H100:
14.4 -> 9.7 ms per step, docs/perf.md). CompiledSteps keeps them (an Engine owns one).
"""

from collections import OrderedDict

import mlx.core as mx
import numpy as np

from .beam_search import BeamShape, Draft
from ..model.drafter import Drafter
from ..model.kv_cache import KVCache, Slots
from ..model.llm import Model
from .sampling import SamplingParams, sample
from .strategy import Strategy
from .trees import lookup_beam, packed_tree, tree_mask, tree_rows


class CompiledSteps:
    """Compiled step functions by key (model, drafter, shape, sampling settings), at most
    `size`, least recently used dropped first: tracing one costs a step's graph."""

    def __init__(self, size: int = 8):
        self.size, self.steps = size, OrderedDict()

    def get(self, key, make):
        """The compiled make() under key, the random state threaded through."""
        if key not in self.steps:
            if len(self.steps) >= self.size:
                self.steps.popitem(last=False)
            self.steps[key] = mx.compile(make(), inputs=mx.random.state, outputs=mx.random.state)
        self.steps.move_to_end(key)
        return self.steps[key]


def verify(model: Model, tokens, positions, mask, offset, keys: list, values: list, taps: tuple = ()):
    """One forward over T new tokens (1, T) at positions (1, T) under mask (1, 1, T, keys),
    their keys/values written at slot `offset` (1,) of the cache's arrays per layer; returns
    hidden (T, dim) (with taps: features, Model.forward) and the written arrays."""
    slots = Slots(keys, values, offset)
    hidden = model.forward(tokens, positions, mask, slots, mask.shape[-1], taps)
    return hidden[0], slots.keys, slots.values


def slot_inputs(cache: KVCache, block: np.ndarray, depths: np.ndarray):
    """Makes room for T new tokens at `depths` (T,) after the committed prefix, seeing each
    other per `block` (T, T); returns a step's positions (1, T), mask (1, 1, T, keys) and
    offset (1,), the first slot written."""
    cache.reserve(len(depths))
    return mx.array(cache.length + depths)[None], cache.mask(mx.array(block)), mx.array([cache.end])


def tree_inputs(cache: KVCache, tree, size: int):
    """A tree packed on the host (tree.build_tree) after the committed prefix as a step's
    inputs: tokens, positions (1, size), mask (1, 1, size, keys) and offset (1,). size > P
    appends dummy tokens that see only themselves, keeping shapes fixed."""
    count = len(tree.tokens)
    block = np.eye(size, dtype=bool)
    block[:count, :count] = tree.mask
    tokens = np.zeros(size, dtype=np.int32)
    tokens[:count] = tree.tokens
    depths = np.zeros(size, dtype=np.int32)
    depths[:count] = tree.depths
    return (mx.array(tokens)[None], *slot_inputs(cache, block, depths))


def _next_draft(model: Model, drafter: Drafter, strategy: Strategy, hidden, index, accepted, beam: BeamShape):
    """The drafts after the accepted path: from the hidden state at its last token."""
    context = hidden[index[accepted.beam, accepted.count]][None]
    return strategy.draft(drafter, model.embed, context, accepted.next_token[None], beam)


def packed_step(model: Model, drafter: Drafter, strategy: Strategy, beam: BeamShape):
    """A step over a tree packed on the host: step(tokens, positions, mask, offset, index,
    beams, keys, values, *drafted) -> (Accepted, next Draft, keys, values): tree_inputs, then
    the beams' rows and tokens (W, L; beam.nodes: N paths), the cache's arrays and, when
    sampled, the drafts' log q
    (W, L-1, V') and positions (W, L-1) in the draft vocabulary."""
    def step(tokens, positions, mask, offset, index, beams, keys, values, *drafted):
        hidden, keys, values = verify(model, tokens, positions, mask, offset, keys, values, drafter.taps)
        log_probs, draft_positions = drafted or (None, None)
        accepted = strategy.judge(model, drafter, hidden, index, beams, Draft(beams, log_probs, draft_positions, None))
        return accepted, _next_draft(model, drafter, strategy, hidden, index, accepted, beam), keys, values

    return step


def resident_step(model: Model, drafter: Drafter, strategy: Strategy, beam: BeamShape, lookup: int,
                  sampled: bool):
    """A step that needs nothing from the host (trees.py): pack the drafts (and the lookup
    beam, lookup > 0) into a tree of fixed size, verify it, judge it, commit the accepted
    path in the cache's device state, append it to the text and draft the next beams.

    step(drafts, state) -> (out, next drafts, next state): drafts holds the beams (1, W, L)
    (beam.nodes: the N best nodes' paths, (1, N, L)) and, when sampled, their log q
    (1, W, L-1, V') and positions (1, W, L-1); state is
    ResidentCache.state(); out (L + 2,) int32 holds the accepted count, the winning beam and
    its L tokens (the first count + 1 of them accepted), read by the host while the next step
    runs. ABSENT tokens (past a path's node, beam.nodes) never match."""
    rows = tree_rows(beam, lookup > 0)
    beam_depths = mx.arange(beam.length)

    def step(drafts, state):
        keys, values, kept, end, length, text = state
        beams = drafts[0][0]
        if lookup:
            found, extra = lookup_beam(text, length, beams[0, :1], beam.length, lookup)
            beams = mx.concatenate([beams, mx.where(found, extra, beams[0])[None]])
        tree = packed_tree(beams, rows)
        mask = tree_mask(kept, tree.block, end)
        hidden, keys, values = verify(model, tree.tokens[None], (length + tree.depths)[None], mask, end,
                                      keys, values, drafter.taps)
        drafted = Draft(beams, drafts[1][0], drafts[2][0], None) if sampled else Draft(beams, None, None, None)
        accepted = strategy.judge(model, drafter, hidden, tree.index, beams, drafted)
        path = beams[accepted.beam]
        on_path = (beam_depths <= accepted.count) | ~tree.present[accepted.beam]  # ABSENT: at row 0, kept
        kept = mx.put_along_axis(kept, end + tree.index[accepted.beam], on_path, axis=0)
        text = mx.slice_update(text, path, length, axes=(0,))
        draft = _next_draft(model, drafter, strategy, hidden, tree.index, accepted, beam)
        out = mx.concatenate([a.astype(mx.int32).reshape(-1) for a in (accepted.count, accepted.beam, path)])
        next_state = (keys, values, kept, end + rows, length + accepted.count + 1, text)
        return out, draft_arrays(draft, sampled), next_state

    return step


def draft_arrays(draft: Draft, sampled: bool) -> tuple:
    """What a resident step needs of the drafts: the beams, and when sampled their log q and
    positions in the draft vocabulary."""
    return (draft.beams, draft.log_probs, draft.positions) if sampled else (draft.beams,)


def ar_step(model: Model, sampling: SamplingParams):
    """An AR step as one function of arrays: (token (1, 1), positions (1, 1), mask (1, 1, 1,
    capacity), offset (1,), keys, values) -> (next token (1,), keys, values)."""
    def step(tokens, positions, mask, offset, keys, values):
        hidden, keys, values = verify(model, tokens, positions, mask, offset, keys, values)
        return sample(model.logits(hidden), sampling), keys, values

    return step
