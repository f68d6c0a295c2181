"""Where a prompt's fixed cost goes: prefill time for prompt lengths seen for the first time
and again. On the H100 a new length cost ~68 ms (kernel compilation), a repeated one 8-9 ms,
which decided prompt chunks padded to multiples of 64 tokens on GPUs
(docs/bench/h100_prefill_timing_2026-11-24.txt, docs/perf.md).

  python -m experiments.prefill_timing [--model NAME|DIR] [--lengths 57,83,120,151,101] [--repeats 3]

Each length is prefilled (decode.prefill: random tokens, a fresh cache, evaluated) --repeats
times, then all of them again in a second round; prints milliseconds per call. First padded
as the engine's DecodePolicy pads prompts (prefill_bucket: 64 on GPUs, 1 on CPUs), then
unpadded. A new length costing much more than a repeated one means per-shape work (kernel
compilation, attention plans) that every new prompt pays."""

import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import load, parser
from redrafter_mlx.decode import prefill


def timed_prefill(model, length: int, bucket: int) -> float:
    prompt = mx.random.randint(0, model.config.vocab_size, (length,)).tolist()
    cache = model.new_cache()
    start = time.perf_counter()
    mx.eval(prefill(model, cache, prompt, bucket=bucket))
    return (time.perf_counter() - start) * 1e3


def main():
    args_parser = parser(__doc__, drafter=False)
    args_parser.add_argument("--lengths", default="57,83,120,151,101", help="prompt lengths, comma separated")
    args_parser.add_argument("--repeats", type=int, default=3, help="calls per length and round")
    args = args_parser.parse_args()
    engine = load(args, drafter=False)
    model, policy_bucket = engine.model, engine.policy.prefill_bucket
    timed_prefill(model, 8, policy_bucket)
    for bucket, name in ((policy_bucket, "padded"), (1, "unpadded")):
        for round_number in (1, 2):
            for length in map(int, args.lengths.split(",")):
                times = [timed_prefill(model, length, bucket) for _ in range(args.repeats)]
                print(f"{name} round {round_number} length {length:4d}: " + " ".join(f"{t:7.1f}" for t in times)
                      + " ms", flush=True)


if __name__ == "__main__":
    main()
