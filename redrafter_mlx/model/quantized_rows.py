"""A 4-bit product over a few rows that reads each weight once, on CUDA (tree verification).

MLX's CUDA kernels for 4-bit products read the weights again for every row below 8 rows
and in 16-row tiles above: verifying a 37-token tree costs several times a one-token
product (H100, 2026-12-06: a 1,536 x 1,536 layer over 37 rows ~31 us on the device against
the float16 product's ~16; docs/perf.md). The float16 form that replaced it costs the host
more per product (cuBLAS) and doubles the weights in memory. This kernel keeps the 4-bit
weights and runs the product on tensor cores: each warp dequantizes 16 output features x 64
inputs of the weights straight into mma operands and multiplies them with every row at
once, so the weights are read once whatever the row count (up to MAX_ROWS).

Layout (MLX affine quantization): w (N, K / 8) uint32, eight 4-bit values per word, the
first in the lowest bits; scales, biases (N, K / group) with value = scale * q + bias.

How the mma (m16n8k16, f32 accumulate) is fed: the weights are its A operand (16 features
x 16 inputs) and the rows its B operand (16 inputs x 8 rows), so D = W x^T holds 16 features
of 8 rows. Inside each block of 64 inputs, lane t of a quad owns inputs 16t .. 16t + 15 (two
words per feature) and feeds four of them to each of four mma steps: the inputs are summed
in another order than 0..63, the same order for weights and rows, which leaves the sum
unchanged (up to rounding). Each lane loads its 16 inputs of every row before the mma steps
(registers), up to 64 rows at a time: from 65 to MAX_ROWS rows (wide trees: the coder's 16x5,
SmolLM2's 24x4) in two passes over the same weights, each pass dequantizing the weights'
operands again (on an H100 a third faster than loading each row's inputs at every mma step:
docs/perf.md)."""

from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn

MAX_ROWS = 128  # rows per product (16 mma tiles of 8 rows)
FEATURES_PER_BLOCK = 16  # a block's warps share 16 output features and split their inputs (split-K)
BLOCKS_PER_WARP = 4  # ... each warp summing about this many blocks of 64 inputs: enough warps in flight
MAX_WARPS = 16
SHARED_BYTES = 40 * 1024  # the warps' partial sums, added up at the end


