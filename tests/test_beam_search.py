"""Beam search over the drafter, directly, against exhaustive enumeration on a tiny vocabulary."""

import itertools

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode.beam_search import ABSENT, BeamShape, beam_search
from redrafter_mlx.errors import UsageError
from redrafter_mlx.decode.sampling import log_softmax
from helpers.tiny import tiny_drafter, tiny_model


def sequence_log_prob(drafter, model, context, first, tokens) -> float:
    """log q of drafting `tokens` after `first`, step by step (the drafter's recurrence)."""
    state = mx.zeros((1, drafter.config.hidden_size))
    total, previous = 0.0, first
    for token in tokens:
        state = drafter.next_state(state, model.embed(mx.array([int(previous)])))
        total += log_softmax(drafter(context, state))[0, int(token)].item()
        previous = token
    return total


@pytest.mark.parametrize("width,length", [(1, 3), (3, 3), (4, 4), (5, 3), (6, 3)])
def test_beams_are_the_most_likely_sequences(width, length):
    """Beams come distinct, best first, each with its sequence's log q; where W beams can hold
    every prefix of the last step (W >= V^(L-2)) they are exactly the W most likely
    sequences of all V^(L-1) (enumerated)."""
    model = tiny_model(2, "llama", vocab=5)
    drafter = tiny_drafter(model, 3)
    context = mx.random.normal((1, drafter.config.context_size))
    first = mx.array([2])
    draft = beam_search(drafter, model.embed, context, first, BeamShape(width, length))
    beams, scores = np.array(draft.beams[0]), np.array(draft.scores[0])
    assert (beams[:, 0] == 2).all()
    for beam, score in zip(beams, scores):  # each score is its beam's log q
        assert score == pytest.approx(sequence_log_prob(drafter, model, context, 2, beam[1:]), abs=1e-4)
    assert (np.diff(scores) <= 1e-6).all()  # best first
    assert len({tuple(b) for b in beams}) == width  # distinct
    everything = {seq: sequence_log_prob(drafter, model, context, 2, seq)
                  for seq in itertools.product(range(5), repeat=length - 1)}
    ranked = sorted(everything.values(), reverse=True)
    assert scores[0] <= ranked[0] + 1e-4
    if width >= 5 ** (length - 2):  # wide enough to keep every prefix: exact
        np.testing.assert_allclose(scores, ranked[:width], atol=1e-4)


@pytest.mark.parametrize("width,length,nodes", [(5, 3, 1), (5, 3, 7), (5, 3, 30), (25, 4, 40)])
def test_best_nodes_are_the_most_likely_prefixes(width, length, nodes):
    """BeamShape.nodes: paths to the N best nodes, best first, each with its log q and ABSENT
    past its node; where the beams keep every prefix (W >= V^(L-2)) they are exactly the N
    most likely of all drafts of 1..L-1 tokens (enumerated), and hold their own ancestors."""
    model = tiny_model(2, "llama", vocab=5)
    drafter = tiny_drafter(model, 3)
    context = mx.random.normal((1, drafter.config.context_size))
    draft = beam_search(drafter, model.embed, context, mx.array([2]), BeamShape(width, length, nodes))
    paths, scores = np.array(draft.beams[0]), np.array(draft.scores[0])
    assert paths.shape == (nodes, length) and (paths[:, 0] == 2).all()
    drafted = [tuple(t for t in path[1:] if t != ABSENT) for path in paths]
    for path, tokens in zip(paths, drafted):  # ABSENT only past the node
        assert (path[1 + len(tokens):] == ABSENT).all() and len(tokens) >= 1
    for tokens, score in zip(drafted, scores):
        assert score == pytest.approx(sequence_log_prob(drafter, model, context, 2, tokens), abs=1e-4)
    assert (np.diff(scores) <= 1e-6).all() and len(set(drafted)) == nodes
    everything = {seq: sequence_log_prob(drafter, model, context, 2, seq)
                  for depth in range(1, length) for seq in itertools.product(range(5), repeat=depth)}
    best = sorted(everything, key=everything.get, reverse=True)[:nodes]
    assert set(drafted) == set(best)
    assert all(tokens[:-1] in set(drafted) | {()} for tokens in drafted)  # ancestors first


def test_best_nodes_are_refused_past_what_the_search_scores():
    """At most V' distinct nodes at depth 1 (one beam alive) and W V' at each depth after it."""
    BeamShape(5, 3, 30).check(5)
    with pytest.raises(UsageError, match="scores only 30 distinct nodes"):
        BeamShape(5, 3, 31).check(5)
