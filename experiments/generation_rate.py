"""Self-distillation's generation rate (`train data`): greedy answers decoded `--rows` at a
time with rows refilled as answers end (training/batch_generate.py `answer_stream`), against
fixed batches of `--rows` prompts that each run until their longest answer ends (the schedule
`train data` had before refills, here through `answer_stream` one batch at a time: its host
reads every few steps and its prefill in parts, as the refilled schedule has them). Prints answer tokens, seconds and tokens per second of each,
and whether the two gave the same answers. Prompts longer than --max-prompt-tokens are left out,
as `train data` leaves them out.

  python -m experiments.generation_rate [--model NAME|DIR] [--prompts mtbench] [--num-prompts 64] \\
      [--rows 16] [--max-tokens 128] [--max-prompt-tokens 256] [--rounds 2]

Rounds alternate which schedule goes first; the first round also compiles kernels on GPUs."""

import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import add_prompt_flags, chat_prompts, load, parser
from redrafter_mlx.training.batch_generate import answer_stream


def refilled(model, prompts, rows, max_new, eos_ids, width) -> dict:
    return dict(answer_stream(model, enumerate(prompts), rows=rows, max_new=max_new, eos_ids=eos_ids, width=width))


def fixed_batches(model, prompts, rows, max_new, eos_ids, width) -> dict:
    answers = {}
    for first in range(0, len(prompts), rows):
        batch = enumerate(prompts[first:first + rows], start=first)
        answers.update(answer_stream(model, batch, rows=min(rows, len(prompts) - first), max_new=max_new,
                                     eos_ids=eos_ids, width=width))
    return answers


def main():
    args_parser = parser(__doc__, drafter=False)
    add_prompt_flags(args_parser, 64)
    args_parser.add_argument("--rows", type=int, default=16, help="sequences decoded at once")
    args_parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per answer at most")
    args_parser.add_argument("--max-prompt-tokens", type=int, default=256)
    args_parser.add_argument("--rounds", type=int, default=2)
    args = args_parser.parse_args()
    engine = load(args, drafter=False)
    prompts = [p for p in chat_prompts(engine, args.prompts, args.num_prompts) if len(p) <= args.max_prompt_tokens]
    print(f"{len(prompts)} prompts of at most {args.max_prompt_tokens} tokens, {args.rows} rows at once", flush=True)
    width = max(map(len, prompts))
    schedules = {"refilled rows": refilled, "fixed batches": fixed_batches}
    for round_number in range(1, args.rounds + 1):
        names = list(schedules) if round_number % 2 else list(reversed(schedules))
        answers = {}
        for name in names:
            start = time.perf_counter()
            answers[name] = schedules[name](engine.model, prompts, args.rows, args.max_tokens, engine.eos_ids, width)
            seconds = time.perf_counter() - start
            tokens = sum(map(len, answers[name].values()))
            print(f"round {round_number} {name}: {tokens} answer tokens in {seconds:.2f} s, "
                  f"{tokens / seconds:.1f} tokens/s", flush=True)
        same = answers[names[0]] == answers[names[1]]
        print(f"round {round_number}: the same answers: {'yes' if same else 'no'}", flush=True)


if __name__ == "__main__":
    main()
