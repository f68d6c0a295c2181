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
import math
import shutil
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .model import fingerprint
from . import models
from .atomic import atomic_directory, atomic_file, remove_stale
from .training.batch_generate import generate_batch
from .model.config import ConfigError, DrafterConfig
from .training.data import load_sequences, make_batches, read_prompts, save_sequences, shard_name, split_by_prompt
from .training.distributed import gather, rows_of, total, wait_for_all, world
from .model.drafter import Drafter
from .model.draft_vocab import FILE as DRAFT_VOCAB_FILE, choose_token_ids, read_ranked
from .training.loss import drafter_loss, target_features, target_next_log_probs
from .errors import MAX_SEED, ArgumentParser, UsageError, finite_float, int_at_least, run_cli
from .model.load import (DTYPES, dequantize_layers, load_drafter, load_model, load_tokenizer, read_drafter_config, read_model_config,
                   save_module)
from .decode.sampling import SamplingParams
from .training.text_data import add_parser as add_text_parser, text_data
from .text import encode_prompt


RANKED_KEPT = 16384  # token ids listed in draft_vocab.json


def progress(iterable, total, desc, shown=True):
    if not shown:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def model_directory(model: str) -> str:
    """--model as every command takes it (models.resolve): a model name, an MLX directory, a
    .gguf file or a Hugging Face repo id."""
    return str(models.resolve(model, None, need_drafter=False)[0])


# ---------------------------------------------------------------- data generation
def generate_data(args):
    out = Path(args.out)
    check_output_dir(out, "--out")
    args.model = model_directory(args.model)
    config = read_model_config(args.model)  # the files are checked before anything is loaded or written
    prompts = read_prompts(args.prompts, args.num_prompts, args.all_turns)
    tokenizer = load_tokenizer(args.model, config.eos_ids)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    encoded = [e for e in encoded if len(e) <= args.max_prompt_tokens]
    if not encoded:
        raise UsageError(f"{args.prompts}: no prompt of at most --max-prompt-tokens {args.max_prompt_tokens} tokens")
    if args.max_prompt_tokens + args.max_new_tokens > config.max_position_embeddings:
        raise UsageError(f"--max-prompt-tokens {args.max_prompt_tokens} + --max-new-tokens {args.max_new_tokens} "
                         f"exceed the model's context window of {config.max_position_embeddings}")
    model = load_model(args.model, DTYPES[args.dtype])
    group = world()
    out.mkdir(parents=True, exist_ok=True)
    if group.rank() == 0:
        remove_stale(out, "shard-*.npz")  # shards of killed runs (done again below)
        remove_stale(out, "info.json")
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


# ---------------------------------------------------------------- training
def new_drafter(model, args, token_ids) -> Drafter:
    """A fresh drafter; token_ids (K,): its draft vocabulary (None: all tokens), which an own
    head then holds only the rows of."""
    hidden = model.config.hidden_size
    size = 0 if token_ids is None else token_ids.shape[0]
    config = DrafterConfig.from_dict(dict(  # from_dict: validated as a loaded config is
        hidden_size=hidden, vocab_size=model.config.vocab_size,
        exit_dim=hidden if args.head == "target" else args.exit_dim or 2 * hidden, num_draft_layers=args.layers, rnn=True,
        head=args.head, draft_vocab_size=size, head_rows=size if args.head == "own" else 0,
        context_layers=args.context_layers))
    config.check_matches(model.config)
    drafter = Drafter(config)
    drafter.bind_target(model)
    if token_ids is not None:
        drafter.restrict_vocab(token_ids)
    return drafter


def initial_drafter(model, args, train):
    """-> (drafter, ranked token ids): a fresh drafter whose draft vocabulary is the most
    frequent answer tokens of `train`, or (--init DIR) a trained one to go on from, with its
    own architecture and draft vocabulary (--head, --layers, --draft-vocab, --context-layers
    do not apply); a quantized head is made dense to be trained (--head-bits quantizes it
    again when saved)."""
    if args.init:
        drafter = load_drafter(args.init, model, dtype=mx.float32)
        dequantize_layers(drafter)
        drafter.config.extra.pop("quantization", None)
        return drafter, read_ranked(args.init, model.config.vocab_size)
    vocab = model.config.vocab_size
    ranked = ranked_answer_tokens(train, vocab)
    reduced = 0 < args.draft_vocab < vocab
    token_ids = choose_token_ids(ranked, args.draft_vocab, model.config.eos_ids) if reduced else None
    return new_drafter(model, args, token_ids), ranked


