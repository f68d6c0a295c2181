"""A/B of fused projections (one q/k/v and one gate/up product per layer) against the
separate ones (docs/perf.md, session 9).

  python scripts/fuse_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

Both models in one process (ab_harness: interleaved per prompt, two passes): AR and
ReDrafter at each shape (e.g. 8x4,1x4), as shipped otherwise; outputs are compared with the
fused AR's."""

import sys

from ab_harness import compare_models
from redrafter_mlx.load import load_drafter, load_model

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs


def main(model_dir, drafter_dir, shapes, prompts_path, num_prompts="8", max_tokens="64"):
    models = {"fused": load_model(model_dir), "separate": load_model(model_dir, fuse=False)}
    drafter = load_drafter(drafter_dir, models["fused"])
    mx.eval(drafter.parameters())
    compare_models(models, drafter, model_dir, shapes, prompts_path, int(num_prompts), int(max_tokens))


if __name__ == "__main__":
    main(*sys.argv[1:])
