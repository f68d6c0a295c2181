"""Drafter training in MLX.

  python -m redrafter_mlx.train data --model DIR --prompts sharegpt.json --out DATA
      self-distillation: the target answers ShareGPT prompts greedily (or, with --temp,
      sampled); token shards saved.
  python -m redrafter_mlx.train fit --model DIR --data DATA [DATA ...] --out DRAFTER
      trains a drafter on those shards (target frozen), with held-out per-step accuracy,
      checkpoints (resumable with --resume) and an atomic final save.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .atomic import atomic_directory
from .batch_generate import generate_batch
from .config import DrafterConfig
from .data import load_sequences, make_batches, save_sequences, sharegpt_prompts, split_by_prompt
from .drafter import Drafter
from .draft_vocab import FILE as DRAFT_VOCAB_FILE, choose_token_ids, read_ranked
from .drafter_loss import drafter_loss, target_features, target_next_probs
from .load import DTYPES, LoadError, load_drafter, load_model, load_tokenizer, save_module
from .sampling import SamplingParams


RANKED_KEPT = 16384  # token ids listed in draft_vocab.json


def progress(iterable, total, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------- data generation
def generate_data(args):
    model = load_model(args.model, DTYPES[args.dtype])
    tokenizer = load_tokenizer(args.model, model.config.eos_ids)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = sharegpt_prompts(args.prompts, args.num_prompts, args.all_turns)
    encoded = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
               for p in prompts]
    encoded = [e for e in encoded if len(e) <= args.max_prompt_tokens]
    eos = set(tokenizer.eos_token_ids)
    params = SamplingParams(args.temp)
    batches = range(0, len(encoded), args.batch_size)
    start, produced = time.perf_counter(), 0
    for number, first in enumerate(progress(batches, len(batches), "generating")):
        shard = out / f"shard-{number:05d}.npz"
        if shard.exists():
            continue  # resumable
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            break
        group = sorted(encoded[first:first + args.batch_size], key=len)
        batch_start = time.perf_counter()
        mx.random.seed(args.seed * 100_000 + number)  # a resumed run draws the same answers
        answers = generate_batch(model, group, args.max_new_tokens, eos, args.max_prompt_tokens, params)
        save_sequences(shard, [p + a for p, a in zip(group, answers)], [len(p) for p in group])
        answer_tokens = sum(map(len, answers))
        produced += answer_tokens
        print(json.dumps({"shard": number, "answer_tokens": answer_tokens, "longest": max(map(len, answers)),
                          "seconds": round(time.perf_counter() - batch_start, 2)}), file=sys.stderr)
    elapsed = time.perf_counter() - start
    summary = {"prompts": len(encoded), "answer_tokens_generated_now": produced, "seconds": round(elapsed, 1)}
    (out / "info.json").write_text(json.dumps({**vars(args), **summary}, indent=2))
    print(json.dumps(summary), file=sys.stderr)


# ---------------------------------------------------------------- training
def new_drafter(model, args, token_ids) -> Drafter:
    """A fresh drafter; token_ids (K,): its draft vocabulary (None: all tokens), which an own
    head then holds only the rows of."""
    hidden = model.config.hidden_size
    size = 0 if token_ids is None else token_ids.shape[0]
    config = DrafterConfig.from_dict(dict(  # from_dict: validated as a loaded config is
        hidden_size=hidden, vocab_size=model.config.vocab_size,
        exit_dim=hidden if args.head == "target" else 2 * hidden, num_draft_layers=args.layers, rnn=True,
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
    do not apply)."""
    if args.init:
        return load_drafter(args.init, model, dtype=mx.float32), read_ranked(args.init)
    vocab = model.config.vocab_size
    ranked = ranked_answer_tokens(train, vocab)
    reduced = 0 < args.draft_vocab < vocab
    token_ids = choose_token_ids(ranked, args.draft_vocab, model.config.eos_ids) if reduced else None
    return new_drafter(model, args, token_ids), ranked


