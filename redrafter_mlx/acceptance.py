"""Greedy acceptance of drafted beams against the LLM's own argmax."""

from typing import NamedTuple

import mlx.core as mx


class Accepted(NamedTuple):
    beam: mx.array  # () int: the chosen beam
    count: mx.array  # () int: drafted tokens accepted on it (0 .. L-1)
    next_token: mx.array  # () int: the LLM's token after the accepted prefix (the bonus)


def greedy_accept(beams: mx.array, target: mx.array) -> Accepted:
    """beams (W, L): drafts, first token the LLM's own; target (W, L): LLM argmax after each.

    Beam w accepts its k first drafts when beams[w, 1:k+1] == target[w, :k]; the beam with
    the most accepted tokens wins (ties: lowest index)."""
    matches = (beams[:, 1:] == target[:, :-1]).astype(mx.int32)
    counts = mx.cumprod(matches, axis=1).sum(axis=1)
    beam = mx.argmax(counts)
    count = counts[beam]
    return Accepted(beam, count, target[beam, count])