def schedule(args, total_steps):
    warmup = max(1, int(0.1 * total_steps))
    return optim.join_schedules([optim.linear_schedule(0.0, args.lr, warmup),
                                 optim.cosine_decay(args.lr, max(1, total_steps - warmup))], [warmup])


def evaluate(model, drafter, batches, steps, group=None):
    """Per-step top-1 accuracy over held-out batches (answer tokens only); with a group of
    several processes, each evaluates every size-th batch and their counts are summed."""
    correct, counted = np.zeros(steps), np.zeros(steps)
    for tokens, mask in batches if group is None else batches[group.rank()::group.size()]:
        tokens, mask = mx.array(tokens), mx.array(mask)
        hidden, embeddings = target_features(model, tokens, drafter.taps)
        _, _, accuracy, count = drafter_loss(drafter, hidden, embeddings, tokens, mask, steps)
        correct[:len(count)] += np.array(accuracy * count)
        counted[:len(count)] += np.array(count)
    if group is not None and group.size() > 1:
        correct, counted = np.array(total(mx.array(np.stack([correct, counted]), mx.float32), group), np.float64)
    return (correct / np.maximum(counted, 1)).round(4).tolist()


def save_checkpoint(path: Path, drafter, optimizer, step, log=()):
    with atomic_directory(path, force=True) as tmp:
        save_module(drafter, drafter.config.to_dict(), tmp)
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        (tmp / "step.json").write_text(json.dumps({"step": step, "log": list(log)}))


def load_checkpoint(path: Path, drafter, optimizer):
    """-> (step, training log so far)."""
    drafter.load_weights(list(mx.load(str(path / "model.safetensors")).items()))
    state = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(state.items()))
    saved = json.loads((path / "step.json").read_text())
    return saved["step"], saved.get("log", [])


def ranked_answer_tokens(sequences, vocab_size: int) -> list:
    """Token ids by how often they occur in the answers, most frequent first (at most RANKED_KEPT)."""
    answers = [seq[prompt_length:] for seq, prompt_length in sequences]
    counts = np.bincount(np.concatenate(answers), minlength=vocab_size)
    return np.argsort(-counts, kind="stable")[:RANKED_KEPT].tolist()


VARIANT_KEYS = {"out": str, "head": str, "layers": int, "exit_dim": int, "draft_vocab": int, "head_bits": int,
                "distill": float, "lr": float}  # what --also may change


def variant_args(args, text: str):
    """A copy of args with --also's overrides, e.g. "out=d2,head=target,draft_vocab=16384"."""
    variant = argparse.Namespace(**vars(args))
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in VARIANT_KEYS or not value:
            raise UsageError(f"--also: expected KEY=VALUE with KEY in {', '.join(VARIANT_KEYS)}, got {item!r}")
        try:
            setattr(variant, key, VARIANT_KEYS[key](value))
        except ValueError:
            raise UsageError(f"--also: {key} must be {VARIANT_KEYS[key].__name__}, got {value!r}") from None
    return variant


