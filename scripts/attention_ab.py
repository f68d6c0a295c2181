"""A/B of llm.attention (grouped on CPUs for a few tokens) against the fused op everywhere
(docs/perf.md, session 10).

  python scripts/attention_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

Two copies of the model, each traced (compiled steps) with its own attention; AR and
ReDrafter at each shape interleaved per prompt, two passes (ab_harness)."""

import sys

from ab_harness import compare_models
from redrafter_mlx import llm
from redrafter_mlx.load import load_drafter, load_model

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs

GROUPED = llm.attention
MODE = ["grouped"]  # which attention the model being run (and traced) uses


def select(kind: str):
    """Makes the next generation (and any tracing it does) use `kind`'s attention."""
    MODE[0] = kind


def switched_attention(q, k, v, scale, mask):
    if MODE[0] == "grouped":
        return GROUPED(q, k, v, scale, mask)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


llm.attention = switched_attention


def main(model_dir, drafter_dir, shapes, prompts_path, num_prompts="8", max_tokens="40"):
    models = {"grouped": load_model(model_dir), "fused-op": load_model(model_dir)}
    drafter = load_drafter(drafter_dir, models["grouped"])
    compare_models(models, drafter, model_dir, shapes, prompts_path, int(num_prompts), int(max_tokens),
                   before=select)


if __name__ == "__main__":
    main(*sys.argv[1:])
