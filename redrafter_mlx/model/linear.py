"""Linear products that stay fast for a few rows on CPUs (the kernels DecodePolicy.cpu_kernels
selects when a model is loaded: `use_cpu_kernels`).

OpenBLAS runs x @ W.T single-threaded when x has only a few rows: on the 2-core test
machine a 576 x 1,536 layer takes 0.45 ms for 4 rows against 0.28 ms for 1, which makes a
tree verification cost much more than an auto-regressive step. The same product computed
as (W @ x.T).T is split over the cores for up to 3 rows; from 4 rows on it is slower than
the plain product for the larger layers (a 30-layer forward of 4 tokens 102 -> 78 ms with
the plain product from 4 rows, 5 tokens 119 -> 82, 8 tokens 117 -> 90, 3 tokens 57 either
way; docs/perf.md). Large layers stream their weights faster in the plain product even
for one row (Qwen2.5-Coder-1.5B, float32, one row: 8,960 x 1,536 2.99 ms plain, 3.99 flipped;
1,536 x 1,536 0.33 vs 0.27): FEW_ROWS_MAX_WEIGHTS. GPUs, and inputs of more rows, keep the
plain product. A vocab-sized head is another case: neither form spreads it, but padding
2-15 rows to 16 does (576 x 49,152: 13.0-13.9 ms for 3 rows, 11.7-12.3 padded).
"""

import copy

import mlx.core as mx
import mlx.nn as nn

FEW_ROWS = 3  # up to here (W @ x.T).T is faster
FEW_ROWS_MAX_WEIGHTS = 8_000_000  # ... for layers up to this size: larger ones stream their weights faster plainly
HEAD_ROWS = 16  # vocab heads over 2-15 rows are padded to this many on CPUs


def use_cpu_kernels(module: nn.Module, on: bool):
    """Selects the CPU kernels (on) or the plain ones in every layer of `module` that has both
    (those with a `cpu_kernels` class attribute); a Linear larger than FEW_ROWS_MAX_WEIGHTS
    keeps the plain product."""
    for layer in module.modules():
        if hasattr(type(layer), "cpu_kernels"):
            layer.cpu_kernels = on and not (isinstance(layer, Linear) and layer.weight.size > FEW_ROWS_MAX_WEIGHTS)


class Linear(nn.Linear):
    cpu_kernels = False  # up to FEW_ROWS rows as (W @ x.T).T

    def __call__(self, x: mx.array) -> mx.array:
        """x (..., in) -> (..., out)."""
        rows = x.size // x.shape[-1]
        if not self.cpu_kernels or rows > FEW_ROWS:
            return super().__call__(x)
        y = (self.weight @ x.reshape(rows, -1).T).T.reshape(*x.shape[:-1], -1)
        return y + self.bias if "bias" in self else y


def padded_head(head, x: mx.array, pad: bool) -> mx.array:
    """head(x) for a vocab projection `head` of x (..., in); with pad (CPU kernels) 2-15 rows
    go through it padded to HEAD_ROWS."""
    rows = x.size // x.shape[-1]
    if not pad or not 1 < rows < HEAD_ROWS:
        return head(x)
    padded = mx.pad(x.reshape(rows, -1), [(0, HEAD_ROWS - rows), (0, 0)])
    return head(padded)[:rows].reshape(*x.shape[:-1], -1)


def fused(layers: list):
    """One layer whose output is `layers`' outputs side by side, for layers reading the same
    input: one larger product instead of several (fewer kernels per step, which is what a GPU
    step costs; docs/perf.md). None where the layers differ in kind, bias or
    quantization."""
    kinds = {(type(layer), "bias" in layer, getattr(layer, "group_size", None), getattr(layer, "bits", None),
              getattr(layer, "mode", None)) for layer in layers}
    if len(kinds) != 1:
        return None
    joined = copy.copy(layers[0])
    for name in ("weight", "scales", "biases", "bias"):
        if name in joined:
            joined[name] = mx.concatenate([layer[name] for layer in layers])
    return joined
