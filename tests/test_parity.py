"""Greedy ReDrafter must reproduce greedy auto-regressive output token for token (float32)."""

from collections import Counter
from dataclasses import replace

import mlx.core as mx
import pytest

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import redrafter
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.model.kv_cache import ResidentCache
from redrafter_mlx.model.llm import Model
from redrafter_mlx.policy import CPU, GPU
from redrafter_mlx.decode.stats import Stats
from helpers.tiny import cpu_policy, tiny_drafter, tiny_model


def run_both(model, drafter, prompt, max_tokens, width, length, eos=(), stats=None):
    ar = sum(generate_ar(model, prompt, max_tokens=max_tokens, eos_ids=eos), [])
    rd = sum(generate_redrafter(model, drafter, prompt, max_tokens=max_tokens, beam=BeamShape(width, length), eos_ids=eos, stats=stats), [])
    return ar, rd


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width,length", [(1, 2), (1, 5), (2, 3), (3, 4), (4, 6), (8, 2), (8, 5), (5, 6)])
def test_greedy_parity(kind, seed, width, length):
    vocab = (8, 64)[seed % 2]
    model = tiny_model(seed, kind, vocab=vocab)
    drafter = tiny_drafter(model, seed + 100, rnn=seed < 2, exit_dim=None if seed % 2 else 40)
    prompt = [(seed * 7 + i) % vocab for i in range(1 + 9 * seed)]
    ar, rd = run_both(model, drafter, prompt, 30, width, length)
    assert len(ar) == 30
    assert rd == ar


@pytest.mark.parametrize("context_layers", [(0,), (0, 1)])
@pytest.mark.parametrize("width,length,fixed_shapes", [(1, 4, None), (3, 4, None), (3, 4, True)])
def test_greedy_parity_with_context_layers(context_layers, width, length, fixed_shapes):
    """A drafter that also reads earlier layers' outputs (Model.forward's taps) drafts from
    features, and the LLM's logits still come from its last hidden state."""
    model = tiny_model(7, "llama", vocab=8)
    drafter = tiny_drafter(model, 8, context_layers=context_layers)
    prompt = [(5 * i + 2) % 8 for i in range(11)]
    ar = sum(generate_ar(model, prompt, max_tokens=30), [])
    stats = Stats()
    rd = sum(generate_redrafter(model, drafter, prompt, max_tokens=30, beam=BeamShape(width, length), stats=stats, policy=cpu_policy(fixed_shapes)), [])
    assert rd == ar and stats.steps < 30


@pytest.mark.parametrize("prompt_length", [1, 2, 17, 600])
@pytest.mark.parametrize("width,fixed_shapes", [(4, None), (4, True), (1, None), (1, False)])
def test_parity_prompt_lengths(prompt_length, width, fixed_shapes):
    """600 tokens crosses the prefill chunk and the cache growth steps; on CPUs fixed shapes
    (the compiled step) are the default at width 1 only, so both modes are run at both widths."""
    model = tiny_model(5, "llama", vocab=12)
    drafter = tiny_drafter(model, 6)
    prompt = [(3 * i + 1) % 12 for i in range(prompt_length)]
    ar = sum(generate_ar(model, prompt, max_tokens=40), [])
    assert sum(generate_redrafter(model, drafter, prompt, max_tokens=40, beam=BeamShape(width, 4), policy=cpu_policy(fixed_shapes)), []) == ar


@pytest.mark.parametrize("seed", range(6))
def test_parity_eos_mid_beam(seed):
    """Stop at the first EOS even when it is accepted in the middle of a beam."""
    model = tiny_model(seed, "llama", vocab=12)
    drafter = tiny_drafter(model, seed + 50)
    prompt = [1, 2, 3]
    full = sum(generate_ar(model, prompt, max_tokens=30), [])
    eos = full[7]
    ar, rd = run_both(model, drafter, prompt, 30, 6, 5, eos={eos})
    assert ar == full[:full.index(eos) + 1]
    assert rd == ar


def test_max_tokens_cuts_mid_beam():
    model = tiny_model(3, "qwen2", vocab=12)
    drafter = tiny_drafter(model, 4)
    for max_tokens in (1, 2, 3, 7):
        ar, rd = run_both(model, drafter, [4, 5], max_tokens, 8, 6)
        assert rd == ar and len(rd) == max_tokens


def test_parity_setup_accepts_multi_token_runs():
    """The tiny setup used above must accept runs of several drafts, or parity proves little."""
    hist = Counter()
    for seed in range(4):
        model = tiny_model(seed, "llama", vocab=4)
        stats = Stats()
        ar, rd = run_both(model, tiny_drafter(model, seed + 100), [1, 2], 40, 4, 4, stats=stats)
        assert rd == ar
        hist.update(stats.accepted_histogram)
    assert sum(hist[n] for n in range(2, 4)) >= 15, hist
    assert hist[0] > 0, hist


