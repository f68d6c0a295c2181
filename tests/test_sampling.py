"""Speculative sampling must reproduce the target's sampling distribution exactly.

Two levels: the acceptance rule alone on synthetic p/q tables (hundreds of thousands of
steps, vectorised), where two known-biased rules must fail the same test; and the whole
decode loop on a tiny model, against the exact joint distribution and against AR samples.
"""

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode.acceptance import MIN_MASS, _iid_walk, speculative_accept
from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.decode.sampling import SamplingParams, target_log_probs
from redrafter_mlx.decode.stats import Stats
from helpers.stats_check import chi2_goodness_of_fit, chi2_two_sample, total_variation
from helpers.tiny import cpu_policy, tiny_drafter, tiny_model

VOCAB = 6


def random_tables(rng, sparse: bool):
    """Target p(t1), p(t2|t1), p(t3|t1,t2) and draft q(t1), q(t2|t1) over VOCAB tokens.

    q is sharper than p and only partly agrees with it, so acceptance is neither ~0 nor
    ~1; sparse zeroes some target probabilities (as top-k / top-p do)."""
    def dist(shape, sharpness, base=None):
        logits = rng.normal(size=shape + (VOCAB,)) * sharpness
        if base is not None:
            logits = logits + base
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        return probs / probs.sum(-1, keepdims=True)

    q = [dist((), 2.0), dist((VOCAB,), 2.0)]
    p = [dist((), 1.0, np.log(q[0])), dist((VOCAB,), 1.0, np.log(q[1])), dist((VOCAB, VOCAB), 1.5)]
    if sparse:
        for table in p:
            table[..., 1] = 0
            table /= table.sum(-1, keepdims=True)
    return p, q


def draw(probs: np.ndarray, rng) -> np.ndarray:
    """probs (..., V) -> one token per row."""
    coins = rng.random(probs.shape[:-1] + (1,))
    return np.minimum((coins > np.cumsum(probs, -1)).sum(-1), VOCAB - 1)


def with_log_probs(beams: np.ndarray, p, q):
    """beams (N, W, L) -> log q (N, W, L-1, V) and log p (N, W, L, V) along each beam."""
    t1, t2 = beams[..., 1], beams[..., 2] if beams.shape[-1] > 2 else None
    rows_q = [np.broadcast_to(q[0], t1.shape + (VOCAB,)), q[1][t1]]
    rows_p = [np.broadcast_to(p[0], t1.shape + (VOCAB,)), p[1][t1]]
    if t2 is not None:
        rows_p.append(p[2][t1, t2])
    length = beams.shape[-1]
    with np.errstate(divide="ignore"):
        return np.log(np.stack(rows_q[:length - 1], 2)), np.log(np.stack(rows_p, 2))


def sampled_beams(count: int, width: int, length: int, q, rng) -> np.ndarray:
    beams = np.zeros((count, width, length), dtype=np.int32)
    beams[..., 1] = draw(np.broadcast_to(q[0], (count, width, VOCAB)), rng)
    if length > 2:
        beams[..., 2] = draw(q[1][beams[..., 1]], rng)
    return beams


def complete(prefix: np.ndarray, known: np.ndarray, p, rng) -> np.ndarray:
    """Fills the unknown of 3 tokens (known[n] of them given) by sampling from p."""
    tokens = prefix.copy()
    for position in range(3):
        fresh = known <= position
        probs = [np.broadcast_to(p[0], (len(tokens), VOCAB)), p[1][tokens[:, 0]],
                 p[2][tokens[:, 0], tokens[:, 1]]][position]
        tokens[fresh, position] = draw(probs, rng)[fresh]
    return tokens


def outcomes(beams, beam, count, next_token, p, rng) -> np.ndarray:
    """One step's output (accepted drafts + next token) completed to 3 tokens -> counts (V, V, V)."""
    rows = np.arange(len(beams))
    prefix = np.zeros((len(beams), 3), dtype=np.int64)
    drafted = beams[rows, beam, 1:]
    prefix[:, :drafted.shape[1]] = drafted
    prefix[rows, count] = next_token
    tokens = complete(prefix, count + 1, p, rng)
    return np.bincount(tokens @ np.array([VOCAB * VOCAB, VOCAB, 1]), minlength=VOCAB ** 3)


def exact_joint(p) -> np.ndarray:
    return p[0][:, None, None] * p[1][:, :, None] * p[2]


def ours(beams, log_q, log_p, without_replacement=False):
    """speculative_accept on log_p (N, W, L, V) given per beam token: as logits of one row per
    token (their log-softmax at temperature 1 is log_p itself)."""
    count, width, length = beams.shape
    index = mx.broadcast_to(mx.arange(width * length).reshape(width, length), (count, width, length))
    logits = mx.array(log_p.reshape(count, width * length, -1), dtype=mx.float32)
    accepted = speculative_accept(mx.array(beams), mx.array(log_q, dtype=mx.float32), logits, index,
                                  SamplingParams(1.0), without_replacement=without_replacement)
    return [np.array(a) for a in accepted]


