"""Tokens per step of each way of drawing sampled drafts (iid, rsd-c, rsd-s) at a few beam
widths, over more prompts than a timed benchmark affords (nothing is timed, so it can run on
a busy machine). At width 1 the three draw from the same distribution: their spread there is
the noise of the run.

  python -m experiments.sampled_acceptance [--model NAME|DIR --drafter DIR] [--widths 1,2]
      [--length 3] [--temp 1.0] [--top-p 1.0] [--prompts mtbench] [--skip 20] [--num-prompts 40]
      [--max-tokens 32]

Measured (docs/perf.md): SmolLM2, temperature 1.0, 40 MT-Bench prompts x 32 tokens: width 1
iid 1.603, rsd-c 1.646, rsd-s 1.626 tokens per step; width 2 1.757, 1.741, 1.711."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import add_prompt_flags, chat_prompts, load, parser
from redrafter_mlx import BeamShape, DecodeOptions, SamplingParams, Stats
from redrafter_mlx.decode.sampled_drafts import METHODS


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--widths", default="1,2")
    args_parser.add_argument("--length", type=int, default=3)
    args_parser.add_argument("--temp", type=float, default=1.0)
    args_parser.add_argument("--top-p", type=float, default=1.0)
    add_prompt_flags(args_parser, 40)
    args_parser.add_argument("--skip", type=int, default=20, help="prompts skipped first (the benchmarks' own)")
    args_parser.add_argument("--max-tokens", type=int, default=32)
    args = args_parser.parse_args()
    engine = load(args)
    prompts = chat_prompts(engine, args.prompts, args.skip + args.num_prompts)[args.skip:]
    sampling = SamplingParams(args.temp, top_p=args.top_p)
    for width in [int(w) for w in args.widths.split(",")]:
        for method in METHODS:
            steps = tokens = 0
            mx.random.seed(1)
            options = DecodeOptions(beam=BeamShape(width, args.length), sampling=sampling, sampled_drafts=method)
            for prompt in prompts:
                stats = Stats()
                for _ in engine.generate(prompt, max_tokens=args.max_tokens, options=options, stats=stats):
                    pass
                tokens, steps = tokens + stats.generated_tokens, steps + stats.steps
            print(f"{width}x{args.length} {method:6} {tokens / steps:.3f} tokens per step ({steps} steps)", flush=True)


if __name__ == "__main__":
    main()