def schedule(args, total_steps):
    warmup = max(1, int(0.1 * total_steps))
    return optim.join_schedules([optim.linear_schedule(0.0, args.lr, warmup),
                                 optim.cosine_decay(args.lr, total_steps - warmup)], [warmup])


def evaluate(model, drafter, batches, steps):
    """Per-step top-1 accuracy over held-out batches (answer tokens only)."""
    correct, total = np.zeros(steps), np.zeros(steps)
    for tokens, mask in batches:
        tokens, mask = mx.array(tokens), mx.array(mask)
        hidden, embeddings = target_features(model, tokens, drafter.taps)
        _, _, accuracy, count = drafter_loss(drafter, hidden, embeddings, tokens, mask, steps)
        correct[:len(count)] += np.array(accuracy * count)
        total[:len(count)] += np.array(count)
    return (correct / np.maximum(total, 1)).round(4).tolist()


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


def fit(args):
    if not 0 <= args.draft_vocab <= RANKED_KEPT:
        raise ValueError(f"--draft-vocab must be in 0..{RANKED_KEPT}, got {args.draft_vocab}")
    if not 0 <= args.distill <= 1:
        raise ValueError(f"--distill must be in [0, 1], got {args.distill}")
    model = load_model(args.model, DTYPES[args.dtype])
    model.freeze()
    sequences = list(load_sequences(*args.data))
    rng = np.random.default_rng(args.seed)
    rng.shuffle(sequences)
    train, valid = split_by_prompt(sequences, args.eval_fraction)
    steps_per_epoch = sum(1 for _ in make_batches(train, args.batch_tokens, args.max_length, rng))
    total_steps = steps_per_epoch * args.epochs
    mx.random.seed(args.seed)
    drafter, ranked = initial_drafter(model, args, train)
    optimizer = optim.AdamW(learning_rate=schedule(args, total_steps), weight_decay=0.0)
    out, checkpoint = Path(args.out), Path(args.out + ".checkpoint")
    step, log = load_checkpoint(checkpoint, drafter, optimizer) if args.resume and checkpoint.exists() else (0, [])

    def loss_fn(hidden, embeddings, tokens, mask, next_probs):
        return drafter_loss(drafter, hidden, embeddings, tokens, mask, args.draft_steps, next_probs, args.distill)[0]

    loss_and_grad = nn.value_and_grad(drafter, loss_fn)

    def train_step(tokens, mask):
        hidden, embeddings = target_features(model, tokens, drafter.taps)
        next_probs = target_next_probs(model, hidden, drafter) if args.distill else None
        loss, grads = loss_and_grad(hidden, embeddings, tokens, mask, next_probs)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(drafter, grads)
        return loss

    valid_batches = list(make_batches(valid, args.batch_tokens, args.max_length, np.random.default_rng(0)))
    start = time.perf_counter()
    bar = progress(range(total_steps), total_steps, "training")
    iterator = iter(bar)
    for epoch in range(args.epochs):
        trained = False
        for batch_number, (tokens, mask) in enumerate(make_batches(train, args.batch_tokens, args.max_length, rng)):
            next(iterator, None)
            if epoch * steps_per_epoch + batch_number < step:
                continue  # resumed: skip what was done (drawing the same batches)
            trained = True
            loss = train_step(mx.array(tokens), mx.array(mask))
            mx.eval(loss, drafter.parameters(), optimizer.state)
            step += 1
            if step % args.log_every == 0:
                seconds = round(time.perf_counter() - start, 1)
                log.append({"step": step, "loss": round(loss.item(), 4), "seconds": seconds})
                print(json.dumps(log[-1]), file=sys.stderr)
            if step % args.checkpoint_every == 0:
                save_checkpoint(checkpoint, drafter, optimizer, step, log)
        if not trained:
            continue  # finished before the resume: not evaluated again
        accuracy = evaluate(model, drafter, valid_batches, args.draft_steps)
        log.append({"epoch": epoch + 1, "step": step, "held_out_top1_per_step": accuracy})
        print(json.dumps(log[-1]), file=sys.stderr)
    save_drafter(drafter, out, args, log, time.perf_counter() - start, ranked)
    shutil.rmtree(checkpoint, ignore_errors=True)


