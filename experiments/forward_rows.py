"""What one forward of the target costs over T new tokens after a prompt of --context cached
tokens, relative to the first of --rows (by default one token; masked, as a tree's forward
is): the ceiling of any tree step, since a step of T tree tokens that accepts k tokens is at
most k / cost(T) times as fast as AR. The new tokens see each other causally and are never
committed, so every call sees the same cache, laid out as the engine's DecodePolicy lays it
out (on GPUs attention reads the whole capacity under a mask).

  python -m experiments.forward_rows [--model NAME|DIR] [--rows 1,2,4,8,16,32,64]
                                     [--context 256] [--repeats 10]

Measured (docs/perf.md): Qwen2.5-Coder-1.5B, 4-bit on an H200: T=4 1.64x, 16 1.85x, 32 2.64x
(one token 5.55 ms); float32 on a 2-core CPU: T=4 1.55x, 8 1.64x, 12 2.16x (one token 342 ms)."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import context_tokens, load, parser, timed
from redrafter_mlx.decode import prefill


def main():
    args_parser = parser(__doc__, drafter=False)
    args_parser.add_argument("--rows", default="1,2,4,8,16,32,64", help="numbers of new tokens, comma separated")
    args_parser.add_argument("--context", type=int, default=256, help="cached prompt tokens")
    args_parser.add_argument("--repeats", type=int, default=10)
    args = args_parser.parse_args()
    engine = load(args, drafter=False)
    model, policy = engine.model, engine.policy
    cache = model.new_cache(fixed_shapes=policy.fixed_shapes)
    prefill(model, cache, context_tokens(engine, args.context), bucket=policy.prefill_bucket)
    one = None
    for rows in [int(r) for r in args.rows.split(",")]:
        tokens = mx.full((1, rows), 200, dtype=mx.int32)
        positions = mx.arange(cache.length, cache.length + rows)[None]
        block = mx.tril(mx.ones((rows, rows), dtype=mx.bool_))
        ms = timed(lambda: model(tokens, positions, cache, block=block)[:, -1], args.repeats)
        one = one or ms
        print(f"T={rows:4d}  {ms:8.2f} ms  {ms / one:5.2f}x the first", flush=True)


if __name__ == "__main__":
    main()
