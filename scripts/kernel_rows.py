"""Times attention and a 4-bit product alone at T query rows over K keys (the default
model's shapes: 9/3 heads of 64, 576 -> 1,536), to look for a cost step past 64 rows
(docs/perf.md, session 11).

  python scripts/kernel_rows.py"""

import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import mlx.nn as nn


def timed(fn, repeats: int = 50) -> float:
    for _ in range(5):
        mx.eval(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    product = nn.QuantizedLinear(576, 1536, bias=False, group_size=32, bits=4)
    for keys in (512, 520, 544):
        for rows in (48, 64, 65, 68, 80, 128):
            q = mx.random.normal((1, 9, rows, 64)).astype(mx.float16)
            k = mx.random.normal((1, 3, keys, 64)).astype(mx.float16)
            mask = mx.random.uniform(shape=(1, 1, rows, keys)) > 0.3
            attention = timed(lambda: mx.fast.scaled_dot_product_attention(q, k, k, scale=0.125, mask=mask))
            x = mx.random.normal((1, rows, 576)).astype(mx.float16)
            print(f"keys {keys} T {rows}: sdpa {attention:.3f} ms, q4 576x1536 {timed(lambda: product(x)):.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
