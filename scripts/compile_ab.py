"""A/B of the compiled decode steps against the same loops uncompiled (docs/perf.md, session 8).

  python scripts/compile_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

SHAPES: beam shapes such as 16x4,1x4. On the first prompts (ab_harness: interleaved per
prompt, two passes): AR plain and compiled, and ReDrafter at each shape as shipped (fixed
shapes and compiled on GPUs and at width 1), with the same fixed shapes but uncompiled, and
with fixed shapes off (CPUs' wider trees); outputs are compared with plain AR's."""

import sys

from ab_harness import chat_prompts, interleaved_passes
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
    prompts = chat_prompts(tokenizer, prompts_path, int(num_prompts))
    eos = set(tokenizer.eos_token_ids)
    methods = ["ar-plain", "ar-compiled"] + [f"redrafter{mode} {shape}" for shape in shapes.split(",")
                                             for mode in ("", "-uncompiled", "-unfixed")]
    interleaved_passes(methods, prompts,
                       lambda method, prompt: run(method, model, drafter, prompt, int(max_tokens), eos))


if __name__ == "__main__":
    main(*sys.argv[1:])
