"""Per-phase time of a ReDrafter step against an AR token, for one prompt. On the H100 it
measured what decided leaving rejected tree entries in place on GPUs (16x4: accept 5.1 ->
0.8 ms per step) and the cache's growth step (16x4: verify 11.79 -> 8.30 ms; docs/perf.md).

  python -m experiments.profile_phases [--model NAME|DIR --drafter DIR] [--beam 1x3] [--max-tokens 128]

Runs both twice and reports the second run (the first compiles kernels). Profiling
(Stats(profile=True)) syncs the device after each phase (tree: packing the beams on the
host; step: verify, accept and next draft; commit), so ReDrafter's tok/s here is below its
unprofiled speed."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import load, parser
from redrafter_mlx.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.load import load_tokenizer
from redrafter_mlx.stats import Stats
from redrafter_mlx.text import encode_prompt

PROMPT = "Write a short story about a robot who learns to paint."


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(), help="WxL (default 1x3)")
    args_parser.add_argument("--max-tokens", type=int, default=128)
    args = args_parser.parse_args()
    model_dir, model, drafter = load(args)
    tokenizer = load_tokenizer(model_dir)
    prompt, eos = encode_prompt(tokenizer, PROMPT), set(tokenizer.eos_token_ids)
    for _ in range(2):
        ar, redrafter = Stats(), Stats(profile=True)
        sum(generate_ar(model, prompt, max_tokens=args.max_tokens, eos_ids=eos, stats=ar), [])
        sum(generate_redrafter(model, drafter, prompt, max_tokens=args.max_tokens, beam=args.beam, eos_ids=eos,
                               stats=redrafter), [])
    per_step = {phase: round(seconds / redrafter.steps * 1e3, 2) for phase, seconds in redrafter.phase_time.items()}
    print(f"AR: {ar.generation_tps:.1f} tok/s, {1e3 / ar.generation_tps:.2f} ms per token")
    print(f"ReDrafter {args.beam} (profiled): {redrafter.generation_tps:.1f} tok/s, "
          f"{redrafter.tokens_per_step:.2f} tokens/step, ms per step: {per_step}")


if __name__ == "__main__":
    main()