def save_drafter(drafter, out: Path, args, log, seconds, ranked: list):
    """Atomic save of the final drafter (float16 unless --save-dtype), its training log and
    its draft vocabulary (`ranked`: token ids, most frequent first)."""
    drafter.update(tree_map(lambda p: p.astype(DTYPES[args.save_dtype]), drafter.parameters()))
    with atomic_directory(out, force=True) as tmp:
        save_module(drafter, drafter.config.to_dict(), tmp)
        source = f"answer tokens of the training data ({', '.join(args.data)}), most frequent first"
        (tmp / DRAFT_VOCAB_FILE).write_text(json.dumps({"source": source, "token_ids": ranked}))
        (tmp / "training.json").write_text(
            json.dumps({"args": vars(args), "seconds": round(seconds, 1), "log": log}, indent=2))


def layer_list(text: str) -> list:
    """"10,20" -> [10, 20] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate self-distillation data")
    data.add_argument("--model", required=True)
    data.add_argument("--prompts", required=True, help="ShareGPT JSON file")
    data.add_argument("--out", required=True)
    data.add_argument("--num-prompts", type=int, default=10000)
    data.add_argument("--all-turns", action="store_true", help="also later human turns (after all first turns)")
    data.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the target's dtype while generating")
    data.add_argument("--max-prompt-tokens", type=int, default=256)
    data.add_argument("--max-new-tokens", type=int, default=256)
    data.add_argument("--batch-size", type=int, default=128)
    data.add_argument("--max-seconds", type=float, default=0, help="stop starting new batches after this")
    data.add_argument("--temp", type=float, default=0.0, help="0: greedy answers; > 0: sampled at this temperature")
    data.add_argument("--seed", type=int, default=0, help="for sampled answers")
    f = sub.add_parser("fit", help="train a drafter")
    f.add_argument("--model", required=True)
    f.add_argument("--data", required=True, nargs="+", help="one or more data directories")
    f.add_argument("--out", required=True)
    f.add_argument("--head", choices=("own", "target"), default="own",
                   help="own: Apple's layout, its own vocab head (default: more accurate, docs/training.md); "
                        "target: compact, on the target's frozen LM head")
    f.add_argument("--layers", type=int, default=2, help="ResBlocks")
    f.add_argument("--draft-vocab", type=int, default=4096,
                   help="draft vocabulary: this many of the most frequent answer tokens (0, or at least the "
                        "model's vocabulary: all); trained with a softmax over them, the saved default, and "
                        "an own head holds only their rows")
    f.add_argument("--context-layers", type=layer_list, default=[],
                   help="comma-separated target layers (0-based) whose outputs the drafter reads besides the "
                        "last hidden state (default: none, Apple's layout)")
    f.add_argument("--draft-steps", type=int, default=4, help="K = beam length - 1")
    f.add_argument("--distill", type=float, default=0.0,
                   help="weight in [0, 1] of the soft loss against the target's next-token distribution "
                        "(the rest: against the data's tokens)")
    f.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="the frozen target's dtype while computing its features (the drafter trains in float32)")
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch-tokens", type=int, default=8192)
    f.add_argument("--max-length", type=int, default=512)
    f.add_argument("--eval-fraction", type=float, default=0.02,
                   help="share of the distinct prompts whose answers are held out")
    f.add_argument("--log-every", type=int, default=20)
    f.add_argument("--checkpoint-every", type=int, default=200)
    f.add_argument("--save-dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--init", help="a trained drafter directory to go on training; its architecture and draft "
                   "vocabulary replace --head, --layers and --draft-vocab")
    f.add_argument("--resume", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        generate_data(args) if args.command == "data" else fit(args)
    except (LoadError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
