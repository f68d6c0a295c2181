"""Drafter training in MLX.

  python -m redrafter_mlx.train data --model DIR --prompts sharegpt.json --out DATA
      self-distillation: the target answers ShareGPT prompts greedily (or, with --temp,
      sampled); token shards saved.
  python -m redrafter_mlx.train text --model DIR --out DATA --sharegpt FILE --stdlib
      real text as answers to chat prompts, no generation (text_data.py); token shards saved.
  python -m redrafter_mlx.train eval --model DIR --drafter DRAFTER --data DATA [DATA ...]
      a drafter's teacher-forced top-1 per drafting step over all of the data.
  python -m redrafter_mlx.train fit --model DIR --data DATA [DATA ...] --out DRAFTER
      trains a drafter on those shards (target frozen), with held-out per-step accuracy,
      checkpoints (resumable with --resume) and an atomic final save.

Both run data-parallel under `mlx.launch` (or mpirun) with any number of processes
(docs/training.md): `data` splits the batches of prompts between them, `fit` the rows of
every batch.
"""

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import mlx.core as mx
import numpy as np

from . import models
from .model import fingerprint
from .atomic import atomic_file, check_output_dir, remove_stale
from .decode.sampling import SamplingParams
from .errors import MAX_SEED, ArgumentParser, UsageError, finite_float, int_at_least, run_cli
from .model.load import DTYPES, load_drafter, load_model, load_tokenizer, read_model_config
from .text import encode_prompt
from .training.batch_generate import generate_batch
from .training.data import check_settings, make_batches, read_prompts, save_sequences, shard_name, write_settings
from .training.distributed import total, wait_for_all, world
from .training.fit import VARIANT_KEYS, DrafterSpec, FitPlan, check_specs, evaluate, read_data
from .training.fit import fit as fit_drafters
from .training.progress import progress
from .training.text_data import add_parser as add_text_parser, text_data


# ---------------------------------------------------------------- data generation
def data_settings(args) -> dict:
    """What decides the shards of `data` (a resumed run must have the same): the model (its
    fingerprint: any form of it), the prompts file's name and the flags below."""
    flags = ("num_prompts", "all_turns", "dtype", "max_prompt_tokens", "max_new_tokens", "batch_size", "temp", "seed")
    return {"model": fingerprint.fingerprint(args.model), "prompts": Path(args.prompts).name,
            **{key: getattr(args, key) for key in flags}}


def generate_data(args):
    out = Path(args.out)
    check_output_dir(out, "--out")
    args.model = models.resolve_model(args.model)
    config = read_model_config(args.model)  # the files are checked before anything is loaded or written
    prompts = read_prompts(args.prompts, args.num_prompts, args.all_turns)
    tokenizer = load_tokenizer(args.model, config.eos_ids)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    encoded = [e for e in encoded if len(e) <= args.max_prompt_tokens]
    if not encoded:
        raise UsageError(f"{args.prompts}: no prompt of at most --max-prompt-tokens {args.max_prompt_tokens} tokens")
    if args.max_prompt_tokens + args.max_new_tokens > config.context_window:
        raise UsageError(f"--max-prompt-tokens {args.max_prompt_tokens} + --max-new-tokens {args.max_new_tokens} "
                         f"exceed the model's context window of {config.context_window}")
    settings = data_settings(args)
    check_settings(out, settings)  # a resumed run must answer the same prompts in the same batches
    model = load_model(args.model, DTYPES[args.dtype])
    group = world()
    out.mkdir(parents=True, exist_ok=True)
    if group.rank() == 0:
        remove_stale(out, "shard-*.npz")  # shards of killed runs (done again below)
        remove_stale(out, "info.json")
        write_settings(out, settings)
    wait_for_all(group)  # before any process writes a shard
    eos = set(tokenizer.eos_token_ids)
    params = SamplingParams(args.temp)
    batches = list(enumerate(range(0, len(encoded), args.batch_size)))
    mine = batches[group.rank()::group.size()]  # shard numbers do not depend on the number of processes
    start, produced = time.perf_counter(), 0
    for number, first in progress(mine, len(mine), "generating", shown=group.rank() == 0):
        shard = out / shard_name(number)
        if shard.exists():
            continue  # resumable
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            break
        batch = sorted(encoded[first:first + args.batch_size], key=len)
        batch_start = time.perf_counter()
        mx.random.seed(args.seed * 100_000 + number)  # a resumed run draws the same answers
        answers = generate_batch(model, batch, args.max_new_tokens, eos, args.max_prompt_tokens, params)
        save_sequences(shard, [p + a for p, a in zip(batch, answers)], [len(p) for p in batch])
        answer_tokens = sum(map(len, answers))
        produced += answer_tokens
        print(json.dumps({"shard": number, "answer_tokens": answer_tokens, "longest": max(map(len, answers)),
                          "seconds": round(time.perf_counter() - batch_start, 2)}), file=sys.stderr)
    produced = total(mx.array(produced), group).item()  # every process done
    elapsed = time.perf_counter() - start
    if group.rank() == 0:
        summary = {"prompts": len(encoded), "answer_tokens_generated_now": produced, "seconds": round(elapsed, 1)}
        with atomic_file(out / "info.json") as tmp:
            tmp.write_text(json.dumps({**vars(args), **summary}, indent=2))
        print(json.dumps(summary), file=sys.stderr)


