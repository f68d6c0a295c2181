"""Draft trees at a fixed size on the device (DecodePolicy.fixed_shapes): packed, searched
and committed inside the step, so the host never reads the beams.

Every beam starts with the LLM's own token, and beams often share more: the beams (or the
paths to the drafter's best nodes, BeamShape.nodes) are packed into a prefix tree on the
device (the rule of tree.build_tree, which packs on the host), in a fixed number of rows
(tree_rows: room for paths that share only their first token). The lookup beam (lookup.py)
is searched here too, over the text kept on the device.
"""

from typing import NamedTuple

import mlx.core as mx

from .beam_search import ABSENT, BeamShape
from .lookup import MAX_MATCH


def tree_rows(beam: BeamShape, lookup: bool) -> int:
    """Rows of a step's tree at most: the LLM's token, the drafter's W (L - 1) beam tokens or
    its N best nodes, and (lookup) the lookup beam's L - 1 tokens."""
    drafted = beam.nodes or beam.width * (beam.length - 1)
    return 1 + drafted + (beam.length - 1) * lookup


def node_rows(beams: mx.array):
    """beams (..., B, L) sharing their first token -> (rows (..., B, L) int32, count (...)):
    each beam token's row in the packed prefix tree, where a token whose prefix an earlier
    beam shares takes that beam's row, and the rows taken; ABSENT tokens take none. Rows go to beam 0's tokens
    first, then to each later beam's new tokens in order, so a token's row is after its
    parent's and the first T rows of any T hold whole prefixes."""
    width, length = beams.shape[-2:]
    lead = beams.shape[:-2]
    same = mx.cumprod((beams[..., :, None, :] == beams[..., None, :, :]).astype(mx.int32), axis=-1)  # [u, w, d]
    owner = mx.argmax(same, axis=-3)  # (..., B, L): the first beam with w's first d + 1 tokens
    new = ((owner == mx.arange(width)[:, None]) & (beams != ABSENT)).reshape(*lead, width * length).astype(mx.int32)
    rank = mx.cumsum(new, axis=-1) - 1  # (..., B L): the row of each new token
    where = (owner * length + mx.arange(length)).reshape(*lead, width * length)
    rows = mx.take_along_axis(rank, where, axis=-1).reshape(*lead, width, length)
    return rows, new.sum(axis=-1)


class PackedTree(NamedTuple):
    tokens: mx.array  # (T,) int32: each row's token (0 in rows past the tree)
    depths: mx.array  # (T,) int32: each row's depth (position = sequence length + depth)
    index: mx.array  # (B, L) int32: the row of each beam token (0 where ABSENT)
    present: mx.array  # (B, L) bool: the beam token has a row (not ABSENT)
    block: mx.array  # (T, T) bool: row i sees row j (its ancestors and itself; rows past the tree: themselves)


def packed_tree(beams: mx.array, size: int) -> PackedTree:
    """The beams (B, L) packed on the device into a prefix tree of `size` rows, at least its
    distinct tokens (tree_rows): shared prefixes take one row (node_rows), ABSENT tokens none.
    Rows past the tree see only themselves, keeping the shape fixed."""
    width, length = beams.shape
    rows, _ = node_rows(beams)
    present = beams != ABSENT
    target = mx.where(present, rows, size).reshape(-1)  # row `size`: a slot for ABSENT tokens, dropped
    depths = mx.broadcast_to(mx.arange(length, dtype=mx.int32), beams.shape).reshape(-1)
    tokens = mx.put_along_axis(mx.zeros(size + 1, mx.int32), target, beams.reshape(-1).astype(mx.int32), axis=0)
    depth_of = mx.put_along_axis(mx.zeros(size + 1, mx.int32), target, depths, axis=0)
    seen = mx.where(mx.arange(length) <= mx.arange(length)[:, None], mx.minimum(rows, size)[:, None, :], size)  # (B, L, L)
    pairs = target.reshape(width, length, 1) * (size + 1) + seen
    block = mx.put_along_axis(mx.zeros((size + 1) ** 2, mx.bool_), pairs.reshape(-1), mx.array(True), axis=0)
    block = block.reshape(size + 1, size + 1)[:size, :size] | mx.eye(size, dtype=mx.bool_)
    return PackedTree(tokens[:size], depth_of[:size], mx.where(present, rows, 0), present, block)


def tree_mask(kept: mx.array, block: mx.array, end: mx.array) -> mx.array:
    """The step's attention mask (1, 1, T, capacity): every row sees the sequence's slots
    (kept (capacity,)) and, at slots [end, end + T), its tree ancestors (block (T, T))."""
    rows = mx.broadcast_to(kept[None], (block.shape[0], kept.shape[0]))
    return mx.slice_update(rows, block, end, axes=(1,))[None, None]


def lookup_beam(text: mx.array, length: mx.array, first: mx.array, beam_length: int, min_match: int):
    """The lookup beam on the device (lookup.lookup_beam's rule): text (N,) holds the
    sequence's `length` (1,) tokens first; first (1,): the LLM's next token. Returns
    (found () bool, beam (beam_length,)): that token and the beam_length - 1 tokens that
    followed the latest earlier occurrence of the text's longest suffix of
    min_match..MAX_MATCH tokens.

    All suffix lengths and start positions are compared at once, (M, N, MAX_MATCH): a few
    operations whatever MAX_MATCH, as a GPU step pays per operation (docs/perf.md)."""
    size, follow = text.shape[0], beam_length - 1
    full = mx.slice_update(text, first, length, axes=(0,))
    if min_match > MAX_MATCH:  # no suffix that long is searched
        return mx.array(False), mx.concatenate([first, full[:follow]])
    total = length + 1  # (1,)
    sizes = mx.arange(MAX_MATCH, min_match - 1, -1)[:, None]  # (M, 1): suffix lengths, longest first
    offsets, starts = mx.arange(MAX_MATCH), mx.arange(size)
    windows = full[mx.minimum(starts[:, None] + offsets, size - 1)]  # (N, MAX_MATCH): the text from each start
    suffixes = full[mx.clip(total - sizes + offsets, 0, size - 1)]  # (M, MAX_MATCH): each suffix, then padding
    equal = (windows[None] == suffixes[:, None]) | (offsets >= sizes[:, :, None])
    match = equal.all(axis=-1) & (starts + sizes <= total - follow)  # (M, N): leaves `follow` tokens after it
    latest = mx.max(mx.where(match, starts, -1), axis=-1)  # (M,)
    longest = mx.argmax(latest >= 0)  # the longest suffix that occurs (0 where none does)
    best = latest[longest]
    after = mx.clip(best + sizes[longest, 0] + mx.arange(follow), 0, size - 1)
    return best >= 0, mx.concatenate([first, full[after]])
