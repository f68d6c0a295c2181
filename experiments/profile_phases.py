"""Per-phase time of a ReDrafter step against an AR token, for one prompt. On the H100 it
measured what decided leaving rejected tree entries in place on GPUs (16x4: accept 5.1 ->
0.8 ms per step) and the cache's growth step (16x4: verify 11.79 -> 8.30 ms; docs/perf.md).

  python -m experiments.profile_phases [--model NAME|DIR --drafter DIR] [--beam 1x3] [--max-tokens 128]

Runs both twice through Engine.generate and reports the second run (the first compiles
kernels). Profiling (Stats(profile=True)) syncs the device after each phase of a packed
step (CPUs: tree, packing the beams on the host; step, verify, accept and next draft;
commit), so ReDrafter's tok/s here is below its unprofiled speed. On fixed-shape policies
(GPUs) a step is resident: one device function with no host phase and no sync, so only its
time per step is reported (experiments.step_parts times its parts)."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import load, parser
from redrafter_mlx import BeamShape, DecodeOptions, Stats

PROMPT = "Write a short story about a robot who learns to paint."


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(), help="WxL (default 1x3)")
    args_parser.add_argument("--max-tokens", type=int, default=128)
    args = args_parser.parse_args()
    engine = load(args)
    prompt = engine.encode(PROMPT)
    for _ in range(2):
        ar, redrafter = Stats(), Stats(profile=True)
        for options, stats in ((DecodeOptions(mode="ar"), ar), (DecodeOptions(beam=args.beam), redrafter)):
            for _ in engine.generate(prompt, max_tokens=args.max_tokens, options=options, stats=stats):
                pass
    per_step = {phase: f"{seconds / redrafter.steps * 1e3:.2f} ms" for phase, seconds in redrafter.phase_time.items()}
    print(f"AR: {ar.generation_tps:.1f} tok/s, {1e3 / ar.generation_tps:.2f} ms per token")
    print(f"ReDrafter {args.beam} (profiled): {redrafter.generation_tps:.1f} tok/s, "
          f"{redrafter.tokens_per_step:.2f} tokens/step, {redrafter.generation_time / redrafter.steps * 1e3:.2f} ms "
          f"per step; per phase: {per_step or 'none (a resident step)'}")


if __name__ == "__main__":
    main()
