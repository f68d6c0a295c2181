"""Where a prompt's fixed cost goes: prefill time for prompt lengths seen for the first time
and again (docs/perf.md, session 9).

  python scripts/prefill_timing.py MODEL [LENGTHS]

LENGTHS (default 57,83,120,151,101): each is prefilled (random tokens, a fresh cache,
evaluated) three times, then all of them again in a second round; prints milliseconds per
call. First with the default padding (decode.prefill: to multiples of PREFILL_BUCKET on
GPUs), then unpadded. A new length costing much more than a repeated one means per-shape
work (kernel compilation, attention plans) that every new prompt pays."""

import sys
import time

from redrafter_mlx.decode import prefill
from redrafter_mlx.load import load_model

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs


def timed_prefill(model, length: int, bucket: int = None) -> float:
    prompt = mx.random.randint(0, model.config.vocab_size, (length,)).tolist()
    cache = model.new_cache()
    start = time.perf_counter()
    mx.eval(prefill(model, cache, prompt, bucket))
    return (time.perf_counter() - start) * 1e3


def main(model_dir, lengths="57,83,120,151,101"):
    model = load_model(model_dir)
    timed_prefill(model, 8)
    for bucket, name in ((None, "padded"), (1, "unpadded")):
        for round_number in (1, 2):
            for length in map(int, lengths.split(",")):
                times = [timed_prefill(model, length, bucket) for _ in range(3)]
                print(f"{name} round {round_number} length {length:4d}: " + " ".join(f"{t:7.1f}" for t in times)
                      + " ms", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
