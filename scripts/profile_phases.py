"""Per-phase time of ReDrafter decoding against AR, for one prompt (device runs, docs/perf.md).

  python scripts/profile_phases.py MODEL DRAFTER WxL

Runs both twice and reports the second run (the first compiles kernels). Profiling syncs
the device after each phase, so ReDrafter's tok/s here is below its unprofiled speed."""

import sys

from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

PROMPT = "Write a short story about a robot who learns to paint."


def main(model_dir, drafter_dir, shape):
    model = load_model(model_dir)
    drafter = load_drafter(drafter_dir, model)
    width, length = map(int, shape.split("x"))
    tokenizer = load_tokenizer(model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    for _ in range(2):
        ar, redrafter = Stats(), Stats(profile=True)
        sum(generate_ar(model, prompt, 128, stats=ar), [])
        sum(generate_redrafter(model, drafter, prompt, 128, width, length, stats=redrafter), [])
    per_step = {phase: round(seconds / redrafter.steps * 1e3, 2) for phase, seconds in redrafter.phase_time.items()}
    print(f"AR: {ar.generation_tps:.1f} tok/s, {1e3 / ar.generation_tps:.2f} ms per token")
    print(f"ReDrafter {shape} (profiled): {redrafter.generation_tps:.1f} tok/s, "
          f"{redrafter.tokens_per_step:.2f} tokens/step, ms per step: {per_step}")


if __name__ == "__main__":
    main(*sys.argv[1:])
