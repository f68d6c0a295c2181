"""The MLX model and drafter against float64 NumPy references."""

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode.beam_search import BeamShape, beam_search
from redrafter_mlx.decode import prefill
from redrafter_mlx.model.llm import attention
from redrafter_mlx.model.rope import inverse_frequencies
from helpers import reference
from helpers.tiny import tiny_drafter, tiny_model

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


@pytest.mark.parametrize("kind,overrides", [
    ("llama", {}),
    ("qwen2", {}),
    ("llama", {"rope_traditional": True}),
    ("llama", {"rope_scaling": LLAMA3_SCALING, "tie_word_embeddings": False}),
    ("mistral", {"rope_scaling": {"type": "linear", "factor": 2.0}, "head_dim": 16, "num_key_value_heads": 1}),
])
@pytest.mark.parametrize("fuse", [False, True])
def test_llm_prefill_then_steps_match_reference(kind, overrides, fuse):
    model = tiny_model(0, kind, vocab=40, **overrides)
    tokens = np.random.default_rng(0).integers(0, 40, size=24).tolist()
    hidden_ref, logits_ref = reference.llm_forward(model, tokens)  # reads the Hugging Face names
    if fuse:
        model.fuse_projections()
        assert "qkv_proj" in model.model.layers[0].self_attn and "gate_up_proj" in model.model.layers[0].mlp
    cache = model.new_cache()
    prefill(model, cache, tokens[:16])
    ours = [np.array(model(mx.array(tokens[:16])[None], mx.arange(16)[None], model.new_cache())[0])]
    for t in range(16, 24):  # single-token steps through the cache
        hidden = model(mx.array([tokens[t:t + 1]]), mx.array([[t]]), cache)
        cache.advance(1)
        ours.append(np.array(hidden[0]))
    ours = np.concatenate(ours)
    np.testing.assert_allclose(ours, hidden_ref, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(np.array(model.logits(mx.array(ours))), logits_ref, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 4), (6, 1)])
@pytest.mark.parametrize("length", [1, 3, 4, 6])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_reference(heads, kv_heads, length, masked):
    """Up to FEW_QUERIES new tokens take the grouped CPU path, more the fused op; both must
    equal float64 attention with each query head reading its KV head (heads // kv_heads per group)."""
    rng = np.random.default_rng(heads * 100 + length)
    q, k, v = (rng.standard_normal(shape) for shape in [(2, heads, length, 8), (2, kv_heads, 20, 8),
                                                        (2, kv_heads, 20, 8)])
    mask = rng.random((2, 1, length, 20)) < 0.6 if masked else None
    if masked:
        mask[..., 0] = True  # every query sees a key
    ours = attention(*(mx.array(a, dtype=mx.float32) for a in (q, k, v)), 0.3,
                     None if mask is None else mx.array(mask))
    group = heads // kv_heads
    scores = np.einsum("bhtd,bhsd->bhts", q, np.repeat(k, group, axis=1)) * 0.3
    if masked:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(reference.log_softmax(scores))
    expected = np.einsum("bhts,bhsd->bhtd", weights, np.repeat(v, group, axis=1))
    np.testing.assert_allclose(np.array(ours), expected, atol=1e-5, rtol=1e-4)


def test_llama3_scaling_all_three_regimes():
    """head_dim 8, theta 1e4: wavelengths 6.3 (kept), 63 (blended), 628 and 6283 (divided by 8)."""
    config = tiny_model(0, "llama", rope_scaling=LLAMA3_SCALING).config
    base = 1.0 / 1e4 ** (np.arange(0, 8, 2) / 8)
    ours = np.array(inverse_frequencies(config))
    np.testing.assert_allclose(ours, reference.inverse_frequencies(config), rtol=1e-6)
    assert ours[0] == np.float32(base[0]) and base[1] / 8 < ours[1] < base[1]
    np.testing.assert_allclose(ours[2:], base[2:] / 8, rtol=1e-6)


@pytest.mark.parametrize("taps", [(0,), (0, 2), (3,)])
def test_tapped_features_match_reference(taps):
    """Features: the final hidden state, then each tapped layer's output RMS-normalised; the
    logits still come from the final hidden state; prefill returns the last position's."""
    model = tiny_model(2, "llama", vocab=40, num_hidden_layers=4)
    tokens = np.random.default_rng(1).integers(0, 40, size=20).tolist()
    features_ref, logits_ref = reference.llm_forward(model, tokens, taps)
    ours = model(mx.array(tokens)[None], mx.arange(20)[None], model.new_cache(), taps=taps)[0]
    assert ours.shape == (20, 32 * (1 + len(taps)))
    np.testing.assert_allclose(np.array(ours), features_ref, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(np.array(model.logits(ours)), logits_ref, atol=2e-3, rtol=1e-3)
    last = prefill(model, model.new_cache(), tokens, taps=taps)
    np.testing.assert_allclose(np.array(last[0]), features_ref[-1], atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("rnn,exit_dim,context_layers", [(True, None, ()), (False, None, ()), (True, 48, ()),
                                                         (True, None, (0,)), (True, 40, (0, 1))])
def test_drafter_and_beam_search_match_reference(rnn, exit_dim, context_layers):
    model = tiny_model(1, "llama", vocab=30)
    drafter = tiny_drafter(model, 2, rnn=rnn, exit_dim=exit_dim, scale=0.5, context_layers=context_layers)
    assert ("input_proj" in drafter) == (exit_dim is not None or bool(context_layers))
    context = mx.random.normal((1, 32 * (1 + len(context_layers))), key=mx.random.key(3))
    embeddings = np.array(model.model.embed_tokens.weight).astype(np.float64)
    for width, length in [(1, 4), (3, 5), (8, 3)]:
        draft = beam_search(drafter, model.embed, context, mx.array([7]), BeamShape(width, length))
        beams, scores, history = reference.beam_search(
            drafter, embeddings, np.array(context[0]).astype(np.float64), 7, width, length)
        np.testing.assert_array_equal(np.array(draft.beams[0]), beams)
        np.testing.assert_allclose(np.array(draft.scores[0]), scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.array(draft.log_probs[0]), history, rtol=5e-5, atol=1e-4)
