"""The lookup beam (lookup.py): what it proposes, that greedy output stays AR's, that it helps."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.decode.trees import lookup_beam as device_lookup_beam
from redrafter_mlx.decode.lookup import MAX_MATCH, lookup_beam, with_lookup_beam
from redrafter_mlx.policy import GPU
from redrafter_mlx.decode.sampling import SamplingParams
from redrafter_mlx.decode.stats import Stats
from helpers.tiny import cpu_policy, tiny_drafter, tiny_model


def test_lookup_copies_what_followed_the_latest_occurrence():
    text = np.array([7, 1, 2, 3, 4, 5, 1, 2, 3, 8, 9, 0, 2, 3])
    assert lookup_beam(text, 3, 1).tolist() == [3, 8, 9]  # the suffix [2, 3] last occurred at 7
    assert lookup_beam(text, 4, 1).tolist() == [3, 8, 9, 0]


def test_lookup_prefers_the_longest_suffix():
    text = np.array([5, 6, 1, 2, 9, 4, 6, 1, 2, 8, 8, 5, 6, 1, 2])
    # [6, 1, 2] last occurred at 6 (then 8, 8); the longer [5, 6, 1, 2] at 0 (then 9, 4) wins
    assert lookup_beam(text, 3, 1).tolist() == [2, 9, 4]


def test_lookup_needs_min_match_and_room_for_the_beam():
    text = np.array([1, 2, 3, 9, 9, 2, 3])
    assert lookup_beam(text, 2, 2).tolist() == [3, 9]
    assert lookup_beam(text, 2, 3) is None  # [9, 2, 3] never occurred before
    assert lookup_beam(np.array([1, 2, 1]), 4, 1) is None  # [1] at 0 has two tokens after it, not three
    assert lookup_beam(np.array([1, 2, 1]), 3, 1).tolist() == [1, 2, 1]  # a repeat runs into the suffix
    assert lookup_beam(np.array([1, 2, 1]), 2, 1).tolist() == [1, 2]
    assert lookup_beam(np.array([4]), 2, 1) is None
    assert lookup_beam(np.array([5, 5]), 4, 1) is None  # shorter than the beam: no room for 3 tokens


@pytest.mark.parametrize("length", [3, 6])
def test_greedy_parity_with_lookup_from_a_one_token_prompt(length):
    """A one-token prompt that the LLM repeats: at the first step the text (2 tokens) is
    shorter than the beam, and its last token matches the first."""
    model = tiny_model(3, "llama", vocab=6)
    drafter = tiny_drafter(model, 4)
    ar = sum(generate_ar(model, [2], max_tokens=20), [])
    assert ar[0] == 2
    assert sum(generate_redrafter(model, drafter, [2], max_tokens=20, beam=BeamShape(2, length), lookup=1), []) == ar


def test_with_lookup_beam_appends_the_copy_or_beam_zero():
    beams = np.array([[3, 5, 6], [3, 5, 7]], dtype=np.int32)
    found = with_lookup_beam(beams, [3, 8, 9, 1], 1)  # the text then the LLM's next token 3
    assert found.tolist() == [[3, 5, 6], [3, 5, 7], [3, 8, 9]] and found.dtype == np.int32
    assert with_lookup_beam(beams, [1, 2], 1).tolist() == [[3, 5, 6], [3, 5, 7], [3, 5, 6]]


@pytest.mark.parametrize("min_match", [1, 2, 4])
@pytest.mark.parametrize("width,length,fixed_shapes,gpu", [(1, 3, None, False), (3, 4, None, False),
                                                           (3, 4, True, False), (2, 5, None, True)])
def test_greedy_parity_with_lookup(min_match, width, length, fixed_shapes, gpu):
    """gpu: the GPU policy (the lookup beam padded into the fixed tree, prompts into buckets)."""
    policy = GPU if gpu else cpu_policy(fixed_shapes)
    for seed in range(3):
        model = tiny_model(seed, "llama", vocab=10)
        drafter = tiny_drafter(model, seed + 20)
        prompt = [(4 * i + seed) % 10 for i in range(13)]
        ar = sum(generate_ar(model, prompt, max_tokens=40), [])
        rd = sum(generate_redrafter(model, drafter, prompt, max_tokens=40, beam=BeamShape(width, length), policy=policy, lookup=min_match), [])
        assert rd == ar


def test_lookup_beam_accepts_the_repeats_the_drafter_misses():
    """Greedy output of small random models repeats itself now and then, which the lookup
    beam copies: fewer steps than with the same drafter alone, the lookup beam chosen in some."""
    steps, lookup_steps = {0: 0, 2: 0}, 0
    for seed in range(4):
        model = tiny_model(seed, "llama", vocab=24)
        drafter = tiny_drafter(model, seed + 60)
        ar = sum(generate_ar(model, [1, 2, 3], max_tokens=60), [])
        for min_match in steps:
            stats = Stats()
            assert sum(generate_redrafter(model, drafter, [1, 2, 3], max_tokens=60, beam=BeamShape(1, 4), stats=stats, lookup=min_match), []) == ar
            steps[min_match] += stats.steps
            lookup_steps += stats.lookup_steps
    assert steps[2] < 0.9 * steps[0], steps  # measured: 235 -> 188
    assert lookup_steps >= 10  # measured: 19


def test_sampling_does_not_use_the_lookup_beam():
    model = tiny_model(1, "llama", vocab=8)
    stats = Stats()
    sum(generate_redrafter(model, tiny_drafter(model, 2), [1, 2, 1, 2], max_tokens=30, beam=BeamShape(2, 3), stats=stats, sampling=SamplingParams(temp=1.0), lookup=1), [])
    assert stats.steps > 0 and stats.lookup_steps == 0


def test_negative_lookup_is_rejected():
    model = tiny_model(1, "llama", vocab=8)
    with pytest.raises(ValueError, match="lookup"):
        next(generate_redrafter(model, tiny_drafter(model, 2), [1, 2], max_tokens=5, beam=BeamShape(1, 3), lookup=-1))


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.integers(0, 3), min_size=1, max_size=40), spare=st.integers(0, 12),
       length=st.integers(2, 5), min_match=st.integers(1, 4))
def test_device_lookup_equals_the_host_rule(text, spare, length, min_match):
    """The resident step's search (decode.trees.lookup_beam, over a text buffer with room
    after it) proposes exactly what lookup.lookup_beam does, or nothing where it finds none."""
    *sequence, first = text
    buffer = mx.array(sequence + [3] * (1 + spare), dtype=mx.int32)  # room for `first`, then junk (none: tight)
    found, beam = device_lookup_beam(buffer, mx.array([len(sequence)]), mx.array([first]), length, min_match)
    expected = lookup_beam(np.array(text), length, min_match)
    assert bool(found) == (expected is not None)
    if expected is not None:
        assert beam.tolist() == expected.tolist()


def test_device_lookup_finds_nothing_when_min_match_exceeds_the_longest_suffix_searched():
    text = mx.array([5, 6, 7, 5, 6, 7, 5, 6, 7, 0, 0, 0, 0, 0, 0], dtype=mx.int32)
    found, beam = device_lookup_beam(text, mx.array([9]), mx.array([5]), 3, MAX_MATCH + 1)
    assert not bool(found) and beam.shape == (3,)
    found, beam = device_lookup_beam(text, mx.array([9]), mx.array([5]), 3, MAX_MATCH)  # [5, 6, 7, 5] at 3
    assert bool(found) and beam.tolist() == [5, 6, 7]
