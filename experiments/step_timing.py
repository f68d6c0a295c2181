"""ReDrafter's time per step against AR's per token over several prompts, unprofiled, in
two passes: pass 1 pays kernel compilation for shapes not seen before, pass 2 shows the
steady state. On the H100 (16x4, 8 MT-Bench prompts) pass 2 measured 11.70 ms per step
against 5.0-6.0 ms per AR token: a step cost ~2.3 AR steps for 2.2 tokens, bound by the
host's per-operation cost, which led to compiled steps; pass 1 spent ~0.2-0.3 s per step
compiling (docs/perf.md). On another H100 (2026-12-07, 16x5, 8 HumanEval prompts, warmed up)
pass 2 ran 5.72 ms per step for 3.7 tokens against 3.02 ms per AR token (1.95x AR after the
first step) where demos.benchmark's wall time gave 1.15x on 80 prompts of the same set: ~150
ms per prompt outside a second pass's steps (docs/bench/h100_qwen15_decode_loop_2026-12-07.txt).

  python -m experiments.step_timing [--model NAME|DIR --drafter DIR] [--beam 16x4] [--warm-up]
                                    [--prompts mtbench] [--num-prompts 10] [--max-tokens 64]

Each request decodes through Engine.generate (resident steps on GPUs, packed on CPUs), with
no warm-up (pass 1 is the cold start) or, with --warm-up, after Engine.warm_up at each
prompt-length bucket, as demos.benchmark warms up (pass 1 is then timed as it times). Each
line also gives each method's wall time per prompt as the benchmark counts it, and what of it
lies outside the steps (before the first: prefill, first draft; after the last). Nothing is synchronised beyond what the decode loops
do themselves; experiments.profile_phases splits a packed step into its phases (with a sync
after each) and experiments.step_parts times a step's parts."""

import itertools
import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import add_prompt_flags, chat_prompts, load, parser
from redrafter_mlx import BeamShape, DecodeOptions, Stats


def run_pass(engine, prompts, options: dict, max_tokens: int):
    """({method: Stats summed over the prompts (times, tokens, steps)}, {method: wall seconds})."""
    totals, wall = {name: Stats() for name in options}, dict.fromkeys(options, 0.0)
    for prompt in prompts:
        for name, total in totals.items():
            stats = Stats()
            start = time.perf_counter()
            for _ in engine.generate(prompt, max_tokens=max_tokens, options=options[name], stats=stats):
                pass
            wall[name] += time.perf_counter() - start
            total.generation_time += stats.generation_time
            total.generated_tokens += stats.generated_tokens
            total.steps += stats.steps
            total.prompt_time += stats.prompt_time
    return totals, wall


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(16, 4), help="WxL (default 16x4)")
    add_prompt_flags(args_parser, 10)
    args_parser.add_argument("--max-tokens", type=int, default=64)
    args_parser.add_argument("--warm-up", action="store_true", help="warm each method up at each prompt-length "
                             "bucket first, as demos.benchmark does")
    args = args_parser.parse_args()
    engine = load(args)
    prompts = chat_prompts(engine, args.prompts, args.num_prompts)
    options = {"ar": DecodeOptions(mode="ar"), "redrafter": DecodeOptions(beam=args.beam)}
    for prompt, method in itertools.product(prompts if args.warm_up else [], options.values()):
        engine.warm_up(prompt, method)
    for number in (1, 2):
        totals, wall = run_pass(engine, prompts, options, args.max_tokens)
        ar, rd = totals["ar"], totals["redrafter"]
        outside = {name: (wall[name] - totals[name].generation_time) / len(prompts) * 1e3 for name in options}
        print(f"pass {number}: AR {ar.generation_tps:.1f} tok/s ({1e3 / ar.generation_tps:.2f} ms/token, prefill "
              f"{ar.prompt_time / len(prompts) * 1e3:.1f} ms/prompt); ReDrafter {args.beam} {rd.generation_tps:.1f} "
              f"tok/s, {rd.generated_tokens / rd.steps:.2f} tokens/step, {rd.generation_time / rd.steps * 1e3:.2f} "
              f"ms/step (prefill + first draft {rd.prompt_time / len(prompts) * 1e3:.1f} ms/prompt); wall: AR "
              f"{ar.generated_tokens / wall['ar']:.1f} tok/s ({outside['ar']:.1f} ms/prompt outside the steps), "
              f"ReDrafter {rd.generated_tokens / wall['redrafter']:.1f} tok/s ({outside['redrafter']:.1f})", flush=True)


if __name__ == "__main__":
    main()