def longest_run_independent_coins(beams, log_q, log_p, rng):
    """The biased rule: each beam checked alone with its own coins, longest run wins."""
    q, p = np.exp(log_q), np.exp(log_p)
    count, width, length = beams.shape
    runs = np.zeros((count, width), dtype=np.int64)
    alive = np.ones((count, width), dtype=bool)
    for depth in range(1, length):
        token = beams[..., depth][..., None]
        ratio = np.take_along_axis(p[:, :, depth - 1], token, -1) / np.take_along_axis(q[:, :, depth - 1], token, -1)
        alive &= rng.random((count, width)) < ratio[..., 0]
        runs += alive
    beam = np.argmax(runs, axis=1)
    rows = np.arange(count)
    run = runs[rows, beam]
    p_next, q_next = p[rows, beam, run], np.concatenate([q, np.zeros_like(q[:, :, :1])], 2)[rows, beam, run]
    rest = np.maximum(p_next - q_next, 0)
    return beam, run, draw(rest / rest.sum(-1, keepdims=True), rng)


def top_beams(width: int, length: int, q) -> np.ndarray:
    """Beam-search-like drafts: the `width` most likely draft prefixes under q (not samples)."""
    if length == 2:
        tops = np.argsort(-q[0])[:width][:, None]
    else:
        joint = (q[0][:, None] * q[1]).reshape(-1)
        top = np.argsort(-joint)[:width]
        tops = np.stack([top // VOCAB, top % VOCAB], 1)
    return np.concatenate([np.zeros((width, 1), dtype=np.int64), tops], 1)


@pytest.mark.parametrize("width,length,sparse", [(1, 3, False), (3, 3, False), (4, 2, True), (6, 3, True),
                                                     (16, 2, False), (12, 3, True)])
def test_speculative_accept_is_exact(width, length, sparse):
    rng = np.random.default_rng(width * 10 + length)
    mx.random.seed(width)
    p, q = random_tables(rng, sparse)
    n = 200_000
    beams = sampled_beams(n, width, length, q, rng)
    beam, count, next_token = ours(beams, *with_log_probs(beams, p, q))
    counts = outcomes(beams, beam, count, next_token, p, rng)
    assert chi2_goodness_of_fit(counts, exact_joint(p)) > 1e-3
    assert total_variation(counts, exact_joint(p)) < 0.02
    assert count.mean() > 0.3  # drafts do get accepted


def sequential_iid_walk(inside, outside, q, tokens, places, alive, coins):
    """The walk of one node one candidate at a time, in float64 (docs/sampling.md)."""
    found = np.zeros(len(tokens), dtype=bool)
    chosen = np.zeros(len(tokens), dtype=np.int64)
    rest = inside.astype(np.float64).copy()
    for b in range(len(tokens)):
        r, mass = rest[b], 1.0
        for w in np.flatnonzero(alive[b]):
            x = places[b, w]
            if coins[b, w] * q[b, x] * mass < r[x]:
                found[b], chosen[b] = True, tokens[b, w]
                break
            moved = np.maximum(r - q[b] * mass, 0.0)
            if outside[b] + moved.sum() > MIN_MASS:
                r, mass = moved, outside[b] + moved.sum()
        rest[b] = r
    return found, chosen, rest


@pytest.mark.parametrize("width,vocab", [(16, 6), (5, 40)])
def test_iid_walk_tests_each_candidate_against_the_sequential_residual(width, vocab):
    """The vectorised walk (every candidate tested at once against the residual after the
    alive beams before it were rejected) takes the same decisions as trying the candidates
    one by one, given the same coins."""
    rng = np.random.default_rng(width)
    rows = 3000
    p = rng.dirichlet(np.full(vocab + 1, 0.3), size=rows)  # the last entry: mass outside V'
    q = rng.dirichlet(np.full(vocab, 0.3), size=rows)
    p[:5, -1] = 0
    p[:5] /= p[:5].sum(-1, keepdims=True)
    q[:5] = p[:5, :-1]  # r == q: nothing is left after a rejection (here forced by coins of 1), so r stays
    places = np.minimum((rng.random((rows, width, 1)) > np.cumsum(q, -1)[:, None]).sum(-1), vocab - 1)  # iid from q
    tokens = places + 100
    alive = rng.random((rows, width)) < 0.8
    coins = rng.random((rows, width))
    coins[:5] = 1.0
    inside, outside = p[:, :-1], p[:, -1]
    args = [a.astype(np.float32) if a.dtype == np.float64 else a for a in (inside, outside, q)]
    args = [*args, tokens.astype(np.int32), places.astype(np.int32), alive, coins.astype(np.float32)]
    found, chosen, rest = (np.array(a) for a in _iid_walk(*(mx.array(a) for a in args)))
    want_found, want_chosen, want_rest = sequential_iid_walk(*args)
    assert (found == want_found).mean() > 0.999 and found.mean() > 0.3
    same = found & want_found
    assert (chosen[same] == want_chosen[same]).mean() > 0.999
    stopped = ~found & ~want_found
    assert stopped[:5].all()
    np.testing.assert_allclose(rest[stopped], want_rest[stopped], atol=1e-5)


@pytest.mark.parametrize("rule", ["longest_run_independent_coins", "beam_search_drafts"])
def test_biased_rules_fail_the_same_test(rule):
    width, length = 3, 3
    rng = np.random.default_rng(7)
    mx.random.seed(7)
    p, q = random_tables(rng, False)
    n = 200_000
    if rule == "beam_search_drafts":
        beams = np.broadcast_to(top_beams(width, length, q), (n, width, length)).copy()
        beam, count, next_token = ours(beams, *with_log_probs(beams, p, q))
    else:
        beams = sampled_beams(n, width, length, q, rng)
        beam, count, next_token = longest_run_independent_coins(beams, *with_log_probs(beams, p, q), rng)
    counts = outcomes(beams, beam, count, next_token, p, rng)
    assert chi2_goodness_of_fit(counts, exact_joint(p)) < 1e-6


def exact_two_tokens(model, prompt, params) -> np.ndarray:
    """The target's exact joint distribution of the next two tokens (V, V)."""
    vocab = model.config.vocab_size
    tokens = mx.concatenate([mx.broadcast_to(mx.array(prompt), (vocab, len(prompt))),
                             mx.arange(vocab)[:, None]], axis=1)
    positions = mx.broadcast_to(mx.arange(tokens.shape[1]), tokens.shape)
    hidden = model(tokens, positions, model.new_cache(vocab))
    log_p = target_log_probs(model.logits(hidden), params)
    first, second = np.exp(np.array(log_p[0, -2])), np.exp(np.array(log_p[:, -1]))
    return first[:, None] * second


def two_token_counts(chunks_fn, runs: int, vocab: int) -> np.ndarray:
    counts = Counter(tuple(sum(chunks_fn(), [])) for _ in range(runs))
    table = np.zeros((vocab, vocab))
    for (a, b), c in counts.items():
        table[a, b] = c
    return table


@pytest.mark.parametrize("params,width,length,draft_tokens,gpu_mode", [
    (SamplingParams(1.0), 2, 3, None, False),
    (SamplingParams(0.7, top_k=6, top_p=0.9), 3, 2, None, False),
    (SamplingParams(1.0), 2, 3, [0, 1, 3, 4, 6], False),  # reduced draft vocabulary: q = 0 elsewhere
    (SamplingParams(1.0), 2, 3, None, True),  # fixed shapes: the compiled step, its random state threaded
])
def test_decode_loop_samples_the_target(params, width, length, draft_tokens, gpu_mode):
    vocab, prompt, runs = 8, [1, 2, 3], 1200
    model = tiny_model(0, vocab=vocab)
    drafter = tiny_drafter(model, 2)
    if draft_tokens:
        drafter.restrict_vocab(mx.array(draft_tokens))
    mx.random.seed(0)
    exact = exact_two_tokens(model, prompt, params)
    accepted = Counter()

    def redrafter():
        stats = Stats()
        yield from generate_redrafter(model, drafter, prompt, max_tokens=2, beam=BeamShape(width, length), stats=stats, sampling=params, policy=cpu_policy(gpu_mode))
        accepted.update(stats.accepted_histogram)

    rd = two_token_counts(redrafter, runs, vocab)
    ar = two_token_counts(lambda: generate_ar(model, prompt, max_tokens=2, sampling=params), runs, vocab)
    assert chi2_goodness_of_fit(rd, exact) > 1e-3
    assert chi2_goodness_of_fit(ar, exact) > 1e-3
    assert chi2_two_sample(rd, ar) > 1e-3
    assert accepted[1] > runs / 10  # the second token often came from a draft
    if params.top_k:
        assert (exact == 0).any()  # top-k / top-p did cut the support


def test_greedy_path_unchanged_by_params_default():
    """temp 0 keeps beam search + greedy acceptance: identical to greedy AR."""
    model = tiny_model(3, vocab=12)
    drafter = tiny_drafter(model, 4)
    ar = sum(generate_ar(model, [4, 5], max_tokens=20), [])
    assert sum(generate_redrafter(model, drafter, [4, 5], max_tokens=20, beam=BeamShape(3, 4), sampling=SamplingParams(0.0)), []) == ar
