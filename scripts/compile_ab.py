"""A/B of the compiled decode steps against the same loops uncompiled (docs/perf.md, session 8).

  python scripts/compile_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

SHAPES: beam shapes such as 16x4,1x4. On the first prompts, interleaved per prompt, twice
(pass 1 includes tracing and kernel compilation): AR plain and compiled, and ReDrafter at
each shape as shipped (fixed shapes and compiled on GPUs and at width 1), with the same
fixed shapes but uncompiled, and with fixed shapes off (CPUs' wider trees). Prints ms per
step, tokens per step and how many outputs differ from plain AR (float16 GPU numerics can
differ; float32 CPU outputs must not)."""

import sys

from demos.prompts import load_prompts
from redrafter_mlx import decode
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs

COMPILE_ONCE = decode.compile_once


def run(method, model, drafter, prompt, max_tokens, eos):
    """One generation; returns (tokens, seconds, steps)."""
    kind, _, shape = method.partition(" ")
    decode.compile_once = (lambda step, key: step) if kind == "redrafter-uncompiled" else COMPILE_ONCE
    stats = Stats()
    if kind.startswith("ar"):
        chunks = decode.generate_ar(model, prompt, max_tokens, eos_ids=eos, stats=stats, compiled=kind == "ar-compiled")
    else:
        width, length = map(int, shape.split("x"))
        fixed = False if kind == "redrafter-unfixed" else None
        chunks = decode.generate_redrafter(model, drafter, prompt, max_tokens, width, length, eos, stats,
                                           fixed_shapes=fixed)
    tokens = sum(chunks, [])
    decode.compile_once = COMPILE_ONCE
    return tokens, stats.generation_time, stats.steps


def main(model_dir, drafter_dir, shapes, prompts_path, num_prompts="8", max_tokens="64"):
    model = load_model(model_dir)
    drafter = load_drafter(drafter_dir, model)
    mx.eval(model.parameters(), drafter.parameters())
    tokenizer = load_tokenizer(model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p in load_prompts(prompts_path)[:int(num_prompts)]]
    eos = set(tokenizer.eos_token_ids)
    methods = ["ar-plain", "ar-compiled"] + [f"redrafter{mode} {shape}" for shape in shapes.split(",")
                                             for mode in ("", "-uncompiled", "-unfixed")]
    for number in (1, 2):
        totals = {method: [0, 0.0, 0, 0] for method in methods}  # tokens, seconds, steps, differing
        for prompt in prompts:
            reference = None
            for method in methods:
                tokens, seconds, steps = run(method, model, drafter, prompt, int(max_tokens), eos)
                reference = reference or tokens
                total = totals[method]
                total[0], total[1], total[2] = total[0] + len(tokens), total[1] + seconds, total[2] + steps
                total[3] += tokens != reference
        for method, (tokens, seconds, steps, differing) in totals.items():
            print(f"pass {number} {method:28s} {tokens / seconds:7.1f} tok/s {seconds / steps * 1e3:7.2f} ms/step "
                  f"{tokens / steps:5.2f} tokens/step, outputs != AR: {differing}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
