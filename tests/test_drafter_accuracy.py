"""demos.drafter_accuracy: teacher-forced chains predict what single-beam decoding accepts."""

import numpy as np
import pytest

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from demos import drafter_accuracy
from helpers.tiny import tiny_drafter, tiny_model


@pytest.mark.parametrize("context_layers", [(), (0,), (0, 1)])
def test_chains_replay_the_accepted_counts_of_width_one_decoding(context_layers):
    """Greedy ReDrafter at width 1 starts a step at position t and accepts min(chain(t), L-1)
    drafts, then starts the next step just after them. With context layers this also checks
    that decoding drafts from the features of the right position (the chains come from one
    full forward)."""
    chains = drafter_accuracy.chains
    model = tiny_model(3, vocab=8)
    drafter = tiny_drafter(model, 7, head="own", context_layers=context_layers)
    prompt = [3, 1, 4, 1, 5]
    answer = sum(generate_ar(model, prompt, max_tokens=140), [])
    runs = chains(model, drafter, prompt + answer, len(prompt), steps=3)
    chunks = list(generate_redrafter(model, drafter, prompt, max_tokens=120, beam=BeamShape(1, 4), lookup=0))
    assert_replayed(runs, chunks, answer)


def assert_replayed(runs, chunks, answer):
    """Each step accepts min(chain at its start, L-1 = 3) drafts; the step after starts just after them."""
    assert sum(chunks, []) == answer[:120]
    replayed, position = [], 0
    while position < 120:
        accepted = min(int(runs[position]), 3)
        replayed.append(accepted)
        position += accepted + 1
    assert replayed[:-1] == [len(chunk) - 1 for chunk in chunks[:-1]]  # the last chunk may be cut at 120
    assert sum(replayed) >= 5  # enough drafts accepted for the comparison to mean something


@pytest.mark.parametrize("min_match", [1, 2, 3])
def test_lookup_chains_replay_decoding_with_the_lookup_beam(min_match):
    """With the lookup beam a width-one step accepts the longer of the drafter's and the
    lookup beam's chains; and the lookup beam must win some steps."""
    script = drafter_accuracy
    model = tiny_model(3, vocab=8)
    drafter = tiny_drafter(model, 7, head="own")
    prompt = [3, 1, 4, 1, 5]
    answer = sum(generate_ar(model, prompt, max_tokens=140), [])
    runs = script.chains(model, drafter, prompt + answer, len(prompt), steps=3)
    found = script.lookup_chains(prompt + answer, len(prompt), 3, min_match)
    chunks = list(generate_redrafter(model, drafter, prompt, max_tokens=120, beam=BeamShape(1, 4), lookup=min_match))
    assert_replayed(np.maximum(runs, found), chunks, answer)
    assert (found > runs).sum() >= 5
