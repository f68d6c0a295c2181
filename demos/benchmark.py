"""Benchmark: ReDrafter over a grid of beam shapes vs auto-regressive (ours and mlx-lm's).

  python -m demos.benchmark                       # default model + drafter, 80 MT-Bench prompts
  python -m demos.benchmark --widths 1,2,4 --lengths 2,3,4,5 --max-tokens 128 --out-dir bench
  python -m demos.benchmark --quick               # 2 prompts, 16 tokens, 2x2 grid (smoke test)

Writes results.csv, results.json (also each method's tokens and seconds per prompt, in the
order they ran), speedup_heatmap.png (speedup vs width x length) and best_configs.png (tok/s of
the best shapes and the baselines) to --out-dir. Times are
end-to-end per prompt (prefill + decode) after one warm-up prompt per method, and on GPUs
after a few untimed tokens of our methods at each new prompt-length bucket (its kernels
compile on first use: Engine.warm_up); our methods run interleaved prompt by prompt, so slow
drifts of the machine hit all of them alike. mlx-lm's methods run after them, over every
prompt in a pass of their own, so that they cannot slow ours: on an H100 (2026-12-07) runs
with mlx-lm's decoding interleaved in the same process were slow for every method, ours the
most (ReDrafter 16x5 1.25x our AR on 80 HumanEval prompts, 1.81x on 48 of them without
mlx-lm; docs/perf.md). Greedy ReDrafter outputs are compared with our AR outputs and
mismatches counted.
"""

import argparse
import csv
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable, NamedTuple

import mlx.core as mx

from redrafter_mlx import BeamShape, DecodeOptions, DecodePolicy, Engine, SamplingParams, Stats, models
from redrafter_mlx.atomic import atomic_file
from redrafter_mlx.decode import LOOKUP_MIN_MATCH, SAMPLED_DRAFTS
from redrafter_mlx.decode.lookup import MAX_MATCH
from redrafter_mlx.device import device_name
from redrafter_mlx.errors import ArgumentParser, UsageError, finite_float, int_at_least, run_cli
from redrafter_mlx.flags import dtype_of, refuse_unused
from redrafter_mlx.model.load import DTYPES
from redrafter_mlx.policy import VERIFY_FORMS
from redrafter_mlx.decode.sampled_drafts import METHODS

from .mlx_lm_runners import mlx_lm_ar, mlx_lm_speculative
from .plots import our_ar, plot_all
from .prompts import load_prompts

COLUMNS = ["method", "width", "length", "tokens", "seconds", "tokens_per_s", "speedup_vs_ar",
           "speedup_vs_fastest_ar", "speedup_vs_mlx_lm", "prefill_seconds", "decode_tokens_per_s", "tokens_per_step",
           "acceptance", "peak_memory_mb",
           "outputs_differing_from_ar", "device", "dtype", "model", "mlx", "prompts", "max_tokens", "temp", "top_p"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m demos.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}), an MLX model directory, a .gguf "
                   f"file or a Hugging Face repo id (default: {models.DEFAULT})")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped one trained for the model)")
    p.add_argument("--prompts", default="mtbench", help="mtbench, humaneval or a .jsonl file")
    p.add_argument("--num-prompts", type=int_at_least(1), default=80)
    p.add_argument("--max-tokens", type=int_at_least(1), default=128)
    p.add_argument("--widths", default="1,2,4", help="beam widths, comma separated")
    p.add_argument("--lengths", default="2,3,4,5", help="beam lengths, comma separated")
    p.add_argument("--tree-nodes", help="greedy only: trees of the drafter's N best nodes to time, comma separated, "
                   "each shape once per value, named WxL:N (0: the beams' tokens; default: 0)")
    p.add_argument("--lookup", help="min matches of the lookup beam to time, comma separated, each shape "
                   f"once per value, named _lookupN (0: no lookup beam; default: {LOOKUP_MIN_MATCH}, unnamed)")
    p.add_argument("--draft-vocab", type=int_at_least(0), help="draft only the N most frequent tokens (default: drafter's)")
    p.add_argument("--temp", type=finite_float(0), default=0.0, help="0: greedy (outputs checked against AR)")
    p.add_argument("--top-p", type=finite_float(0, 1, open_minimum=True), default=1.0)
    p.add_argument("--sampled-drafts", help=f"with --temp > 0: how drafts are drawn, comma separated among "
                   f"{', '.join(METHODS)}, each shape once per value, named _METHOD (default: {SAMPLED_DRAFTS}, "
                   "unnamed)")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--no-mlx-lm", dest="mlx_lm", action="store_false", help="skip mlx-lm's AR")
    p.add_argument("--draft-model", help="also time mlx-lm's draft-model speculative decoding with this "
                   "model, a name or an MLX directory (same tokenizer as --model, e.g. qwen2.5-coder-0.5b for "
                   "qwen2.5-coder-1.5b)")
    p.add_argument("--num-draft", type=int_at_least(1), default=5,
                   help="draft tokens for --draft-model (5: the fastest measured for the 1.5B with the 0.5B)")
    p.add_argument("--also-model", help="another form of --model (e.g. a dense float16 copy: python -m convert "
                   "model Q4DIR F16DIR --dequantize --dtype float16): our AR and every ReDrafter shape are timed on "
                   "it too, in the same run, named with the suffix _also (the ratio that counts is over the "
                   "fastest AR of either form)")
    p.add_argument("--verify-forms", help="also time our AR and every ReDrafter shape with trees verified on these "
                   f"forms of the target ({', '.join(VERIFY_FORMS)}; this device's: DecodePolicy.verify_form), comma "
                   "separated, in the same run, named with the suffix _FORM")
    p.add_argument("--quick", action="store_true", help="2 prompts, 16 tokens, widths 1,2, lengths 2,3")
    p.add_argument("--out-dir", default="bench")
    return p