def warps_per_block(inputs: int, rows: int) -> int:
    """Warps splitting one block's inputs: about BLOCKS_PER_WARP blocks of 64 inputs each, at
    most MAX_WARPS and as many as their partial sums (TILES x 4 x 32 floats each) fit."""
    tiles = -(-rows // 8)
    return max(1, min(MAX_WARPS, inputs // 64 // BLOCKS_PER_WARP, SHARED_BYTES // (tiles * 4 * 32 * 4)))


HEADER = """
#include <cuda_fp16.h>
#include <cuda_bf16.h>

__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline void store(__half* to, float v) { *to = __float2half(v); }
__device__ inline void store(__nv_bfloat16* to, float v) { *to = __float2bfloat16(v); }

template <bool BF16>
__device__ inline uint32_t pack_pair(float lo, float hi) {
  if constexpr (BF16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

template <bool BF16>
__device__ inline void mma_16x8x16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <bool BF16>
__device__ inline void weight_operand(uint32_t* a, const uint2* words, const float* scale, const float* bias,
                                      int step) {
  // mma inputs 4 step .. 4 step + 3 of this lane's 16 (its fragment: feature (+8 h), inputs 2t, 2t+1, 2t+8, 2t+9)
  for (int h = 0; h < 2; ++h) {
    const uint32_t word = (step < 2 ? words[h].x : words[h].y) >> (16 * (step % 2));
    float v[4];
    for (int j = 0; j < 4; ++j) {
      v[j] = scale[h] * static_cast<float>((word >> (4 * j)) & 15u) + bias[h];
    }
    a[h] = pack_pair<BF16>(v[0], v[1]);
    a[h + 2] = pack_pair<BF16>(v[2], v[3]);
  }
}
"""

SOURCE = """
  constexpr int TILES = (M + 7) / 8;      // mma tiles of 8 rows
  constexpr int PASS = TILES < 8 ? TILES : 8;  // tiles per pass: 64 rows' inputs fit registers
  constexpr int WORDS = K / 8;            // packed words per feature
  constexpr int BLOCKS = K / 64;          // blocks of 64 inputs
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int quad = lane / 4, t = lane % 4;  // mma fragment coordinates
  const int feature = blockIdx.x * 16 + quad;  // this lane's features: feature and feature + 8

  float acc[TILES][4];
  for (int i = 0; i < TILES; ++i) {
    acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  }
  for (int block = warp; block < BLOCKS; block += SPLIT) {
    const int first = block * 64 + 16 * t;  // this lane's 16 inputs
    uint2 words[2];
    float scale[2], bias[2];
    for (int h = 0; h < 2; ++h) {
      const int f = feature + 8 * h;
      words[h] = *reinterpret_cast<const uint2*>(w + f * WORDS + first / 8);
      scale[h] = to_float(scales[f * (K / G) + first / G]);
      bias[h] = to_float(biases[f * (K / G) + first / G]);
    }
    for (int base = 0; base < TILES; base += PASS) {  // passes of up to 64 rows, each preloaded into registers
      uint4 rows[PASS][2];  // this lane's 16 inputs of rows 8 (base + i) + quad
      for (int i = 0; i < PASS; ++i) {
        const int row = 8 * (base + i) + quad;
        if (base + i < TILES && row < M) {
          const uint4* from = reinterpret_cast<const uint4*>(x + row * K + first);
          rows[i][0] = from[0];
          rows[i][1] = from[1];
        } else {
          rows[i][0] = rows[i][1] = make_uint4(0, 0, 0, 0);
        }
      }
      for (int step = 0; step < 4; ++step) {  // inputs first + 4 step .. + 3
        uint32_t a[4];
        weight_operand<BF16>(a, words, scale, bias, step);
        for (int i = 0; i < PASS && base + i < TILES; ++i) {
          const uint4& r = rows[i][step / 2];
          mma_16x8x16<BF16>(acc[base + i], a, step % 2 ? r.z : r.x, step % 2 ? r.w : r.y);
        }
      }
    }
  }

  __shared__ float partial[SPLIT][TILES * 4][32];
  for (int i = 0; i < TILES; ++i) {
    for (int c = 0; c < 4; ++c) {
      partial[warp][4 * i + c][lane] = acc[i][c];
    }
  }
  __syncthreads();
  for (int slot = warp; slot < TILES * 4; slot += SPLIT) {  // each warp sums and writes some of the slots
    float sum = 0.0f;
    for (int s = 0; s < SPLIT; ++s) {
      sum += partial[s][slot][lane];
    }
    const int i = slot / 4, c = slot % 4;
    const int row = 8 * i + 2 * t + (c % 2), f = feature + 8 * (c / 2);
    if (row < M) {
      store(y + row * N + f, sum);
    }
  }
"""


@lru_cache(maxsize=None)
def _kernel():
    return mx.fast.cuda_kernel(name="quantized_rows", input_names=["x", "w", "scales", "biases"],
                               output_names=["y"], source=SOURCE, header=HEADER)


def supported(x: mx.array, layer: nn.QuantizedLinear) -> bool:
    """Whether quantized_rows_matmul runs layer(x) (else MLX's quantized product does)."""
    return _cuda() and fits(x, layer)


def fits(x: mx.array, layer: nn.QuantizedLinear) -> bool:
    """Whether the kernel takes layer(x): 4-bit affine weights whose inputs and outputs fit its
    tiles, 2..MAX_ROWS rows of 16-bit activations in the dtype of the layer's scales and biases."""
    rows = x.size // x.shape[-1]
    if not 2 <= rows <= MAX_ROWS:  # first: one-row AR steps (uncompiled on GPUs) read nothing more
        return False
    features, inputs = layer.weight.shape[0], layer.weight.shape[1] * 32 // layer.bits
    return (four_bit_affine(layer) and x.shape[-1] == inputs and inputs % 64 == 0
            and features % FEATURES_PER_BLOCK == 0 and layer.group_size in (32, 64, 128)
            and x.dtype in (mx.float16, mx.bfloat16) and layer.scales.dtype == x.dtype
            and layer.biases.dtype == x.dtype)


def four_bit_affine(layer: nn.QuantizedLinear) -> bool:
    """Whether a quantized layer's weights are in the kernel's format."""
    return layer.bits == 4 and layer.mode == "affine"


@lru_cache(maxsize=None)
def _cuda() -> bool:
    return mx.cuda.is_available()


def quantized_rows_matmul(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int) -> mx.array:
    """x (M, K) float16 or bfloat16, 2 <= M <= MAX_ROWS; w (N, K / 8) uint32 4-bit, scales and
    biases (N, K / group_size) in x's dtype -> x @ dequantize(w).T (M, N) in x's dtype,
    accumulated in float32."""
    rows, inputs = x.shape
    features = w.shape[0]
    warps = warps_per_block(inputs, rows)
    return _kernel()(
        inputs=[x, w, scales, biases],
        template=[("BF16", x.dtype == mx.bfloat16), ("M", rows), ("K", inputs), ("N", features),
                  ("G", group_size), ("SPLIT", warps)],
        grid=(32 * warps * features // FEATURES_PER_BLOCK, 1, 1),
        threadgroup=(32 * warps, 1, 1),
        output_shapes=[(rows, features)],
        output_dtypes=[x.dtype],
    )[0]


class RowsQuantizedLinear(nn.QuantizedLinear):
    """A 4-bit Linear whose products over 2..MAX_ROWS rows (trees, short prefill chunks) run
    quantized_rows_matmul on CUDA; one row (AR) and longer inputs keep MLX's kernels."""

    def __call__(self, x: mx.array) -> mx.array:
        """x (..., in) -> (..., out)."""
        if not supported(x, self):
            return super().__call__(x)
        y = quantized_rows_matmul(x.reshape(-1, x.shape[-1]), self.weight, self.scales, self.biases, self.group_size)
        y = y.reshape(*x.shape[:-1], -1)
        return y + self.bias if "bias" in self else y


def use_rows_kernel(module: nn.Module) -> int:
    """Gives every 4-bit affine nn.QuantizedLinear of module the few-row kernel (the same
    weights: nothing is copied); returns how many layers it changed. Quantized embeddings
    (tied heads) keep MLX's kernels."""
    layers = [layer for layer in module.modules() if type(layer) is nn.QuantizedLinear and four_bit_affine(layer)]
    for layer in layers:
        layer.__class__ = RowsQuantizedLinear  # adds no state: only the product differs
    return len(layers)
