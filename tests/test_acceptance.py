"""Greedy acceptance, directly: the longest run of drafts equal to the LLM's argmax wins."""

import mlx.core as mx
import numpy as np
from hypothesis import given, settings, strategies as st

from redrafter_mlx.decode.acceptance import greedy_accept


def test_longest_run_wins_and_the_bonus_follows_it():
    beams = mx.array([[7, 1, 2, 9], [7, 1, 5, 6], [7, 3, 3, 3]])
    target = mx.array([[1, 2, 4, 8], [1, 5, 6, 0], [2, 2, 2, 2]])  # beam 1 matches 3 drafts
    accepted = greedy_accept(beams, target)
    assert (accepted.beam.item(), accepted.count.item(), accepted.next_token.item()) == (1, 3, 0)


def test_ties_go_to_the_lowest_beam_and_nothing_accepted_gives_the_llm_token():
    beams = mx.array([[7, 1, 9], [7, 1, 8]])
    target = mx.array([[1, 4, 4], [1, 5, 5]])  # both accept one draft
    accepted = greedy_accept(beams, target)
    assert (accepted.beam.item(), accepted.count.item(), accepted.next_token.item()) == (0, 1, 4)
    none = greedy_accept(mx.array([[7, 2, 2]]), mx.array([[3, 3, 3]]))
    assert (none.beam.item(), none.count.item(), none.next_token.item()) == (0, 0, 3)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(2, 5), st.integers(0, 2 ** 31 - 1))
def test_matches_a_loop_over_beams(width, length, seed):
    rng = np.random.default_rng(seed)
    beams, target = rng.integers(0, 3, (width, length)), rng.integers(0, 3, (width, length))
    counts = []
    for w in range(width):
        k = 0
        while k < length - 1 and beams[w, k + 1] == target[w, k]:
            k += 1
        counts.append(k)
    best = int(np.argmax(counts))
    accepted = greedy_accept(mx.array(beams), mx.array(target))
    assert (accepted.beam.item(), accepted.count.item()) == (best, counts[best])
    assert accepted.next_token.item() == target[best, counts[best]]
