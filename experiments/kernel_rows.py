"""Times attention and a 4-bit product alone at T query rows over K keys (the default
model's shapes: 9/3 heads of 64, 576 -> 1,536), to look for a cost step past 64 rows.
On the H100 nothing stepped up (0.11-0.23 ms at 48-128 rows, docs/bench/h100_tree_rows_2026-11-24.txt):
the slowdown of trees over 64 tokens was the cache's growth step (docs/perf.md).

  python -m experiments.kernel_rows [--repeats N]"""

import argparse

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import mlx.nn as nn
from experiments.common import timed


def main():
    args_parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args_parser.add_argument("--repeats", type=int, default=50)
    args = args_parser.parse_args()
    product = nn.QuantizedLinear(576, 1536, bias=False, group_size=32, bits=4)
    for keys in (512, 520, 544):
        for rows in (48, 64, 65, 68, 80, 128):
            q = mx.random.normal((1, 9, rows, 64)).astype(mx.float16)
            k = mx.random.normal((1, 3, keys, 64)).astype(mx.float16)
            mask = mx.random.uniform(shape=(1, 1, rows, keys)) > 0.3
            attention = timed(lambda: mx.fast.scaled_dot_product_attention(q, k, k, scale=0.125, mask=mask),
                              args.repeats)
            x = mx.random.normal((1, rows, 576)).astype(mx.float16)
            print(f"keys {keys} T {rows}: sdpa {attention:.3f} ms, "
                  f"q4 576x1536 {timed(lambda: product(x), args.repeats):.3f} ms", flush=True)


if __name__ == "__main__":
    main()
