"""nn.Linear that stays fast for a few rows on CPUs.

OpenBLAS runs x @ W.T single-threaded when x has only a few rows: on the 2-core test
machine a 576 x 1,536 layer takes 0.45 ms for 4 rows against 0.28 ms for 1, which makes a
tree verification cost much more than an auto-regressive step. The same product computed
as (W @ x.T).T is split over the cores: 0.28 ms for 4 rows (docs/perf.md, session 6).
GPUs, and inputs of many rows (prefill, training), keep the plain product.
"""

import mlx.core as mx
import mlx.nn as nn

from .device import on_gpu

FEW_ROWS = 8  # up to here (W @ x.T).T is faster; at 16 rows both cost the same


class Linear(nn.Linear):
    def __call__(self, x: mx.array) -> mx.array:
        """x (..., in) -> (..., out)."""
        rows = x.size // x.shape[-1]
        if on_gpu() or rows > FEW_ROWS:
            return super().__call__(x)
        y = (self.weight @ x.reshape(rows, -1).T).T.reshape(*x.shape[:-1], -1)
        return y + self.bias if "bias" in self else y