def check_output_dir(path: Path, flag: str):
    """UsageError when path exists and is not a directory (checked before any work)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")


def check_fit_args(args):
    if not args.out:
        raise UsageError("--out is empty")
    check_output_dir(Path(args.out), "--out")
    if args.layers < 0 or args.exit_dim < 0:
        raise UsageError(f"--layers and --exit-dim must be >= 0, got {args.layers} and {args.exit_dim}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.draft_vocab <= RANKED_KEPT:
        raise UsageError(f"--draft-vocab must be in 0..{RANKED_KEPT}, got {args.draft_vocab}")
    if args.head not in ("own", "target"):
        raise UsageError(f"--head must be own or target, got {args.head!r}")
    if args.head_bits not in (0, 4, 8) or (args.head_bits and args.head != "own"):
        raise UsageError("--head-bits (4 or 8) quantizes an own head (--head own)")
    if not 0 <= args.distill <= 1:
        raise UsageError(f"--distill must be in [0, 1], got {args.distill}")


class Trainee:
    """One drafter being fitted: its settings (args), optimizer, checkpoint and log; each
    process of the group fits the same drafter on its rows of every batch."""

    def __init__(self, model, args, train, total_steps: int, group: mx.distributed.Group):
        self.args, self.group = args, group
        self.drafter, self.ranked = initial_drafter(model, args, train)
        self.optimizer = optim.AdamW(learning_rate=schedule(args, total_steps), weight_decay=0.0)
        self.checkpoint = Path(args.out + ".checkpoint")
        resume = args.resume and self.checkpoint.exists()
        self.step, self.log = load_checkpoint(self.checkpoint, self.drafter, self.optimizer) if resume else (0, [])
        steps = gather(self.step, group)
        if len(set(steps)) > 1:
            raise UsageError(f"--resume: the processes found {self.checkpoint} at different steps ({steps}); "
                             "every process needs the same one (a shared disk, or a copy)")

        def loss_fn(hidden, embeddings, tokens, mask, next_log_p):
            next_probs = mx.exp(self.drafter.from_full_vocab(next_log_p)) if args.distill else None
            return drafter_loss(self.drafter, hidden, embeddings, tokens, mask, args.draft_steps, next_probs,
                                args.distill, group)[0]

        self.loss_and_grad = nn.value_and_grad(self.drafter, loss_fn)

    def update(self, hidden, embeddings, tokens, mask, next_log_p) -> mx.array:
        """One step on this process's rows of a batch; -> this process's loss (their mean over
        the group: the batch's loss)."""
        loss, grads = self.loss_and_grad(hidden, embeddings, tokens, mask, next_log_p)
        grads = nn.average_gradients(grads, group=self.group)  # the whole batch's gradients
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        self.optimizer.update(self.drafter, grads)
        return loss

    def record(self, entry: dict):
        self.log.append(entry)
        if self.group.rank() == 0:
            print(json.dumps({"out": self.args.out, **entry}), file=sys.stderr)


def read_data(directories, vocab_size: int, flag: str) -> list:
    """(sequence, prompt length) pairs of the shards in directories; UsageError naming `flag`
    when a token id is outside the model's vocabulary."""
    sequences = list(load_sequences(*directories))
    largest = max((int(seq.max()) for seq, _ in sequences if len(seq)), default=0)
    if largest >= vocab_size:
        raise UsageError(f"{flag} {' '.join(directories)}: token id {largest} is outside the model's vocabulary "
                         f"({vocab_size}): data of another model?")
    return sequences


def evaluate_drafter(args):
    """Prints the drafter's teacher-forced top-1 per drafting step over all of --data."""
    config = read_model_config(args.model)
    sequences = read_data(args.data, config.vocab_size, "--data")
    model = load_model(args.model, DTYPES[args.dtype])
    model.freeze()
    drafter = load_drafter(args.drafter, model, dtype=mx.float32)
    batches = make_batches(sequences, args.batch_tokens, args.max_length, np.random.default_rng(0))
    accuracy = evaluate(model, drafter, batches, args.draft_steps)
    answer_tokens = sum(min(len(seq), args.max_length) - min(p, args.max_length) for seq, p in sequences)
    print(json.dumps({"sequences": len(sequences), "answer_tokens": answer_tokens, "top1_per_step": accuracy}))


def fit(args):
    """Fits the drafter of --out and those of each --also on the same batches: the frozen
    target's features (its costly part) are computed once per batch for all of them."""
    variants = [args] + [variant_args(args, text) for text in args.also]
    for variant in variants:
        check_fit_args(variant)
    outs = [variant.out for variant in variants]
    if len(set(outs)) < len(outs):
        raise UsageError(f"--out and --also name the same output twice: {', '.join(outs)}")
    model_dir = model_directory(args.model)
    for variant in variants:  # each writes the model's fingerprint beside its drafter
        variant.model = model_dir
    config = read_model_config(args.model)  # checked before the data and the model load
    if args.init:
        try:
            read_drafter_config(args.init).check_matches(config)
        except ConfigError as error:
            raise UsageError(f"--init {args.init}: does not fit the model: {error}") from None
    sequences = read_data(args.data, config.vocab_size, "--data")
    valid = read_data(args.eval_data, config.vocab_size, "--eval-data") if args.eval_data else None
    model = load_model(args.model, DTYPES[args.dtype])
    model.freeze()
    group = world()
    writer = group.rank() == 0  # the one process that logs and saves
    rng = np.random.default_rng(args.seed)
    rng.shuffle(sequences)
    train, valid = (sequences, valid) if valid else split_by_prompt(sequences, args.eval_fraction)
    steps_per_epoch = sum(1 for _ in make_batches(train, args.batch_tokens, args.max_length, rng))
    total_steps = min(steps_per_epoch * args.epochs, args.max_steps or math.inf)
    if writer:
        print(json.dumps({"train_sequences": len(train), "held_out_sequences": len(valid),
                          "steps_per_epoch": steps_per_epoch, "epochs": args.epochs}), file=sys.stderr)
    trainees = []
    for variant in variants:
        mx.random.seed(args.seed)  # each initialised as if fitted alone
        trainees.append(Trainee(model, variant, train, total_steps, group))
    taps = trainees[0].drafter.taps
    distill = any(t.args.distill for t in trainees)
    valid_batches = list(make_batches(valid, args.batch_tokens, args.max_length, np.random.default_rng(0)))
    start = time.perf_counter()
    iterator = iter(progress(range(total_steps), total_steps, "training", shown=writer))
    for epoch in range(args.epochs):
        trained = set()  # the trainees that fitted batches of this epoch (a resumed one may have done them all)
        for batch_number, batch in enumerate(make_batches(train, args.batch_tokens, args.max_length, rng)):
            next(iterator, None)
            step = epoch * steps_per_epoch + batch_number
            if step >= total_steps:  # --max-steps: the schedule ended inside this epoch
                break
            due = [t for t in trainees if t.step <= step]  # resumed: skip what was done (the same batches)
            if not due:
                continue
            tokens, mask = (mx.array(a) for a in rows_of(group, *batch))  # this process's rows
            hidden, embeddings = target_features(model, tokens, taps)
            next_log_p = target_next_log_probs(model, hidden) if distill else None
            trained.update(due)
            for trainee in due:
                loss = trainee.update(hidden, embeddings, tokens, mask, next_log_p)
                mx.eval(loss, trainee.drafter.parameters(), trainee.optimizer.state)
                trainee.step += 1
                if trainee.step % args.log_every == 0:
                    loss = total(loss, group) / group.size()
                    trainee.record({"step": trainee.step, "loss": round(loss.item(), 4),
                                    "seconds": round(time.perf_counter() - start, 1)})
                if trainee.step % args.checkpoint_every == 0 and writer:
                    save_checkpoint(trainee.checkpoint, trainee.drafter, trainee.optimizer, trainee.step, trainee.log)
        for trainee in [t for t in trainees if t in trained]:
            accuracy = evaluate(model, trainee.drafter, valid_batches, args.draft_steps, group)
            trainee.record({"epoch": epoch + 1, "step": trainee.step, "held_out_top1_per_step": accuracy})
    for trainee in trainees:
        if trainee.args.head_bits:
            quantize_head(trainee.drafter, trainee.args.head_bits)
            accuracy = evaluate(model, trainee.drafter, valid_batches, args.draft_steps, group)
            trainee.record({"head_bits": trainee.args.head_bits, "held_out_top1_per_step": accuracy})
        if writer:
            save_drafter(trainee.drafter, Path(trainee.args.out), trainee.args, trainee.log,
                         time.perf_counter() - start, trainee.ranked)
            shutil.rmtree(trainee.checkpoint, ignore_errors=True)
    wait_for_all(group)  # every process returns once the drafters are saved


def quantize_head(drafter: Drafter, bits: int, group_size: int = 64):
    """Quantizes an own head's vocab projection in place (the config records it, so that
    load_drafter quantizes that layer again before loading the weights)."""
    drafter.lm_head[-1] = drafter.lm_head[-1].to_quantized(group_size=group_size, bits=bits)
    drafter.config.extra["quantization"] = {"group_size": group_size, "bits": bits}


def save_drafter(drafter, out: Path, args, log, seconds, ranked: list):
    """Atomic save of the final drafter (float16 unless --save-dtype), its training log and
    its draft vocabulary (`ranked`: token ids, most frequent first; with --init, that
    drafter's file as it is, whatever data it was ranked on)."""
    def cast(p):  # float weights only: a quantized head's packed weights stay integers
        return p.astype(DTYPES[args.save_dtype]) if mx.issubdtype(p.dtype, mx.floating) else p

    drafter.update(tree_map(cast, drafter.parameters()))
    with atomic_directory(out, force=True) as tmp:
        save_module(drafter, drafter.config.to_dict(), tmp)
        if args.init:  # its draft vocabulary, kept as it was written
            shutil.copyfile(Path(args.init) / DRAFT_VOCAB_FILE, tmp / DRAFT_VOCAB_FILE)
        else:
            source = f"answer tokens of the training data ({', '.join(args.data)}), most frequent first"
            (tmp / DRAFT_VOCAB_FILE).write_text(json.dumps({"source": source, "token_ids": ranked}))
        (tmp / "training.json").write_text(
            json.dumps({"args": vars(args), "seconds": round(seconds, 1), "log": log}, indent=2))
        fingerprint.write(tmp, args.model)  # target.json: the model it fits, in any form


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
    data.add_argument("--temp", type=finite_float(0), default=0.0, help="0: greedy answers; > 0: sampled at this temperature")
    data.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="for sampled answers")
    add_text_parser(sub)
    f = sub.add_parser("fit", help="train a drafter")
    f.add_argument("--model", required=True, help=MODEL_HELP)
    f.add_argument("--data", required=True, nargs="+", help="one or more data directories")
    f.add_argument("--out", required=True)
    f.add_argument("--head", choices=("own", "target"), default="own",
                   help="own: Apple's layout, its own vocab head (default: more accurate, docs/training.md); "
                        "target: compact, on the target's frozen LM head")
    f.add_argument("--layers", type=int_at_least(0), default=2, help="ResBlocks")
    f.add_argument("--exit-dim", type=int_at_least(0), default=0,
                   help="own head: width of the ResBlocks and the head's input (default: 2 x hidden, Apple's "
                        "layout; another width adds input_proj)")
    f.add_argument("--head-bits", type=int, choices=(0, 4, 8), default=0,
                   help="own head: quantize the vocab projection to this many bits after training (0: off)")
    f.add_argument("--draft-vocab", type=int_at_least(0), default=4096,
                   help="draft vocabulary: this many of the most frequent answer tokens (0, or at least the "
                        "model's vocabulary: all); trained with a softmax over them, the saved default, and "
                        "an own head holds only their rows")
    f.add_argument("--context-layers", type=layer_list, default=[],
                   help="comma-separated target layers (0-based) whose outputs the drafter reads besides the "
                        "last hidden state (default: none, Apple's layout)")
    f.add_argument("--draft-steps", type=int_at_least(1, 15), default=4, help="K = beam length - 1")
    f.add_argument("--distill", type=finite_float(0, 1), default=0.0,
                   help="weight in [0, 1] of the soft loss against the target's next-token distribution "
                        "(the rest: against the data's tokens)")
    f.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="the frozen target's dtype while computing its features (the drafter trains in float32)")
    f.add_argument("--epochs", type=int_at_least(1), default=2)
    f.add_argument("--max-steps", type=int_at_least(0), default=0,
                   help="stop after this many steps, the learning-rate schedule fitted to them (0: all epochs)")
    f.add_argument("--lr", type=finite_float(0, open_minimum=True), default=1e-3)
    f.add_argument("--batch-tokens", type=int_at_least(1), default=8192)
    f.add_argument("--max-length", type=int_at_least(2), default=512)
    f.add_argument("--eval-data", nargs="+", help="data directories for the per-epoch held-out evaluation "
                   "(default: a share of --data, --eval-fraction)")
    f.add_argument("--eval-fraction", type=finite_float(0, 0.5), default=0.02,
                   help="share of the distinct prompts whose answers are held out")
    f.add_argument("--log-every", type=int_at_least(1), default=20)
    f.add_argument("--checkpoint-every", type=int_at_least(1), default=200)
    f.add_argument("--save-dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    f.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0)
    f.add_argument("--init", help="a trained drafter directory to go on training; its architecture and draft "
                   "vocabulary replace --head, --layers and --draft-vocab")
    f.add_argument("--resume", action="store_true")
    f.add_argument("--also", action="append", default=[], metavar="KEY=VALUE,...",
                   help="fit one more drafter on the same batches (the target's features computed once for "
                        f"all), with these settings changed: {', '.join(VARIANT_KEYS)}; e.g. "
                        "out=d2,head=target,draft_vocab=16384 (repeatable)")
    e = sub.add_parser("eval", help="a drafter's teacher-forced top-1 per drafting step on data")
    e.add_argument("--model", required=True)
    e.add_argument("--drafter", required=True)
    e.add_argument("--data", required=True, nargs="+", help="one or more data directories (all of it is used)")
    e.add_argument("--draft-steps", type=int_at_least(1, 15), default=4)
    e.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the target's dtype")
    e.add_argument("--batch-tokens", type=int_at_least(1), default=8192)
    e.add_argument("--max-length", type=int_at_least(2), default=512)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = {"data": generate_data, "text": text_data, "fit": fit, "eval": evaluate_drafter}
    run_cli(lambda: commands[args.command](args))


if __name__ == "__main__":
    main()
