"""Recursive Speculative Decoding: drafts sampled without replacement, verified by recursive
rejection sampling, must reproduce the target's distribution exactly.

Three levels: the acceptance rule on synthetic p/q tables with draft trees drawn by a NumPy
oracle (Gumbel-top-k over sequences); the drafting itself (sampled_drafts: its trees are
samples without replacement of q); the whole decode loop on a tiny model."""

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.decode.sampled_drafts import conditioned_gumbels, sample_drafts
from redrafter_mlx.decode.sampling import SamplingParams, target_log_probs
from redrafter_mlx.decode.stats import Stats
from helpers.stats_check import chi2_goodness_of_fit, chi2_two_sample, total_variation
from test_sampling import (VOCAB, exact_joint, exact_two_tokens, outcomes, ours, random_tables, two_token_counts,
                           with_log_probs)
from helpers.tiny import cpu_policy, tiny_drafter, tiny_model


def gumbel_trees(count: int, width: int, length: int, q, rng, method: str) -> np.ndarray:
    """Draft trees (count, W, L) drawn without replacement, as a NumPy oracle independent of
    sampled_drafts: rsd-s takes the W drafted sequences with the largest log q + Gumbel
    (a sample of W sequences without replacement), rsd-c the W first tokens with the largest
    log q + Gumbel, each continued by one draw. Beams are sorted by their perturbed value;
    beams that cannot be filled (q's support too small) are copies of beam 0."""
    with np.errstate(divide="ignore"):
        log_q0, log_q1 = np.log(q[0]), np.log(q[1])
    if method == "rsd-s":
        seq = log_q0 if length == 2 else (log_q0[:, None] + log_q1).reshape(-1)
        values = seq + rng.gumbel(size=(count, seq.size))
        top = np.argsort(-values, axis=1)[:, :width]
        drafted = top[..., None] if length == 2 else np.stack([top // VOCAB, top % VOCAB], -1)
        filled = np.isfinite(np.take_along_axis(values, top, 1))
    else:
        values = log_q0 + rng.gumbel(size=(count, VOCAB))
        first = np.argsort(-values, axis=1)[:, :width]
        filled = np.isfinite(np.take_along_axis(values, first, 1))
        drafted = first[..., None]
        if length > 2:
            coins = rng.random(first.shape + (1,))
            second = np.minimum((coins > np.cumsum(q[1][first], -1)).sum(-1), VOCAB - 1)
            drafted = np.stack([first, second], -1)
    beams = np.zeros((count, width, length), dtype=np.int32)
    beams[..., 1:] = drafted
    return np.where(filled[..., None], beams, beams[:, :1])


@pytest.mark.parametrize("method", ["rsd-s", "rsd-c"])
@pytest.mark.parametrize("width,length,sparse", [(3, 3, False), (4, 2, True), (5, 3, True)])
def test_recursive_rejection_sampling_is_exact(method, width, length, sparse):
    """sparse: p has zeros (top-k / top-p) and q has support for only 4 first tokens (not the
    2 least likely under p), fewer than W = 5: the unfilled beams are copies of beam 0."""
    rng = np.random.default_rng(width * 10 + length + (method == "rsd-c"))
    mx.random.seed(width + length)
    p, q = random_tables(rng, sparse)
    if sparse:
        q[0][np.argsort(p[0])[:2]] = 0
        q[0] /= q[0].sum()
    n = 200_000
    beams = gumbel_trees(n, width, length, q, rng, method)
    beam, count, next_token = ours(beams, *with_log_probs(beams, p, q), without_replacement=True)
    counts = outcomes(beams, beam, count, next_token, p, rng)
    assert chi2_goodness_of_fit(counts, exact_joint(p)) > 1e-3
    assert total_variation(counts, exact_joint(p)) < 0.02
    assert count.mean() > 0.3


@pytest.mark.parametrize("method", ["rsd-s", "rsd-c"])
def test_trees_without_replacement_verified_as_iid_are_biased(method):
    """The deliberately wrong variant: drafts drawn without replacement but verified with the
    i.i.d. rule (q not renormalised after a rejection) must fail the same test."""
    width, length = 3, 3
    rng = np.random.default_rng(11)
    mx.random.seed(11)
    p, q = random_tables(rng, False)
    n = 200_000
    beams = gumbel_trees(n, width, length, q, rng, method)
    beam, count, next_token = ours(beams, *with_log_probs(beams, p, q), without_replacement=False)
    counts = outcomes(beams, beam, count, next_token, p, rng)
    assert chi2_goodness_of_fit(counts, exact_joint(p)) < 1e-6


def test_conditioned_gumbels_keep_the_parent_maximum_and_the_order():
    rng = np.random.default_rng(0)
    perturbed = mx.array(rng.gumbel(size=(4, 7)) + np.log(rng.dirichlet(np.ones(7), 4)), dtype=mx.float32)
    parent = mx.array([[0.3], [-2.0], [5.0], [-mx.inf]])
    out = np.array(conditioned_gumbels(perturbed, parent))
    np.testing.assert_allclose(out[:3].max(-1), np.array(parent[:3, 0]), rtol=1e-5)
    assert (np.argsort(-out[:3], -1) == np.argsort(-np.array(perturbed[:3]), -1)).all()
    assert np.isneginf(out[3]).all()


def drafter_tables(model, drafter, context, first_token: int, params):
    """q of the first drafted token (V,) and of the second given the first (V, V)."""
    vocab = model.config.vocab_size
    state = drafter.next_state(mx.zeros((1, drafter.config.hidden_size)), model.embed(mx.array([first_token])))
    q0 = drafter.to_full_vocab(target_log_probs(drafter(context, state), params), -mx.inf)[0]
    states = drafter.next_state(mx.broadcast_to(state, (vocab, state.shape[-1])), model.embed(mx.arange(vocab)))
    q1 = drafter.to_full_vocab(target_log_probs(drafter(mx.broadcast_to(context, (vocab, context.shape[-1])),
                                                        states), params), -mx.inf)
    return np.exp(np.array(q0, dtype=np.float64)), np.exp(np.array(q1, dtype=np.float64))


@pytest.mark.parametrize("method", ["rsd-s", "rsd-c", "iid"])
def test_sampled_drafts_follow_the_drafter(method):
    """Batched over many draws: beam 0 of rsd-s is one ancestral sample of q (the largest
    Gumbel-perturbed sequence); every method's trees match the NumPy oracle's (first
    tokens' inclusion counts, two-sample test); without replacement, no two beams are the
    same sequence."""
    vocab, width, length, n = 6, 3, 3, 20_000
    model = tiny_model(1, vocab=vocab)
    drafter = tiny_drafter(model, 3)
    params = SamplingParams(1.0)
    context = mx.array(np.random.default_rng(0).normal(size=(1, drafter.config.context_size)), dtype=mx.float32)
    mx.random.seed(5)
    draft = sample_drafts(drafter, model.embed, mx.broadcast_to(context, (n, context.shape[-1])),
                          mx.full((n,), 2, dtype=mx.int32), width, length, params, method)
    beams = np.array(draft.beams)
    q = drafter_tables(model, drafter, context, 2, params)
    assert (beams[:, :, 0] == 2).all()
    drafted = beams[:, :, 1] * vocab + beams[:, :, 2]
    if method != "iid":
        assert all(len(set(row)) == width for row in drafted)
    if method == "rsd-s":
        first = np.bincount(drafted[:, 0], minlength=vocab * vocab)
        assert chi2_goodness_of_fit(first, q[0][:, None] * q[1]) > 1e-3
    oracle = (sampled_iid(n, width, q) if method == "iid"
              else gumbel_trees(n, width, length, q, np.random.default_rng(1), method))
    mine, theirs = (np.stack([(b[:, :, 1] == t).any(1) for t in range(vocab)], 1).sum(0) for b in (beams, oracle))
    assert chi2_two_sample(mine, theirs) > 1e-3


def sampled_iid(count, width, q):
    rng = np.random.default_rng(2)
    beams = np.zeros((count, width, 3), dtype=np.int32)
    beams[..., 1] = rng.choice(VOCAB, size=(count, width), p=q[0] / q[0].sum())
    for t in range(VOCAB):
        chosen = beams[..., 1] == t
        beams[..., 2][chosen] = rng.choice(VOCAB, size=chosen.sum(), p=q[1][t] / q[1][t].sum())
    return beams


@pytest.mark.parametrize("method,params,width,length,gpu_mode", [
    ("rsd-s", SamplingParams(1.0), 3, 3, False),
    ("rsd-c", SamplingParams(1.0), 3, 3, False),
    ("rsd-s", SamplingParams(0.7, top_k=6, top_p=0.9), 4, 2, False),  # support can be smaller than W
    ("rsd-s", SamplingParams(1.0), 3, 3, True),  # fixed shapes: the compiled step
])
def test_decode_loop_with_drafts_without_replacement_samples_the_target(method, params, width, length, gpu_mode):
    vocab, prompt, runs = 8, [1, 2, 3], 1200
    model = tiny_model(0, vocab=vocab)
    drafter = tiny_drafter(model, 2)
    mx.random.seed(0)
    exact = exact_two_tokens(model, prompt, params)
    accepted = []

    def redrafter():
        stats = Stats()
        yield from generate_redrafter(model, drafter, prompt, max_tokens=2, beam=BeamShape(width, length),
                                      sampling=params, sampled_drafts=method, policy=cpu_policy(gpu_mode), stats=stats)
        accepted.append(stats.accepted_histogram[1])

    rd = two_token_counts(redrafter, runs, vocab)
    ar = two_token_counts(lambda: generate_ar(model, prompt, max_tokens=2, sampling=params), runs, vocab)
    assert chi2_goodness_of_fit(rd, exact) > 1e-3
    assert chi2_two_sample(rd, ar) > 1e-3
    assert sum(accepted) > runs / 10  # the second token often came from a draft
