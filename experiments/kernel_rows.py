"""Times attention and a 4-bit product alone at T query rows over K keys, at a model's shapes
(its attention heads and KV heads, head size, and hidden -> intermediate product; the default
model's: 9/3 heads of 64, 576 -> 1,536), to look for a cost step past 64 rows. On the H100
nothing stepped up (0.11-0.23 ms at 48-128 rows, docs/bench/h100_tree_rows_2026-11-24.txt):
the slowdown of trees over 64 tokens was the cache's growth step (docs/perf.md).

  python -m experiments.kernel_rows [--model NAME|DIR] [--rows 48,64,65,68,80,128]
                                    [--keys 512,520,544] [--repeats 50]

Only the model's config is read (ModelFiles.open); the inputs are random float16 arrays."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import mlx.nn as nn
from experiments.common import parser, timed
from redrafter_mlx import ModelFiles


def main():
    args_parser = parser(__doc__, drafter=False)
    args_parser.add_argument("--rows", default="48,64,65,68,80,128", help="query rows, comma separated")
    args_parser.add_argument("--keys", default="512,520,544", help="keys attended to, comma separated")
    args_parser.add_argument("--repeats", type=int, default=50)
    args = args_parser.parse_args()
    config = ModelFiles.open(args.model, need_drafter=False).config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    dim, hidden = config.hidden_size, config.intermediate_size
    product = nn.QuantizedLinear(dim, hidden, bias=False, group_size=32, bits=4)
    print(f"{heads}/{kv_heads} heads of {head_dim}, product {dim} x {hidden}")
    for keys in map(int, args.keys.split(",")):
        for rows in map(int, args.rows.split(",")):
            q = mx.random.normal((1, heads, rows, head_dim)).astype(mx.float16)
            k = mx.random.normal((1, kv_heads, keys, head_dim)).astype(mx.float16)
            mask = mx.random.uniform(shape=(1, 1, rows, keys)) > 0.3
            attention = timed(lambda: mx.fast.scaled_dot_product_attention(q, k, k, scale=head_dim ** -0.5,
                                                                            mask=mask), args.repeats)
            x = mx.random.normal((1, rows, dim)).astype(mx.float16)
            print(f"keys {keys} T {rows}: sdpa {attention:.3f} ms, "
                  f"q4 {dim}x{hidden} {timed(lambda: product(x), args.repeats):.3f} ms", flush=True)


if __name__ == "__main__":
    main()
