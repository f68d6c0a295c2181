"""Batched generation for drafter data (`train data`, training/batch_generate.py) with fixed
shapes (attention reads the whole allocated cache at every step, as GPUs decode) against the
keys in use (its default), side by side in one process: tokens per second, and how many
answers agree. On an H100 (Qwen2.5-Coder-1.5B dequantized to float16, 1,024 chat prompts,
greedy, 256 new tokens, 2026-12-07) fixed shapes generated 10,797 tokens/s and the keys in
use 12,536; 918 of the 1,024 answers were identical (float16 attention over other key
counts differs in its last bits; docs/training.md).

  python -m experiments.batch_generation [--model NAME|DIR] [--prompts FILE.jsonl] [--num-prompts 1024]
                                         [--max-new-tokens 256] [--max-prompt-tokens 256]

The batch: the first --num-prompts prompts of at most --max-prompt-tokens tokens (chat template).
"""

import itertools
import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from demos.prompts import load_prompts
from experiments.common import add_prompt_flags, load, parser
from redrafter_mlx.training.batch_generate import generate_batch


def main():
    args_parser = parser(__doc__, drafter=False)
    add_prompt_flags(args_parser, 1024)
    args_parser.add_argument("--max-new-tokens", type=int, default=256)
    args_parser.add_argument("--max-prompt-tokens", type=int, default=256)
    args = args_parser.parse_args()
    engine = load(args, drafter=False)
    encoded = (engine.encode(text) for text in load_prompts(args.prompts))
    prompts = list(itertools.islice((p for p in encoded if len(p) <= args.max_prompt_tokens), args.num_prompts))
    eos = set(engine.eos_ids)
    for fixed_shapes in (True, False):  # warm-up
        generate_batch(engine.model, prompts, 2, eos, args.max_prompt_tokens, fixed_shapes=fixed_shapes)
    answers = {}
    for label, fixed_shapes in (("fixed shapes", True), ("keys in use", False)):
        start = time.perf_counter()
        answers[label] = generate_batch(engine.model, prompts, args.max_new_tokens, eos, args.max_prompt_tokens,
                                        fixed_shapes=fixed_shapes)
        seconds, tokens = time.perf_counter() - start, sum(map(len, answers[label]))
        print(f"{label}: {len(prompts)} prompts, {tokens} answer tokens in {seconds:.2f} s = "
              f"{tokens / seconds:.1f} tokens/s", flush=True)
    same = sum(a == b for a, b in zip(*answers.values()))
    print(f"identical answers: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
