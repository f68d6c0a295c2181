"""ReDrafter's time per step against AR's per token over several prompts, unprofiled, in
two passes: pass 1 pays kernel compilation for shapes not seen before, pass 2 shows the
steady state. On the H100 (16x4, 8 MT-Bench prompts) pass 2 measured 11.70 ms per step
against 5.0-6.0 ms per AR token: a step cost ~2.3 AR steps for 2.2 tokens, bound by the
host's per-operation cost, which led to compiled steps; pass 1 spent ~0.2-0.3 s per step
compiling (docs/perf.md).

  python -m experiments.step_timing [--model NAME|DIR --drafter DIR] [--beam 16x4]
                                    [--prompts mtbench] [--num-prompts 10] [--max-tokens 64]

Nothing is synchronised beyond what the decode loops do themselves; experiments.profile_phases
splits a step into its phases (with a sync after each)."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import chat_prompts, load, parser
from redrafter_mlx.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.stats import Stats


def run_pass(model, drafter, prompts, args, eos):
    """{method: [generation seconds, tokens, steps, prompt seconds]} over the prompts."""
    totals = {"ar": [0.0, 0, 0, 0.0], "redrafter": [0.0, 0, 0, 0.0]}
    for prompt in prompts:
        for name, total in totals.items():
            stats = Stats()
            if name == "ar":
                chunks = generate_ar(model, prompt, max_tokens=args.max_tokens, eos_ids=eos, stats=stats)
            else:
                chunks = generate_redrafter(model, drafter, prompt, max_tokens=args.max_tokens, beam=args.beam,
                                            eos_ids=eos, stats=stats)
            tokens = sum(chunks, [])
            total[0] += stats.generation_time
            total[1] += len(tokens)
            total[2] += stats.steps
            total[3] += stats.prompt_time
    return totals


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(16, 4), help="WxL (default 16x4)")
    args_parser.add_argument("--prompts", default="mtbench", help="mtbench, humaneval or a .jsonl file")
    args_parser.add_argument("--num-prompts", type=int, default=10)
    args_parser.add_argument("--max-tokens", type=int, default=64)
    args = args_parser.parse_args()
    model_dir, model, drafter = load(args)
    prompts, eos = chat_prompts(model_dir, args.prompts, args.num_prompts)
    for number in (1, 2):
        totals = run_pass(model, drafter, prompts, args, eos)
        (ar_s, ar_n, _, ar_p), (rd_s, rd_n, rd_steps, rd_p) = totals["ar"], totals["redrafter"]
        print(f"pass {number}: AR {ar_n / ar_s:.1f} tok/s ({ar_s / ar_n * 1e3:.2f} ms/token, prefill "
              f"{ar_p / len(prompts) * 1e3:.1f} ms/prompt); ReDrafter {args.beam} {rd_n / rd_s:.1f} tok/s, "
              f"{rd_n / rd_steps:.2f} tokens/step, {rd_s / rd_steps * 1e3:.2f} ms/step "
              f"(prefill + first draft {rd_p / len(prompts) * 1e3:.1f} ms/prompt)", flush=True)


if __name__ == "__main__":
    main()
