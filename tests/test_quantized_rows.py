"""The few-row 4-bit kernel (CUDA only) against dequantized weights multiplied in float32."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from redrafter_mlx.model.quantized_rows import RowsQuantizedLinear, fits, quantized_rows_matmul, supported, use_rows_kernel

cuda = pytest.mark.skipif(not mx.cuda.is_available(), reason="a CUDA kernel")


def quantized(features: int, inputs: int, group_size: int, dtype):
    weight = mx.random.normal((features, inputs)) * inputs ** -0.5
    w, scales, biases = mx.quantize(weight, group_size=group_size, bits=4)
    return w, scales.astype(dtype), biases.astype(dtype)


@cuda
@pytest.mark.parametrize("rows", [2, 5, 8, 13, 37, 40, 64, 69, 76, 128])
@pytest.mark.parametrize("features, inputs, group_size", [(16, 64, 64), (2048, 1536, 64), (1536, 8960, 64),
                                                          (256, 576, 32), (512, 1024, 128)])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_matches_the_dequantized_product(rows, features, inputs, group_size, dtype):
    mx.random.seed(rows + features)
    w, scales, biases = quantized(features, inputs, group_size, dtype)
    x = mx.random.normal((rows, inputs)).astype(dtype)
    dense = mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32), group_size=group_size, bits=4)
    want = np.array(x.astype(mx.float32) @ dense.T)
    got = np.array(quantized_rows_matmul(x, w, scales, biases, group_size).astype(mx.float32))
    # the weights are rounded to dtype before the product: float16 ~5e-4, bfloat16 ~4e-3 relative
    tolerance = 2e-2 if dtype == mx.bfloat16 else 3e-3
    assert got.shape == (rows, features)
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max(), np.abs(got - want).max()


@cuda
def test_layers_switch_kernels_by_row_count():
    """use_rows_kernel turns 4-bit layers only (same arrays); 2..128 rows run the kernel, one
    row and longer inputs MLX's own, all equal to the plain layer."""
    mx.random.seed(0)
    net = nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 32, bias=False), nn.Linear(32, 16))
    nn.quantize(net, group_size=32, bits=4, class_predicate=lambda path, _: path != "layers.2")
    net.set_dtype(mx.float16)
    weights = [net.layers[i].weight for i in range(2)]
    inputs = {rows: mx.random.normal((rows, 128)).astype(mx.float16) for rows in (1, 3, 64, 65, 128, 129)}
    before = {rows: np.array(net(x).astype(mx.float32)) for rows, x in inputs.items()}
    assert use_rows_kernel(net) == 2
    assert [type(layer) for layer in net.layers] == [RowsQuantizedLinear, RowsQuantizedLinear, nn.Linear]
    assert all(layer.weight is weight for layer, weight in zip(net.layers, weights))
    for rows, x in inputs.items():
        after = np.array(net(x).astype(mx.float32))
        assert np.abs(after - before[rows]).max() <= 3e-3 * np.abs(before[rows]).max(), rows


def test_eligibility():
    layer = nn.QuantizedLinear(128, 64, group_size=64, bits=4)
    layer.set_dtype(mx.float16)
    tree = mx.zeros((37, 128), mx.float16)
    assert fits(tree, layer) and supported(tree, layer) == mx.cuda.is_available()  # elsewhere MLX's kernels
    assert fits(mx.zeros((64, 128), mx.float16), layer) and fits(mx.zeros((128, 128), mx.float16), layer)
    assert not fits(mx.zeros((1, 128), mx.float16), layer)  # AR: MLX's one-row kernel
    assert not fits(mx.zeros((129, 128), mx.float16), layer)  # longer prefill chunks: MLX's tiles
    assert not fits(mx.zeros((37, 128), mx.float32), layer)  # the kernel's operands are 16-bit
    assert not fits(mx.zeros((37, 64), mx.float16), layer)  # not the layer's input size
    layer.biases = layer.biases.astype(mx.float32)
    assert not fits(tree, layer)  # biases in another dtype than the activations
    for features, inputs, group, bits in ((64, 128, 64, 8), (24, 128, 64, 4), (64, 96, 32, 4)):
        other = nn.QuantizedLinear(inputs, features, group_size=group, bits=bits)
        other.set_dtype(mx.float16)
        assert not fits(mx.zeros((37, inputs), mx.float16), other), (features, inputs, group, bits)
