"""A/B of fused projections (one q/k/v and one gate/up product per layer) against the
separate ones (docs/perf.md, session 9).

  python scripts/fuse_ab.py MODEL DRAFTER SHAPES PROMPTS.jsonl [NUM_PROMPTS] [MAX_TOKENS]

Both models in one process, interleaved per prompt, twice (pass 1 includes compilation):
AR and ReDrafter at each shape (e.g. 8x4,1x4), as shipped otherwise. Prints ms per step,
tokens per step and how many outputs differ from the unfused AR."""

import sys

from demos.prompts import load_prompts
from redrafter_mlx import decode
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs


def run(method, model, drafter, prompt, max_tokens, eos):
    """One generation; returns (tokens, seconds, steps)."""
    stats = Stats()
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
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p in load_prompts(prompts_path)[:int(num_prompts)]]
    eos = set(tokenizer.eos_token_ids)
    runs = [(kind, method) for method in ["ar"] + shapes.split(",") for kind in models]
    for number in (1, 2):
        totals = {key: [0, 0.0, 0, 0] for key in runs}  # tokens, seconds, steps, differing
        for prompt in prompts:
            reference = None
            for kind, method in runs:
                tokens, seconds, steps = run(method, models[kind], drafter, prompt, int(max_tokens), eos)
                reference = reference or tokens
                total = totals[kind, method]
                total[0], total[1], total[2] = total[0] + len(tokens), total[1] + seconds, total[2] + steps
                total[3] += tokens != reference
        for (kind, method), (tokens, seconds, steps, differing) in totals.items():
            print(f"pass {number} {method:5s} {kind:8s} {tokens / seconds:7.1f} tok/s {seconds / steps * 1e3:7.2f} "
                  f"ms/step {tokens / steps:5.2f} tokens/step, outputs != AR: {differing}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
