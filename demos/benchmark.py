"""Benchmark: ReDrafter vs auto-regressive (ours and mlx-lm's) over a prompt set, greedy.

  python -m demos.benchmark --model DIR --drafter DIR --prompts question.jsonl \
      --shapes 1x4,2x4,2x5,4x5 --max-tokens 128 --mlx-lm --out results.json

Times are end-to-end per prompt (prefill + decode), after one warm-up prompt; each
ReDrafter output is checked against our AR output and mismatches are counted.
"""

import argparse
import json
import platform
import sys
import time
from collections import Counter

import mlx.core as mx

from redrafter_mlx.data import mtbench_prompts
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.load import DTYPES, load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats


def timed(generator):
    start = time.perf_counter()
    tokens = sum(generator, [])
    return tokens, time.perf_counter() - start


def mlx_lm_ar(model_dir, dtype):
    """mlx-lm's own greedy AR on the same directory: returns run(prompt, max_tokens, eos)."""
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model, _ = load(str(model_dir))
    if dtype is not None:
        model.set_dtype(dtype)
    mx.eval(model.parameters())

    def run(prompt, max_tokens, eos):
        """Yields one-token lists, like our decode loops."""
        for token, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens):
            yield [int(token)]
            if int(token) in eos:
                return
    return run


def parse_shapes(text):
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m demos.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--drafter", required=True)
    p.add_argument("--prompts", required=True, help="MT-Bench question.jsonl")
    p.add_argument("--num-prompts", type=int, default=80)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--shapes", default="1x4,2x4,2x5,4x5", help="beam WIDTHxLENGTH list")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--mlx-lm", action="store_true", help="also time mlx-lm's AR")
    p.add_argument("--out", help="write results JSON here")
    args = p.parse_args(argv)

    dtype = DTYPES[args.dtype] if args.dtype else None
    model = load_model(args.model, dtype)
    drafter = load_drafter(args.drafter, model, dtype)
    tokenizer = load_tokenizer(args.model, model.config.eos_ids)
    eos = set(tokenizer.eos_token_ids)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in mtbench_prompts(args.prompts)[:args.num_prompts]]
    shapes = parse_shapes(args.shapes)
    runners = {"ar": lambda p, stats: timed(generate_ar(model, p, args.max_tokens, eos_ids=eos, stats=stats))}
    if args.mlx_lm:
        lm = mlx_lm_ar(args.model, dtype)
        runners["mlx_lm_ar"] = lambda p, stats: timed(lm(p, args.max_tokens, eos))
    for w, l in shapes:
        runners[f"redrafter_{w}x{l}"] = lambda p, stats, w=w, l=l: timed(
            generate_redrafter(model, drafter, p, args.max_tokens, w, l, eos, stats))
    for run in runners.values():  # warm-up
        run(prompts[0], Stats())
    totals = {name: {"tokens": 0, "seconds": 0.0, "mismatches": 0, "steps": 0, "histogram": Counter()}
              for name in runners}
    for prompt in prompts:
        reference = None
        for name, run in runners.items():
            stats = Stats()
            tokens, seconds = run(prompt, stats)
            reference = tokens if name == "ar" else reference
            total = totals[name]
            total["tokens"] += len(tokens)
            total["seconds"] += seconds
            total["mismatches"] += int(tokens != reference)
            total["steps"] += stats.steps
            total["histogram"].update(stats.accepted_histogram)
    ar_tps = totals["ar"]["tokens"] / totals["ar"]["seconds"]
    results = {"device": str(mx.default_device()), "platform": platform.platform(), "mlx": mx.__version__,
               "model": args.model, "dtype": args.dtype or "as stored", "prompts": len(prompts),
               "max_tokens": args.max_tokens, "runs": {}}
    for name, t in totals.items():
        row = {"tokens_per_s": round(t["tokens"] / t["seconds"], 2),
               "speedup_vs_ar": round(t["tokens"] / t["seconds"] / ar_tps, 3),
               "outputs_differing_from_ar": t["mismatches"]}
        if name.startswith("redrafter_"):
            draft_length = int(name.split("x")[-1]) - 1
            summary = Stats(steps=t["steps"], accepted_histogram=t["histogram"], draft_length=draft_length)
            row.update(tokens_per_step=round(summary.tokens_per_step, 3), acceptance=round(summary.acceptance, 3),
                       accepted_histogram=dict(sorted(t["histogram"].items())))
        results["runs"][name] = row
        print(name, json.dumps(row), file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
