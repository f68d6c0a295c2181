"""Where a ReDrafter step's time goes, unprofiled, over several prompts (docs/perf.md).

  python scripts/step_timing.py MODEL DRAFTER WxL PROMPTS.jsonl [NUM_PROMPTS]

Runs AR and ReDrafter on the first prompts twice (pass 2 shows what pass 1 spent compiling
kernels for new shapes) and splits ReDrafter's time per step into waiting in `mx.eval`
(device work the host could not overlap) and the rest (host: graph building, tree packing).
Nothing is synchronised beyond what the decode loops do themselves."""

import sys
import time

from demos.prompts import load_prompts
from redrafter_mlx import decode
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs

MAX_TOKENS = 64


class TimedEval:
    """A stand-in for mlx.core inside decode.py whose eval appends its wall time to .durations."""

    def __init__(self):
        self.durations = []

    def __getattr__(self, name):
        return getattr(mx, name)

    def eval(self, *arrays):
        start = time.perf_counter()
        mx.eval(*arrays)
        self.durations.append(time.perf_counter() - start)


def run_pass(model, drafter, prompts, width, length, eos):
    totals = {"ar": [0.0, 0, 0.0], "redrafter": [0.0, 0, 0.0]}  # generation s, tokens, prompt s
    steps, eval_seconds = 0, 0.0
    for prompt in prompts:
        for name in totals:
            stats = Stats()
            if name == "ar":
                tokens = sum(decode.generate_ar(model, prompt, MAX_TOKENS, eos_ids=eos, stats=stats), [])
            else:
                decode.mx.durations = []
                tokens = sum(decode.generate_redrafter(model, drafter, prompt, MAX_TOKENS, width, length, eos,
                                                       stats), [])
                # the first two evals are the prompt's: prefill (one chunk below 512 tokens), first draft
                steps, eval_seconds = steps + stats.steps, eval_seconds + sum(decode.mx.durations[2:])
            total = totals[name]
            total[0] += stats.generation_time
            total[1] += len(tokens)
            total[2] += stats.prompt_time
    return totals, steps, eval_seconds


def main(model_dir, drafter_dir, shape, prompts_path, num_prompts="10"):
    model = load_model(model_dir)
    drafter = load_drafter(drafter_dir, model)
    tokenizer = load_tokenizer(model_dir)
    width, length = map(int, shape.split("x"))
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p in load_prompts(prompts_path)[:int(num_prompts)]]
    eos = set(tokenizer.eos_token_ids)
    decode.mx = TimedEval()
    for number in (1, 2):
        totals, steps, eval_seconds = run_pass(model, drafter, prompts, width, length, eos)
        (ar_s, ar_n, ar_p), (rd_s, rd_n, rd_p) = totals["ar"], totals["redrafter"]
        print(f"pass {number}: AR {ar_n / ar_s:.1f} tok/s ({ar_s / ar_n * 1e3:.2f} ms/token, prefill "
              f"{ar_p / len(prompts) * 1e3:.1f} ms/prompt); ReDrafter {shape} {rd_n / rd_s:.1f} tok/s, "
              f"{rd_n / steps:.2f} tokens/step, {rd_s / steps * 1e3:.2f} ms/step of which waiting in eval "
              f"{eval_seconds / steps * 1e3:.2f} (prefill + first draft {rd_p / len(prompts) * 1e3:.1f} ms/prompt)",
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