def evaluate_drafter(args):
    """Prints the drafter's teacher-forced top-1 per drafting step over all of --data."""
    args.model = models.resolve_model(args.model)
    config = read_model_config(args.model)
    sequences = read_data(args.data, config.vocab_size, "--data")
    model = load_model(args.model, DTYPES[args.dtype])
    model.freeze()
    drafter = load_drafter(args.drafter, model, dtype=mx.float32)
    batches = make_batches(sequences, args.batch_tokens, args.max_length, np.random.default_rng(0))
    accuracy = evaluate(model, drafter, batches, args.draft_steps)
    answer_tokens = sum(min(len(seq), args.max_length) - min(p, args.max_length) for seq, p in sequences)
    print(json.dumps({"sequences": len(sequences), "answer_tokens": answer_tokens, "top1_per_step": accuracy}))


# the FitPlan fields that fit's flags give as they are
PLAN_FLAGS = tuple(f.name for f in fields(FitPlan) if f.name not in ("model", "data", "eval_data", "context_layers"))


def fit(args):
    """Fits the drafter of --out and those of each --also on the same batches (training/fit.py)."""
    spec = DrafterSpec(**{key: getattr(args, key) for key in VARIANT_KEYS})
    specs = [spec] + [spec.varied(text) for text in args.also]
    check_specs(specs)  # now, before the model is resolved (a download, a conversion); fit checks all again
    plan = FitPlan(model=models.resolve_model(args.model), data=tuple(args.data), eval_data=tuple(args.eval_data or ()),
                   context_layers=tuple(args.context_layers), **{key: getattr(args, key) for key in PLAN_FLAGS})
    fit_drafters(plan, specs)


