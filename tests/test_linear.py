"""The few-rows Linear computes exactly what nn.Linear does, on both of its paths."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from redrafter_mlx.model.linear import FEW_ROWS, FEW_ROWS_MAX_WEIGHTS, Linear, fused, use_cpu_kernels
from redrafter_mlx.model.load import load_model
from redrafter_mlx.policy import CPU, GPU
from helpers.tiny import tiny_model, write_model_dir


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(1,), (1, 3), (2, FEW_ROWS), (FEW_ROWS + 1,), (2, 3, 5)])
def test_linear_matches_float64(leading, bias, cpu_kernels):
    mx.random.seed(0)
    layer = Linear(24, 40, bias=bias)
    use_cpu_kernels(layer, cpu_kernels)
    assert layer.cpu_kernels == cpu_kernels
    x = mx.random.normal((*leading, 24))
    expected = np.asarray(x, np.float64) @ np.asarray(layer.weight, np.float64).T
    if bias:
        expected = expected + np.asarray(layer.bias, np.float64)
    out = layer(x)
    assert out.shape == (*leading, 40)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_cpu_kernels_only_for_layers_up_to_the_size_limit(tmp_path):
    """Large layers keep the plain product on CPUs; CPU models keep q/k/v and gate/up apart,
    GPU models join them (DecodePolicy.fuse_projections)."""
    small, large = Linear(64, 32), Linear(8, FEW_ROWS_MAX_WEIGHTS // 8 + 1)
    use_cpu_kernels(nn.Sequential(small, large), True)
    assert small.cpu_kernels and not large.cpu_kernels
    path = write_model_dir(tmp_path / "model", tiny_model(0, "llama", vocab=16))
    cpu, gpu = load_model(path, policy=CPU), load_model(path, policy=GPU)
    assert "q_proj" in cpu.model.layers[0].self_attn and "gate_proj" in cpu.model.layers[0].mlp
    assert cpu.model.layers[0].self_attn.q_proj.cpu_kernels and cpu.model.layers[0].self_attn.cpu_kernels
    assert "qkv_proj" in gpu.model.layers[0].self_attn and "gate_up_proj" in gpu.model.layers[0].mlp
    assert not gpu.model.layers[0].self_attn.qkv_proj.cpu_kernels and not gpu.cpu_kernels


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
