"""Draft trees at a fixed size on the device (DecodePolicy.fixed_shapes): built, searched
and committed inside the step, so the host never reads the beams.

Every beam starts with the LLM's own token, so the tree of B beams of L tokens is laid out
as that shared token followed by each beam's L - 1 drafts: T = 1 + B (L - 1) rows, one
constant mask and index per shape. (On GPUs the tree was padded to B x L rows anyway;
deeper shared prefixes are verified twice, which costs rows, not launches or syncs.)
The lookup beam (lookup.py) is searched here too, over the text kept on the device.
"""

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from .lookup import MAX_MATCH


class TreeLayout(NamedTuple):
    depths: mx.array  # (T,) int32: each row's depth (position = sequence length + depth)
    index: mx.array  # (B, L) int32: the row of each beam token
    block: mx.array  # (T, T) bool: row i sees row j (its ancestors and itself)


def tree_layout(beams: int, length: int) -> TreeLayout:
    """The fixed layout of `beams` beams of `length` tokens sharing their first token."""
    drafts = length - 1
    index = np.arange(beams)[:, None] * drafts + np.arange(length)[None]
    index[:, 0] = 0
    owner = np.concatenate([[-1], np.repeat(np.arange(beams), drafts)])
    depths = np.concatenate([[0], np.tile(np.arange(1, length), beams)])
    block = (owner[:, None] == owner[None, :]) & (depths[None, :] <= depths[:, None])
    block[:, 0] = True
    return TreeLayout(mx.array(depths, dtype=mx.int32), mx.array(index, dtype=mx.int32), mx.array(block))


def tree_rows(layout: TreeLayout) -> int:
    """T, the rows of a layout: 1 + B (L - 1)."""
    return layout.depths.shape[0]


def tree_tokens(beams: mx.array) -> mx.array:
    """beams (B, L) -> the rows' tokens (T,) in tree_layout's order."""
    return mx.concatenate([beams[0, :1], beams[:, 1:].reshape(-1)])


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
