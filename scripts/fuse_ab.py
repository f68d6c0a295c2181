"""A/B of fused projections (one q/k/v and one gate/up product per layer) against the
separate ones (docs/perf.md, session 9).

  python scripts/fuse_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

Both models in one process (ab_harness: interleaved per prompt, two passes): AR and
ReDrafter at each shape (e.g. 8x4,1x4), as shipped otherwise; outputs are compared with the
fused AR's."""

import sys

from ab_harness import chat_prompts, interleaved_passes
from redrafter_mlx import decode
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs


def run(label, models, drafter, prompt, max_tokens, eos):
    """One generation for a label "METHOD KIND" (e.g. "8x4 separate"); returns (tokens,
    seconds, steps)."""
    method, kind = label.split()
    model, stats = models[kind], Stats()
    if method == "ar":
        chunks = decode.generate_ar(model, prompt, max_tokens, eos_ids=eos, stats=stats)
    else:
        width, length = map(int, method.split("x"))
        chunks = decode.generate_redrafter(model, drafter, prompt, max_tokens, width, length, eos, stats)
    return sum(chunks, []), stats.generation_time, stats.steps


def main(model_dir, drafter_dir, shapes, prompts_path, num_prompts="8", max_tokens="64"):
    models = {"fused": load_model(model_dir), "separate": load_model(model_dir, fuse=False)}
    drafter = load_drafter(drafter_dir, models["fused"])
    mx.eval(drafter.parameters())
    tokenizer = load_tokenizer(model_dir)
    prompts = chat_prompts(tokenizer, prompts_path, int(num_prompts))
    eos = set(tokenizer.eos_token_ids)
    labels = [f"{method} {kind}" for method in ["ar"] + shapes.split(",") for kind in models]
    interleaved_passes(labels, prompts,
                       lambda label, prompt: run(label, models, drafter, prompt, int(max_tokens), eos))


if __name__ == "__main__":
    main(*sys.argv[1:])