@pytest.mark.parametrize("compiled,fixed_shapes", [(False, False), (False, True), (True, True)])
def test_ar_equals_full_recompute(compiled, fixed_shapes):
    """The pipelined, cached AR loop (plain: exact-length attention at T = 1 in both cache
    modes; compiled: over the whole capacity) against an oracle that reruns the whole
    sequence without a cache at every step."""
    model = tiny_model(7, "llama", vocab=16)
    prompt = [3, 1, 4, 1, 5]
    expected = list(prompt)
    for _ in range(20):
        positions = mx.arange(len(expected))[None]
        hidden = model(mx.array(expected)[None], positions, model.new_cache())
        expected.append(mx.argmax(model.logits(hidden[0, -1])).item())
    policy = replace(CPU, compile_ar=compiled, fixed_shapes=fixed_shapes)
    assert sum(generate_ar(model, prompt, max_tokens=20, policy=policy), []) == expected[len(prompt):]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("step", [None, 16])
def test_parity_in_gpu_mode(seed, step, monkeypatch):
    """GPU mode (resident steps: the tree packed, judged and committed on the device, steps
    queued ahead, attention over the whole cache capacity, rejected entries left in place)
    must not change the output; with 16-slot chunks the cache is compacted and grown many
    times."""
    if step:
        monkeypatch.setattr(redrafter, "CACHE_STEP", step)
    model = tiny_model(seed, "qwen2", vocab=6)
    drafter = tiny_drafter(model, seed + 9)
    compactions = []
    compact = ResidentCache._compact
    monkeypatch.setattr(ResidentCache, "_compact", lambda cache, bound: compactions.append(compact(cache, bound)))
    ar = sum(generate_ar(model, [1, 2, 3], max_tokens=30, policy=GPU), [])
    rd = sum(generate_redrafter(model, drafter, [1, 2, 3], max_tokens=30, beam=BeamShape(4, 4), policy=GPU), [])
    assert rd == ar
    assert len(compactions) >= 2 or not step


def test_resident_cache_grows_only_with_the_accepted_text(monkeypatch):
    """The host bounds the sequence's length by what it has read plus one step ahead, so a
    drafter that is seldom right (a random one) never makes the GPU cache grow: 150 tokens
    after a 3-token prompt fit one 256-slot capacity (each new capacity compiles kernels)."""
    grown = []
    grow = ResidentCache._grow
    monkeypatch.setattr(ResidentCache, "_grow", lambda cache, needed: grown.append(needed) or grow(cache, needed))
    model = tiny_model(4, "llama", vocab=24)
    drafter = tiny_drafter(model, 5)
    stats = Stats()
    rd = sum(generate_redrafter(model, drafter, [1, 2, 3], max_tokens=150, beam=BeamShape(4, 4), policy=GPU,
                                stats=stats), [])
    assert rd == sum(generate_ar(model, [1, 2, 3], max_tokens=150), [])
    assert stats.tokens_per_step < 2 and grown == []


def test_cache_grows_in_whole_steps(monkeypatch):
    """The cache grows by ~4 trees (1 + W (L - 1) tokens on GPUs) rounded up to whole
    multiples of 256 slots, so that every capacity is one that other shapes meet too (GPU
    kernels compile per capacity)."""
    steps = []
    new_cache = Model.new_cache
    monkeypatch.setattr(Model, "new_cache", lambda self, batch=1, **kw: steps.append(kw["step"]) or
                        new_cache(self, batch, **kw))
    model = tiny_model(1, "llama", vocab=80)
    drafter = tiny_drafter(model, 2)
    for width, length in [(1, 3), (17, 4), (70, 4)]:
        sum(generate_redrafter(model, drafter, [1, 2, 3], max_tokens=5, beam=BeamShape(width, length), policy=GPU, lookup=0), [])
    assert steps == [256, 256, 1024]


@pytest.mark.parametrize("on_gpu", [False, True])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("width,length,nodes", [(4, 4, 4), (6, 5, 9), (6, 3, 5), (3, 4, 40), (1, 3, 4)])
def test_parity_with_trees_of_the_best_nodes(on_gpu, seed, width, length, nodes):
    """Trees of the drafter's best nodes (WxL:N; paths of every length, ABSENT past their
    node) keep the output AR's: packed on the host (CPU) and on the device (GPU mode, where
    the cache keeps the rows it committed)."""
    model = tiny_model(seed, "qwen2", vocab=6)
    drafter = tiny_drafter(model, seed + 9)
    policy = GPU if on_gpu else CPU
    ar = sum(generate_ar(model, [1, 2, 3], max_tokens=40, policy=policy), [])
    stats = Stats()
    rd = sum(generate_redrafter(model, drafter, [1, 2, 3], max_tokens=40, beam=BeamShape(width, length, nodes),
                                policy=policy, stats=stats), [])
    assert rd == ar
    assert sum(c for n, c in stats.accepted_histogram.items() if n) >= 2  # drafts were accepted
