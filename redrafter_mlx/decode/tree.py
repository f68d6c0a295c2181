"""Dynamic tree attention: pack beams that share prefixes into one prefix tree.

Beams always share their first token and often more. A (beam, depth) token is kept
only if no lower-index beam has the same prefix up to that depth; the kept tokens are
packed beam-major and verified in one forward with a mask that lets each packed token
see exactly its tree ancestors (and itself) after the committed prefix.
Runs on the host in NumPy: the beams are tiny (W x L) and already read back each step.
"""

from typing import NamedTuple

import numpy as np

from .beam_search import ABSENT


class Tree(NamedTuple):
    tokens: np.ndarray  # (P,) packed tokens
    depths: np.ndarray  # (P,) depth of each packed token (position = committed length + depth)
    mask: np.ndarray  # (P, P) bool: mask[i, j] is True when j is i or an ancestor of i
    index: np.ndarray  # (W, L) packed index of each beam token; index[w] is increasing (0 where ABSENT)
    present: np.ndarray  # (W, L) bool: the beam token is in the tree (not ABSENT)


def build_tree(beams: np.ndarray) -> Tree:
    """beams (W, L) int -> the packed prefix tree of their tokens (ABSENT ones past a path's
    node, BeamShape.nodes, left out; a token comes after its parent)."""
    width, length = beams.shape
    same_token = beams[:, None, :] == beams[None, :, :]  # (W, W, L)
    same_prefix = np.logical_and.accumulate(same_token, axis=-1)
    owner = np.argmax(same_prefix, axis=1)  # (W, L): lowest beam sharing the prefix
    present = beams != ABSENT
    unique = (owner == np.arange(width)[:, None]) & present
    packed_id = np.cumsum(unique.reshape(-1)).reshape(width, length) - 1
    index = packed_id[owner, np.arange(length)[None, :]]
    unique_beam, depths = np.nonzero(unique)
    count = depths.shape[0]
    ancestors = index[unique_beam]  # (P, L): the path through each packed token's beam
    visible = np.arange(length)[None, :] <= depths[:, None]
    mask = np.zeros((count, count), dtype=bool)
    packed_rows = np.broadcast_to(np.arange(count)[:, None], (count, length))
    mask[packed_rows[visible], ancestors[visible]] = True
    return Tree(beams[unique], depths, mask, np.where(present, index, 0), present)
