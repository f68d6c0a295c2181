"""Where a prompt's time goes in decoding as the engine runs it: the time to the first step
(prefill, first draft), the steps, and what is left of the prompt's wall time (the step
queued past the end, closing the generator), per method, over the same prompts twice.

  python -m experiments.decode_loop [--model NAME|DIR --drafter DIR] [--beams 16x5,16x5:59]
                                    [--prompts humaneval] [--num-prompts 8] [--max-tokens 128]

Each method is warmed up as demos.benchmark warms it (Engine.warm_up, each prompt-length
bucket), then runs every prompt (pass 1: as the benchmark times it) and every prompt again
(pass 2: shapes and kernels all seen before). On an H100 (2026-12-07) pass 2 of 8 HumanEval
prompts ran 16x5 steps at 5.72 ms against AR tokens at 3.02 ms (1.95x AR after the first
step), while demos.benchmark's wall time, prefill included, gave 1.15x on 80 prompts of the
same set: ~150 ms per prompt that the second pass did not pay (docs/perf.md); pass 1 against
pass 2 here, and the time to the first step against the steps, say where it goes."""

import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import add_prompt_flags, chat_prompts, load, parser
from redrafter_mlx import BeamShape, DecodeOptions, Stats


def one_pass(engine, prompts, options: DecodeOptions, max_tokens: int) -> dict:
    """Seconds summed over the prompts: wall, to the first step, in steps; tokens and steps."""
    total = dict(wall=0.0, first=0.0, steps_time=0.0, tokens=0, steps=0)
    for prompt in prompts:
        stats = Stats()
        start = time.perf_counter()
        for _ in engine.generate(prompt, max_tokens=max_tokens, options=options, stats=stats):
            pass
        total["wall"] += time.perf_counter() - start
        total["first"] += stats.prompt_time
        total["steps_time"] += stats.generation_time
        total["tokens"] += stats.generated_tokens
        total["steps"] += stats.steps
    return total


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beams", default="16x5", help="ReDrafter beam shapes, comma separated (AR is timed too)")
    args_parser.add_argument("--max-tokens", type=int, default=128)
    add_prompt_flags(args_parser, 8)
    args = args_parser.parse_args()
    engine = load(args)
    prompts = chat_prompts(engine, args.prompts, args.num_prompts)
    methods = {"ar": DecodeOptions(mode="ar")}
    methods.update({s: DecodeOptions(beam=BeamShape.parse(s)) for s in args.beams.split(",")})
    for name, options in methods.items():
        for prompt in prompts:
            engine.warm_up(prompt, options)
        for number in (1, 2):
            t = one_pass(engine, prompts, options, args.max_tokens)
            count = len(prompts)
            rest = t["wall"] - t["first"] - t["steps_time"]
            print(f"{name:10s} pass {number}: {t['tokens'] / t['wall']:8.2f} tok/s; per prompt "
                  f"{t['first'] / count * 1e3:7.2f} ms to the first step, {rest / count * 1e3:6.2f} ms after the "
                  f"last; {t['steps_time'] / t['steps'] * 1e3:6.2f} ms per step, "
                  f"{t['tokens'] / t['steps']:.3f} tokens per step", flush=True)


if __name__ == "__main__":
    main()