def parse_ints(text: str, name: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"--{name} is empty")
    return values


def parse_methods(text: str):
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"--sampled-drafts must be a comma-separated list of {', '.join(METHODS)}, got {text!r}")
    return methods


def timed_run(generator):
    """Runs a decode generator; returns tokens, seconds, peak memory in MB."""
    mx.reset_peak_memory()
    start = time.perf_counter()
    tokens = sum(generator, [])
    seconds = time.perf_counter() - start
    return tokens, seconds, mx.get_peak_memory() / 2**20


class Runner(NamedTuple):
    run: Callable  # run(prompt, stats) -> generator of token lists
    width: int
    length: int
    warm_up: Callable = lambda prompt: None  # untimed, before a prompt: seconds spent, or None
    apart: bool = False  # timed after the interleaved methods, in a pass of its own (mlx-lm's)


def make_runners(args, engine: Engine, sampling, suffix: str = ""):
    """name -> Runner; suffix: appended to our methods' names (another form of the model),
    which then come without mlx-lm's."""
    eos = engine.eos_ids

    def runner(options: DecodeOptions, width: int = 0, length: int = 0):
        return Runner(lambda p, s: engine.generate(p, max_tokens=args.max_tokens, options=options, stats=s),
                      width, length, lambda p: engine.warm_up(p, options))

    runners = {"ar" + suffix: runner(DecodeOptions(mode="ar", sampling=sampling))}
    if args.mlx_lm and not suffix:
        lm = mlx_lm_ar(args.model, args.dtype, sampling)
        runners["mlx_lm_ar"] = Runner(lambda p, s: lm(p, args.max_tokens, eos), 0, 0, apart=True)
    if args.draft_model and not suffix:
        spec = mlx_lm_speculative(args.model, args.draft_model, args.dtype, sampling, args.num_draft)
        runners["mlx_lm_speculative"] = Runner(lambda p, s: spec(p, args.max_tokens, eos, s), 1, args.num_draft + 1,
                                               apart=True)
    for w in args.widths:
        for n in args.lengths:
            for k, method, nodes in itertools.product(args.lookup, args.sampled_drafts, args.tree_nodes):
                shape = BeamShape(w, n, nodes)
                name = (f"redrafter_{shape}" + ("" if k is None else f"_lookup{k}")
                        + ("" if method is None else f"_{method}") + suffix)
                options = DecodeOptions(beam=shape, sampling=sampling,
                                        lookup=LOOKUP_MIN_MATCH if k is None else k,
                                        sampled_drafts=method or SAMPLED_DRAFTS)
                runners[name] = runner(options, w, n)
    return runners