def layer_list(text: str) -> list:
    """"10,20" -> [10, 20] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}")


MODEL_HELP = "the target: a model name, an MLX model directory, a .gguf file or a Hugging Face repo id (ORG/NAME)"


def build_parser():
    p = ArgumentParser(prog="python -m redrafter_mlx.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate self-distillation data")
    data.add_argument("--model", required=True, help=MODEL_HELP)
    data.add_argument("--prompts", required=True, help="ShareGPT JSON file, or .jsonl lines of {\"prompt\": text}")
    data.add_argument("--out", required=True)
    data.add_argument("--num-prompts", type=int_at_least(1), default=10000)
    data.add_argument("--all-turns", action="store_true", help="also later human turns (after all first turns)")
    data.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the target's dtype while generating")
    data.add_argument("--max-prompt-tokens", type=int_at_least(1), default=256)
    data.add_argument("--max-new-tokens", type=int_at_least(1), default=256)
    data.add_argument("--batch-size", type=int_at_least(1), default=128)
    data.add_argument("--max-seconds", type=finite_float(0), default=0, help="stop starting new batches after this")
    data.add_argument("--temp", type=finite_float(0), default=0.0,
                      help="0: greedy answers; > 0: sampled at this temperature")
    data.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="for sampled answers")
    add_text_parser(sub)
    f = sub.add_parser("fit", help="train a drafter")
    f.add_argument("--model", required=True, help=MODEL_HELP)
    f.add_argument("--data", required=True, nargs="+", help="one or more data directories")
    f.add_argument("--out", required=True)
    f.add_argument("--head", choices=("own", "target"), default=DrafterSpec.head,
                   help="own: Apple's layout, its own vocab head (default: more accurate, docs/training.md); "
                        "target: compact, on the target's frozen LM head")
    f.add_argument("--layers", type=int_at_least(0), default=DrafterSpec.layers, help="ResBlocks")
    f.add_argument("--exit-dim", type=int_at_least(0), default=DrafterSpec.exit_dim,
                   help="own head: width of the ResBlocks and the head's input (default: 2 x hidden, Apple's "
                        "layout; another width adds input_proj)")
    f.add_argument("--head-bits", type=int, choices=(0, 4, 8), default=DrafterSpec.head_bits,
                   help="own head: quantize the vocab projection to this many bits after training (0: off)")
    f.add_argument("--draft-vocab", type=int_at_least(0), default=DrafterSpec.draft_vocab,
                   help="draft vocabulary: this many of the most frequent answer tokens (0, or at least the "
                        "model's vocabulary: all); trained with a softmax over them, the saved default, and "
                        "an own head holds only their rows")
    f.add_argument("--context-layers", type=layer_list, default=[],
                   help="comma-separated target layers (0-based) whose outputs the drafter reads besides the "
                        "last hidden state (default: none, Apple's layout)")
    f.add_argument("--draft-steps", type=int_at_least(1, 15), default=FitPlan.draft_steps, help="K = beam length - 1")
    f.add_argument("--distill", type=finite_float(0, 1), default=DrafterSpec.distill,
                   help="weight in [0, 1] of the soft loss against the target's next-token distribution "
                        "(the rest: against the data's tokens)")
    f.add_argument("--step-decay", type=finite_float(0, 1, open_minimum=True), default=DrafterSpec.step_decay,
                   help="weight drafting step i's loss by this to the power i (rescaled to sum to K; 1: all "
                        "steps alike)")
    f.add_argument("--dtype", choices=tuple(DTYPES), default=FitPlan.dtype,
                   help="the frozen target's dtype while computing its features (the drafter trains in float32)")
    f.add_argument("--epochs", type=int_at_least(1), default=FitPlan.epochs)
    f.add_argument("--max-steps", type=int_at_least(0), default=FitPlan.max_steps,
                   help="stop after this many steps, the learning-rate schedule fitted to them (0: all epochs)")
    f.add_argument("--lr", type=finite_float(0, open_minimum=True), default=DrafterSpec.lr)
    f.add_argument("--batch-tokens", type=int_at_least(1), default=FitPlan.batch_tokens)
    f.add_argument("--max-length", type=int_at_least(3), default=FitPlan.max_length)
    f.add_argument("--eval-data", nargs="+", help="data directories for the per-epoch held-out evaluation "
                   "(default: a share of --data, --eval-fraction)")
    f.add_argument("--eval-fraction", type=finite_float(0, 0.5), default=FitPlan.eval_fraction,
                   help="share of the distinct prompts whose answers are held out")
    f.add_argument("--log-every", type=int_at_least(1), default=FitPlan.log_every)
    f.add_argument("--checkpoint-every", type=int_at_least(1), default=FitPlan.checkpoint_every)
    f.add_argument("--save-dtype", choices=("float16", "bfloat16", "float32"), default=FitPlan.save_dtype)
    f.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=FitPlan.seed)
    f.add_argument("--init", help="a trained drafter directory to go on training; its architecture and draft "
                   "vocabulary replace --head, --layers, --exit-dim, --draft-vocab and --context-layers")
    f.add_argument("--grow", action="store_true",
                   help="with --init: add ResBlocks up to --layers and read --context-layers besides its own, "
                        "the added weights starting at zero (the grown drafter drafts as --init's until trained)")
    f.add_argument("--resume", action="store_true")
    f.add_argument("--also", action="append", default=[], metavar="KEY=VALUE,...",
                   help="fit one more drafter on the same batches (the target's features computed once for "
                        f"all), with these settings changed: {', '.join(VARIANT_KEYS)}; e.g. "
                        "out=d2,head=target,draft_vocab=16384 (repeatable)")
    e = sub.add_parser("eval", help="a drafter's teacher-forced top-1 per drafting step on data")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--drafter", required=True)
    e.add_argument("--data", required=True, nargs="+", help="one or more data directories (all of it is used)")
    e.add_argument("--draft-steps", type=int_at_least(1, 15), default=4)
    e.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the target's dtype")
    e.add_argument("--batch-tokens", type=int_at_least(1), default=8192)
    e.add_argument("--max-length", type=int_at_least(3), default=512)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = {"data": generate_data, "text": text_data, "fit": fit, "eval": evaluate_drafter}
    run_cli(lambda: commands[args.command](args))


if __name__ == "__main__":
    main()
