"""The few-rows Linear computes exactly what nn.Linear does, on both of its paths."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from redrafter_mlx.linear import FEW_ROWS, Linear, fused
from tiny import tiny_model


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(1,), (1, 3), (2, FEW_ROWS), (FEW_ROWS + 1,), (2, 3, 5)])
def test_linear_matches_float64(leading, bias):
    mx.random.seed(0)
    layer = Linear(24, 40, bias=bias)
    x = mx.random.normal((*leading, 24))
    expected = np.asarray(x, np.float64) @ np.asarray(layer.weight, np.float64).T
    if bias:
        expected = expected + np.asarray(layer.bias, np.float64)
    out = layer(x)
    assert out.shape == (*leading, 40)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_linear_quantizes_like_nn_linear():
    model = nn.Sequential(Linear(64, 32))
    nn.quantize(model, group_size=32, bits=4)
    assert isinstance(model.layers[0], nn.QuantizedLinear)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("leading", [(1,), (3,), (1, 3), (2, 7), (4, 4), (17,)])
def test_head_over_few_rows_matches_float64(leading, tied):
    """The target's vocab head pads 2-15 rows on CPUs; the logits stay those of each row."""
    model = tiny_model(1, vocab=50, tie_word_embeddings=tied)
    weight = model.model.embed_tokens.weight if tied else model.lm_head.weight
    hidden = mx.random.normal((*leading, weight.shape[1]), key=mx.random.key(2))
    expected = np.asarray(hidden, np.float64) @ np.asarray(weight, np.float64).T
    out = model.logits(hidden)
    assert out.shape == (*leading, 50) and out.dtype == mx.float32
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [None, 4, 8])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_fused_layer_outputs_the_layers_side_by_side(bits, rows):
    mx.random.seed(3)
    layers = [Linear(64, 48), Linear(64, 16), Linear(64, 16)]
    if bits:
        layers = [nn.QuantizedLinear.from_linear(layer, 32, bits) for layer in layers]
    x = mx.random.normal((1, rows, 64))
    expected = mx.concatenate([layer(x) for layer in layers], axis=-1)
    joined = fused(layers)
    assert type(joined) is type(layers[0]) and joined.weight.shape[0] == layers[0].weight.shape[0] + 32
    np.testing.assert_allclose(np.asarray(joined(x)), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_layers_that_differ_are_not_fused():
    dense = Linear(64, 16)
    assert fused([dense, Linear(64, 16, bias=False)]) is None
    assert fused([dense, nn.QuantizedLinear.from_linear(Linear(64, 16), 32, 4)]) is None
    four, eight = (nn.QuantizedLinear.from_linear(Linear(64, 16), 32, bits) for bits in (4, 8))
    assert fused([four, eight]) is None