def measure(runners, prompts, greedy: bool, after_prompt=None):
    """Runs every method on every prompt: ours interleaved prompt by prompt, then each method
    `apart` over every prompt in turn; returns per-method totals.

    after_prompt(totals) is called after each prompt of each pass (to save partial results)."""
    totals = {name: dict(tokens=0, seconds=0.0, prefill=0.0, peak=0.0, mismatches=0, steps=0, histogram=Counter(),
                         per_prompt=[]) for name in runners}  # per_prompt: [tokens, seconds] of each prompt run
    references = [None] * len(prompts)  # our AR's tokens per prompt
    passes = [[n for n, r in runners.items() if not r.apart]] + [[n] for n, r in runners.items() if r.apart]
    for names in passes:
        for name in names:  # warm-up (and, on GPUs, kernel compilation: minutes on a fresh machine)
            runners[name].warm_up(prompts[0])
            _, seconds, _ = timed_run(runners[name].run(prompts[0], Stats()))
            print(f"warm-up {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        for i, prompt in enumerate(prompts):
            for name in names:
                references[i] = run_prompt(name, runners[name], prompt, totals[name], references[i], greedy, i)
            print(f"prompt {i + 1}/{len(prompts)} done ({', '.join(names)})", file=sys.stderr, flush=True)
            if after_prompt:
                after_prompt(totals)
    return totals


def run_prompt(name: str, runner: Runner, prompt, total: dict, reference, greedy: bool, index: int):
    """One timed run of a method on a prompt, added to its totals; returns the reference
    output (our AR's, once it ran)."""
    warm = runner.warm_up(prompt)  # a new prompt-length bucket on a GPU: its kernels compiled untimed
    if warm is not None:
        print(f"warm-up {name}, prompt {index + 1}: {warm:.1f} s", file=sys.stderr, flush=True)
    stats = Stats()
    tokens, seconds, peak = timed_run(runner.run(prompt, stats))
    reference = tokens if name == "ar" else reference
    total["per_prompt"].append([len(tokens), round(seconds, 4)])
    total["tokens"] += len(tokens)
    total["seconds"] += seconds
    total["prefill"] += stats.prompt_time  # our methods: until the first step (prefill, first draft)
    total["peak"] = max(total["peak"], peak)
    total["mismatches"] += int(greedy and tokens != reference)
    total["steps"] += stats.steps
    total["histogram"].update(stats.accepted_histogram)
    return reference


def rows_from(totals, runners, meta):
    """A row per method that has run (its prompts so far: partial results)."""
    prompts = {name: len(t["per_prompt"]) for name, t in totals.items() if t["per_prompt"]}
    rate = {name: totals[name]["tokens"] / totals[name]["seconds"] for name in prompts}
    fastest_ar = max(r for name, r in rate.items() if our_ar(name))
    rows = []
    for name, done in prompts.items():
        t, width, length = totals[name], runners[name].width, runners[name].length

        def over(other, other_rate=None):  # a speedup, over the same prompts only
            same = prompts.get(other) == done
            return round(rate[name] / (other_rate or rate[other]), 3) if same else ""

        row = dict(method=name, width=width, length=length, tokens=t["tokens"], seconds=round(t["seconds"], 3),
                   tokens_per_s=round(rate[name], 2), speedup_vs_ar=over("ar"),
                   speedup_vs_fastest_ar=over("ar", fastest_ar), speedup_vs_mlx_lm=over("mlx_lm_ar"),
                   prefill_seconds=round(t["prefill"], 3) if t["prefill"] else "",
                   decode_tokens_per_s=round(t["tokens"] / (t["seconds"] - t["prefill"]), 2) if t["prefill"] else "",
                   tokens_per_step="", acceptance="", peak_memory_mb=round(t["peak"], 1),
                   outputs_differing_from_ar=t["mismatches"] if meta["temp"] == 0 else "",
                   **{**meta, "prompts": done})
        if t["steps"] and width:
            summary = Stats(steps=t["steps"], accepted_histogram=t["histogram"], draft_length=length - 1)
            row.update(tokens_per_step=round(summary.tokens_per_step, 3), acceptance=round(summary.acceptance, 3))
        rows.append(row)
    return rows


def write_tables(rows, totals, out_dir: Path):
    """results.csv and results.json, each replaced atomically (they are rewritten after every prompt)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    histograms = {name: dict(sorted(t["histogram"].items())) for name, t in totals.items() if t["histogram"]}
    per_prompt = {name: t["per_prompt"] for name, t in totals.items() if t["per_prompt"]}  # drifts within a run
    with atomic_file(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps({"rows": rows, "accepted_histograms": histograms,
                                   "per_prompt_tokens_seconds": per_prompt}, indent=2))


def write_plots(rows, out_dir: Path):
    try:
        plot_all(rows, out_dir)
    except ImportError:
        print(f"matplotlib is not installed: no plots (later: python -m demos.plots {out_dir})", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


def run(args):
    if args.quick:
        args.num_prompts, args.max_tokens, args.widths, args.lengths = 2, 16, "1,2", "2,3"
    args.widths, args.lengths = parse_ints(args.widths, "widths"), parse_ints(args.lengths, "lengths")
    args.lookup = parse_ints(args.lookup, "lookup") if args.lookup else [None]
    args.tree_nodes = parse_ints(args.tree_nodes, "tree-nodes") if args.tree_nodes else [0]
    args.sampled_drafts = parse_methods(args.sampled_drafts) if args.sampled_drafts else [None]
    args.verify_forms = [f.strip() for f in (args.verify_forms or "").split(",") if f.strip()]
    if any(form not in VERIFY_FORMS for form in args.verify_forms):
        raise UsageError(f"--verify-forms must be a comma-separated list of {', '.join(VERIFY_FORMS)}, "
                         f"got {','.join(args.verify_forms)!r}")
    if "rows_kernel" in args.verify_forms and not mx.cuda.is_available():
        raise UsageError("--verify-forms rows_kernel: the few-row kernel runs on CUDA only")
    if any(k is not None and not 0 <= k <= MAX_MATCH for k in args.lookup):
        raise UsageError(f"--lookup values must be in 0..{MAX_MATCH}, got {','.join(map(str, args.lookup))}")
    refuse_unused(args.temp, lookup=args.lookup != [None], sampled_drafts=args.sampled_drafts != [None],
                  top_p=args.top_p != 1)  # rows named after a setting that does nothing would measure nothing
    sampling = SamplingParams(args.temp, top_p=args.top_p)
    for width, length, nodes in itertools.product(args.widths, args.lengths, args.tree_nodes):
        DecodeOptions(beam=BeamShape(width, length, nodes), sampling=sampling)  # checks the grid before loading anything
    policy = DecodePolicy.for_device()
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir}: exists and is not a directory")
    models.check_paths(args.model, args.drafter)
    if args.also_model and not Path(args.also_model).is_dir():
        raise UsageError(f"--also-model {args.also_model}: no such model directory")
    if args.draft_model:
        models.check_paths(args.draft_model, None, need_drafter=False)
    questions = load_prompts(args.prompts)[:args.num_prompts]
    engine = Engine.load(args.model, args.drafter, dtype=dtype_of(args), draft_vocab=args.draft_vocab, policy=policy)
    args.model = str(engine.files.model_dir)  # mlx-lm's runners read the same directory
    if args.draft_model:
        args.draft_model = str(models.resolve(args.draft_model, None, need_drafter=False, policy=policy)[0])
    prompts = [engine.encode(q) for q in questions]
    for number, prompt in enumerate(prompts, 1):
        for width in args.widths:
            try:
                engine.check(prompt, args.max_tokens, DecodeOptions(beam=BeamShape(width, args.lengths[0])))
            except UsageError as error:
                raise UsageError(f"--prompts {args.prompts}: prompt {number}: {error}") from None
    meta = dict(device=device_name(), dtype=args.dtype or str(engine.model.dtype).split(".")[-1],
                model=Path(args.model).name, mlx=mx.__version__, max_tokens=args.max_tokens,
                temp=args.temp, top_p=args.top_p)
    runners = make_runners(args, engine, sampling)
    if args.also_model:
        other = Engine.load(args.also_model, str(engine.files.drafter_dir), dtype=dtype_of(args),
                            draft_vocab=args.draft_vocab, policy=policy)
        runners.update(make_runners(args, other, sampling, suffix="_also"))
    for form in args.verify_forms:
        if form != policy.verify_form:  # AR too: its layers differ (rows_kernel's check each input's row count)
            other = Engine.load(args.model, str(engine.files.drafter_dir), dtype=dtype_of(args),
                                draft_vocab=args.draft_vocab, policy=replace(policy, verify_form=form))
            runners.update(make_runners(args, other, sampling, suffix=f"_{form}"))

    def save_partial(totals):
        write_tables(rows_from(totals, runners, meta), totals, out_dir)

    totals = measure(runners, prompts, sampling.greedy, save_partial)
    rows = rows_from(totals, runners, meta)
    write_tables(rows, totals, out_dir)
    write_plots(rows, out_dir)
    for row in rows:
        print(f"{row['method']:>22} {row['tokens_per_s']:8.2f} tok/s  x{row['speedup_vs_ar']:.2f} vs AR  "
              f"x{row['speedup_vs_fastest_ar']:.2f} vs the fastest AR  tokens/step {row['tokens_per_step']}  "
              f"prefill {row['prefill_seconds'] or '-'} s, after it {row['decode_tokens_per_s'] or '-'} tok/s",
              file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
