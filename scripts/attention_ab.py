"""A/B of llm.attention (grouped on CPUs for a few tokens) against the fused op everywhere
(docs/perf.md, session 10).

  python scripts/attention_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

Two copies of the model, each traced (compiled steps) with its own attention; AR and
ReDrafter at each shape interleaved per prompt, two passes (ab_harness)."""

import sys

from ab_harness import chat_prompts, interleaved_passes
from redrafter_mlx import decode, llm
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs

GROUPED = llm.attention
MODE = ["grouped"]  # which attention the model being run (and traced) uses


def switched_attention(q, k, v, scale, mask):
    if MODE[0] == "grouped":
        return GROUPED(q, k, v, scale, mask)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


llm.attention = switched_attention


def main(model_dir, drafter_dir, shapes, prompts_path, num_prompts="8", max_tokens="40"):
    models = {"grouped": load_model(model_dir), "fused-op": load_model(model_dir)}
    drafter = load_drafter(drafter_dir, models["grouped"])
    tokenizer = load_tokenizer(model_dir)
    prompts = chat_prompts(tokenizer, prompts_path, int(num_prompts))
    eos = set(tokenizer.eos_token_ids)
    labels = [f"{m} {kind}" for m in ["ar"] + shapes.split(",") for kind in models]

    def run(label, prompt):
        """One generation with the model of `label`'s kind; returns (tokens, seconds, steps)."""
        method, kind = label.split()
        MODE[0] = kind
        stats = Stats()
        if method == "ar":
            chunks = decode.generate_ar(models[kind], prompt, int(max_tokens), eos_ids=eos, stats=stats)
        else:
            width, length = map(int, method.split("x"))
            chunks = decode.generate_redrafter(models[kind], drafter, prompt, int(max_tokens), width, length,
                                               eos, stats)
        return sum(chunks, []), stats.generation_time, stats.steps
    interleaved_passes(labels, prompts, run)


if __name__ == "__main__":
    main(*sys.argv[1:])
