"""Fitting drafters on token shards, the target frozen (`python -m redrafter_mlx.train fit`).

fit(plan, specs) fits every DrafterSpec on the same batches: the frozen target's features
(its costly part) are computed once per batch for all of them. Each process of a
distributed group fits the same drafters on its rows of every batch (training/distributed.py);
process 0 logs and saves. Checkpoints make a run resumable (FitPlan.resume); the final
drafter is written atomically with its training log and draft vocabulary.
"""

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..atomic import atomic_directory, check_output_dir
from ..errors import UsageError
from ..model import fingerprint
from ..model.config import ConfigError, DrafterConfig, ModelConfig
from ..model.draft_vocab import FILE as DRAFT_VOCAB_FILE, ROWS, choose_token_ids, read_ranked
from ..model.drafter import Drafter
from ..model.load import (DTYPES, LoadError, dequantize_layers, load_drafter, load_model, read_drafter_config,
                          read_model_config, save_module)
from .data import load_sequences, make_batches, split_by_prompt
from .distributed import gather, rows_of, total, wait_for_all, world
from .grow import check_growth, grow, grown_config
from .loss import drafter_loss, target_features, target_next_log_probs
from .progress import progress

RANKED_KEPT = 16384  # token ids listed in draft_vocab.json
QUANT_GROUP = 64  # --head-bits quantizes the head in groups of this many inputs


@dataclass(frozen=True)
class DrafterSpec:
    """One drafter to fit: where it goes and the settings `--also` may change."""

    out: str
    head: str = "own"  # own: Apple's layout, its own vocab head; target: on the target's frozen LM head
    layers: int = 2  # ResBlocks
    exit_dim: int = 0  # own head: width of the ResBlocks (0: 2 x hidden, Apple's layout)
    draft_vocab: int = 4096  # the most frequent answer tokens drafted (0: all)
    head_bits: int = 0  # own head: quantized to this many bits after training (0: off)
    distill: float = 0.0  # weight of the soft loss against the target's next-token distribution
    step_decay: float = 1.0  # drafting step i's loss weighs step_decay ** i (rescaled to sum to K)
    lr: float = 1e-3  # peak learning rate (10% linear warm-up, then cosine decay)

    def check(self):
        """UsageError naming the flag of the first setting out of range."""
        if not self.out:
            raise UsageError("--out is empty")
        check_output_dir(Path(self.out), "--out")
        if self.layers < 0 or self.exit_dim < 0:
            raise UsageError(f"--layers and --exit-dim must be >= 0, got {self.layers} and {self.exit_dim}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.draft_vocab <= RANKED_KEPT:
            raise UsageError(f"--draft-vocab must be in 0..{RANKED_KEPT}, got {self.draft_vocab}")
        if self.head not in ("own", "target"):
            raise UsageError(f"--head must be own or target, got {self.head!r}")
        if self.head_bits not in (0, 4, 8) or (self.head_bits and self.head != "own"):
            raise UsageError("--head-bits (4 or 8) quantizes an own head (--head own)")
        if not 0 <= self.distill <= 1:
            raise UsageError(f"--distill must be in [0, 1], got {self.distill}")
        if not 0 < self.step_decay <= 1:
            raise UsageError(f"--step-decay must be in (0, 1], got {self.step_decay}")

    def varied(self, text: str) -> "DrafterSpec":
        """This spec with --also's overrides, e.g. "out=d2,head=target,draft_vocab=16384"."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}  # str, int or float
        changes = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in kinds or not value:
                raise UsageError(f"--also: expected KEY=VALUE with KEY in {', '.join(kinds)}, got {item!r}")
            try:
                changes[key] = kinds[key](value)
            except ValueError:
                raise UsageError(f"--also: {key} must be {kinds[key].__name__}, got {value!r}") from None
        return replace(self, **changes)


VARIANT_KEYS = tuple(f.name for f in fields(DrafterSpec))  # what --also may change


@dataclass(frozen=True)
class FitPlan:
    """What the drafters of one fit share: the target, the data, the schedule, the run."""

    model: str  # the target's MLX directory
    data: Tuple[str, ...]
    eval_data: Tuple[str, ...] = ()  # held-out data (empty: eval_fraction of the prompts of data)
    eval_fraction: float = 0.02
    dtype: str = "float32"  # the frozen target's dtype while computing its features
    context_layers: Tuple[int, ...] = ()  # target layers the drafter reads besides the last (fresh or grown drafters)
    draft_steps: int = 4  # K = beam length - 1
    epochs: int = 2
    max_steps: int = 0  # stop after this many steps, the schedule fitted to them (0: all epochs)
    batch_tokens: int = 8192
    max_length: int = 512
    log_every: int = 20
    checkpoint_every: int = 200
    save_dtype: str = "float16"
    seed: int = 0
    init: Optional[str] = None  # a trained drafter to go on from (its architecture and draft vocabulary)
    grow: bool = False  # with init: add ResBlocks up to each spec's layers and read context_layers too (grow.py)
    resume: bool = False

    def check(self):
        """UsageError naming the flag of the first setting out of range (the command line's
        parser enforces the same limits)."""
        for name in ("draft_steps", "epochs", "batch_tokens", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.max_length < 3:
            raise UsageError(f"--max-steps must be >= 0 and --max-length >= 3, got {self.max_steps} and "
                             f"{self.max_length}")
        if not 0 <= self.eval_fraction <= 0.5:
            raise UsageError(f"--eval-fraction must be in [0, 0.5], got {self.eval_fraction}")
        for flag, dtype in (("--dtype", self.dtype), ("--save-dtype", self.save_dtype)):
            if dtype not in DTYPES:
                raise UsageError(f"{flag} must be one of {', '.join(DTYPES)}, got {dtype!r}")

    def record(self, spec: DrafterSpec) -> dict:
        """The settings a drafter's training.json records."""
        return {"command": "fit", **asdict(self), **asdict(spec)}


def read_data(directories: Sequence[str], vocab_size: int, flag: str) -> list:
    """(sequence, prompt length) pairs of the shards in directories; UsageError naming `flag`
    when a token id is outside the model's vocabulary."""
    sequences = list(load_sequences(*directories, flag=flag))
    largest = max((int(seq.max()) for seq, _ in sequences if len(seq)), default=0)
    if largest >= vocab_size:
        raise UsageError(f"{flag} {' '.join(directories)}: token id {largest} is outside the model's vocabulary "
                         f"({vocab_size}): data of another model?")
    return sequences


def ranked_answer_tokens(sequences, vocab_size: int) -> list:
    """Token ids by how often they occur in the answers, most frequent first (at most RANKED_KEPT)."""
    answers = [seq[prompt_length:] for seq, prompt_length in sequences]
    counts = np.bincount(np.concatenate(answers), minlength=vocab_size)
    return np.argsort(-counts, kind="stable")[:RANKED_KEPT].tolist()


def new_drafter(model, spec: DrafterSpec, token_ids, context_layers: Sequence[int]) -> Drafter:
    """A fresh drafter; token_ids (K,): its draft vocabulary (None: all tokens), which an own
    head then holds only the rows of."""
    hidden = model.config.hidden_size
    size = 0 if token_ids is None else token_ids.shape[0]
    config = DrafterConfig.from_dict(dict(  # from_dict: validated as a loaded config is
        hidden_size=hidden, vocab_size=model.config.vocab_size,
        exit_dim=hidden if spec.head == "target" else spec.exit_dim or 2 * hidden, num_draft_layers=spec.layers,
        rnn=True, head=spec.head, draft_vocab_size=size, head_rows=size if spec.head == "own" else 0,
        context_layers=list(context_layers)))
    config.check_matches(model.config)
    drafter = Drafter(config)
    drafter.bind_target(model)
    if token_ids is not None:
        drafter.restrict_vocab(token_ids)
    return drafter


def initial_drafter(model, spec: DrafterSpec, plan: FitPlan, train) -> Tuple[Drafter, list]:
    """-> (drafter, ranked token ids): a fresh drafter whose draft vocabulary is the most
    frequent answer tokens of `train`, or (plan.init) a trained one to go on from, with its
    own architecture and draft vocabulary (head, layers, exit_dim, draft_vocab and context
    layers do not apply; with plan.grow, layers and context layers add to its own, grow.py); a
    quantized head is made dense to be trained (head_bits quantizes it again when saved)."""
    vocab = model.config.vocab_size
    if plan.init:
        drafter = load_drafter(plan.init, model, dtype=mx.float32)
        dequantize_layers(drafter)
        drafter.config.extra.pop("quantization", None)
        if plan.grow:
            drafter = grow(drafter, model, layers=spec.layers, context_layers=plan.context_layers)
        if not (Path(plan.init) / DRAFT_VOCAB_FILE).is_file():  # a drafter of all tokens (e.g. Apple's, converted)
            return drafter, ranked_answer_tokens(train, vocab)
        return drafter, read_ranked(plan.init, vocab)  # checked now; saved as it is
    ranked = ranked_answer_tokens(train, vocab)
    reduced = 0 < spec.draft_vocab < vocab
    token_ids = choose_token_ids(ranked, spec.draft_vocab, model.config.eos_ids) if reduced else None
    return new_drafter(model, spec, token_ids, plan.context_layers), ranked


def schedule(lr: float, total_steps: int):
    """Linear warm-up over 10% of the steps to lr, then cosine decay."""
    warmup = max(1, int(0.1 * total_steps))
    return optim.join_schedules([optim.linear_schedule(0.0, lr, warmup),
                                 optim.cosine_decay(lr, max(1, total_steps - warmup))], [warmup])


def evaluate(model, drafter, batches, steps: int, group=None) -> List[float]:
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
    """-> (step, training log so far); UsageError when the checkpoint is of another drafter
    (other settings than this fit's)."""
    saved_config = json.loads((path / "config.json").read_text())
    config = json.loads(json.dumps(drafter.config.to_dict()))  # as saved (lists, not tuples)
    differ = sorted(key for key in config.keys() | saved_config.keys() if config.get(key) != saved_config.get(key))
    if differ:
        raise UsageError(f"--resume: {path} holds a drafter with other settings ({', '.join(differ)}); "
                         "resume with the settings it was started with, or drop --resume")
    drafter.load_weights(list(mx.load(str(path / "model.safetensors")).items()))
    state = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(state.items()))
    saved = json.loads((path / "step.json").read_text())
    return saved["step"], saved.get("log", [])


class Trainee:
    """One drafter being fitted: its spec, optimizer, checkpoint and log; each process of the
    group fits the same drafter on its rows of every batch."""

    def __init__(self, model, spec: DrafterSpec, plan: FitPlan, train, total_steps: int,
                 group: mx.distributed.Group):
        self.spec, self.group = spec, group
        self.drafter, self.ranked = initial_drafter(model, spec, plan, train)
        self.optimizer = optim.AdamW(learning_rate=schedule(spec.lr, total_steps), weight_decay=0.0)
        self.checkpoint = Path(spec.out + ".checkpoint")
        resume = plan.resume and self.checkpoint.exists()
        self.step, self.log = load_checkpoint(self.checkpoint, self.drafter, self.optimizer) if resume else (0, [])
        steps = gather(self.step, group)
        if len(set(steps)) > 1:
            raise UsageError(f"--resume: the processes found {self.checkpoint} at different steps ({steps}); "
                             "every process needs the same one (a shared disk, or a copy)")

        def loss_fn(hidden, embeddings, tokens, mask, next_log_p):
            next_probs = mx.exp(self.drafter.from_full_vocab(next_log_p)) if spec.distill else None
            return drafter_loss(self.drafter, hidden, embeddings, tokens, mask, plan.draft_steps, next_probs,
                                spec.distill, group, spec.step_decay)[0]

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
            print(json.dumps({"out": self.spec.out, **entry}), file=sys.stderr)


def check_specs(specs: Sequence[DrafterSpec]):
    """UsageError for a spec out of range or two specs writing the same directory."""
    for spec in specs:
        spec.check()
    outs = [spec.out for spec in specs]
    if len(set(outs)) < len(outs):
        raise UsageError(f"--out and --also name the same output twice: {', '.join(outs)}")


def check_fit(plan: FitPlan, specs: Sequence[DrafterSpec]) -> ModelConfig:
    """UsageError for settings that cannot fit, before any data or weights load; -> the
    target's config."""
    plan.check()
    check_specs(specs)
    model_config = read_model_config(plan.model)
    init = None
    if plan.grow and not plan.init:
        raise UsageError("--grow grows the drafter of --init: give --init DIR")
    if plan.init:
        try:
            init = read_drafter_config(plan.init)
            init.check_matches(model_config)
        except ConfigError as error:
            raise UsageError(f"--init {plan.init}: does not fit the model: {error}") from None
        if plan.grow:
            try:
                grown_config(init, init.num_draft_layers, plan.context_layers).check_matches(model_config)
            except ConfigError as error:
                raise UsageError(f"--grow --context-layers {','.join(map(str, plan.context_layers))}: {error}") from None
    for spec in specs:
        if plan.grow:
            check_growth(init, spec.layers)
        check_head_bits(spec, init, model_config.hidden_size)
        check_out(Path(spec.out), plan)
    return model_config


def check_out(out: Path, plan: FitPlan):
    """UsageError when saving a drafter at `out` would replace one of the fit's inputs or a
    directory that holds something other than a drafter (a drafter is replaced as a whole)."""
    inputs = [("--data", d) for d in plan.data] + [("--eval-data", d) for d in plan.eval_data]
    inputs += [("--model", plan.model)] + ([("--init", plan.init)] if plan.init else [])
    for flag, path in inputs:
        if out.resolve() in (Path(path).resolve(), *Path(path).resolve().parents):
            raise UsageError(f"--out {out}: saving there would replace {flag} {path}; give another --out")
    if out.is_dir() and any(out.iterdir()):
        try:
            read_drafter_config(out)
        except LoadError:
            raise UsageError(f"--out {out}: exists and is not a drafter directory; give another --out") from None


def check_head_bits(spec: DrafterSpec, init: Optional[DrafterConfig], hidden_size: int):
    """head_bits quantizes an own head whose input width is a multiple of the quantization
    group: the head of --init where given, else the spec's."""
    if not spec.head_bits:
        return
    head, width = (init.head, init.exit_dim) if init else (spec.head, spec.exit_dim or 2 * hidden_size)
    if head != "own":  # (a spec's own head is checked by DrafterSpec.check)
        raise UsageError(f"--head-bits {spec.head_bits}: the --init drafter uses the target's head, nothing to quantize")
    if width % QUANT_GROUP:
        raise UsageError(f"--head-bits {spec.head_bits}: the head's input width {width} is not a multiple of "
                         f"{QUANT_GROUP} (--exit-dim)")


def fit(plan: FitPlan, specs: Sequence[DrafterSpec]):
    """Fits every spec's drafter on the same batches and saves each to its `out`."""
    vocab_size = check_fit(plan, specs).vocab_size
    sequences = read_data(plan.data, vocab_size, "--data")
    valid = read_data(plan.eval_data, vocab_size, "--eval-data") if plan.eval_data else None
    rng = np.random.default_rng(plan.seed)
    rng.shuffle(sequences)
    train, valid = (sequences, valid) if valid else split_by_prompt(sequences, plan.eval_fraction)
    if not train:
        raise UsageError(f"--data: every sequence answers a held-out prompt ({len(valid)} sequences, "
                         "too few distinct prompts); give more data or --eval-data")
    model = load_model(plan.model, DTYPES[plan.dtype])
    model.freeze()
    group = world()
    steps_per_epoch = sum(1 for _ in make_batches(train, plan.batch_tokens, plan.max_length, rng))
    total_steps = min(steps_per_epoch * plan.epochs, plan.max_steps or math.inf)
    if group.rank() == 0:
        print(json.dumps({"train_sequences": len(train), "held_out_sequences": len(valid),
                          "steps_per_epoch": steps_per_epoch, "epochs": plan.epochs}), file=sys.stderr)
    trainees = []
    for spec in specs:
        mx.random.seed(plan.seed)  # each initialised as if fitted alone
        trainees.append(Trainee(model, spec, plan, train, total_steps, group))
    valid_batches = list(make_batches(valid, plan.batch_tokens, plan.max_length, np.random.default_rng(0)))
    start = time.perf_counter()
    ticks = iter(progress(range(total_steps), total_steps, "training", shown=group.rank() == 0))
    for epoch in range(plan.epochs):
        batches = make_batches(train, plan.batch_tokens, plan.max_length, rng)
        trained = fit_epoch(model, trainees, plan, batches, epoch * steps_per_epoch, total_steps, ticks, start)
        for trainee in [t for t in trainees if t in trained]:
            accuracy = evaluate(model, trainee.drafter, valid_batches, plan.draft_steps, group)
            trainee.record({"epoch": epoch + 1, "step": trainee.step, "held_out_top1_per_step": accuracy})
    for trainee in trainees:
        finish(model, trainee, plan, valid_batches, time.perf_counter() - start)
    wait_for_all(group)  # every process returns once the drafters are saved


def fit_epoch(model, trainees: List[Trainee], plan: FitPlan, batches, first_step: int, total_steps: int, ticks,
              start: float) -> set:
    """One epoch's batches (numbered from first_step) for the trainees that have not done them
    yet (a resumed one skips the same batches); -> those that fitted any."""
    group = trainees[0].group
    taps = trainees[0].drafter.taps
    distill = any(t.spec.distill for t in trainees)
    trained = set()
    for step, batch in enumerate(batches, first_step):
        next(ticks, None)
        if step >= total_steps:  # max_steps: the schedule ended inside this epoch
            break
        due = [t for t in trainees if t.step <= step]
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
            if trainee.step % plan.log_every == 0:
                loss = total(loss, group) / group.size()
                trainee.record({"step": trainee.step, "loss": round(loss.item(), 4),
                                "seconds": round(time.perf_counter() - start, 1)})
            if trainee.step % plan.checkpoint_every == 0 and group.rank() == 0:
                save_checkpoint(trainee.checkpoint, trainee.drafter, trainee.optimizer, trainee.step, trainee.log)
    return trained


def finish(model, trainee: Trainee, plan: FitPlan, valid_batches, seconds: float):
    """Quantizes the head (head_bits, evaluated again), then process 0 saves the drafter and
    drops its checkpoint."""
    if trainee.spec.head_bits:
        quantize_head(trainee.drafter, trainee.spec.head_bits)
        accuracy = evaluate(model, trainee.drafter, valid_batches, plan.draft_steps, trainee.group)
        trainee.record({"head_bits": trainee.spec.head_bits, "held_out_top1_per_step": accuracy})
    if trainee.group.rank() == 0:
        save_drafter(trainee, plan, seconds)
        shutil.rmtree(trainee.checkpoint, ignore_errors=True)


def quantize_head(drafter: Drafter, bits: int, group_size: int = QUANT_GROUP):
    """Quantizes an own head's vocab projection in place (the config records it, so that
    load_drafter quantizes that layer again before loading the weights)."""
    drafter.lm_head[-1] = drafter.lm_head[-1].to_quantized(group_size=group_size, bits=bits)
    drafter.config.extra["quantization"] = {"group_size": group_size, "bits": bits}


def draft_vocab_record(trainee: Trainee, plan: FitPlan) -> dict:
    """draft_vocab.json: the ranked answer tokens (those of --init's file where it has one,
    as they were written, whatever data they were ranked on) and, for a head holding only
    its draft vocabulary's rows, the tokens of those rows."""
    if plan.init and (Path(plan.init) / DRAFT_VOCAB_FILE).is_file():
        record = json.loads((Path(plan.init) / DRAFT_VOCAB_FILE).read_text())
    else:
        source = f"answer tokens of the training data ({', '.join(plan.data)}), most frequent first"
        record = {"source": source, "token_ids": trainee.ranked}
    if trainee.drafter.config.head_rows:
        record[ROWS] = np.array(trainee.drafter.draft_tokens).tolist()
    return record


def save_drafter(trainee: Trainee, plan: FitPlan, seconds: float):
    """Atomic save of the final drafter (in plan.save_dtype), its training log, its draft
    vocabulary (draft_vocab_record) and target.json."""
    def cast(p):  # float weights only: a quantized head's packed weights stay integers
        return p.astype(DTYPES[plan.save_dtype]) if mx.issubdtype(p.dtype, mx.floating) else p

    drafter = trainee.drafter
    drafter.update(tree_map(cast, drafter.parameters()))
    with atomic_directory(Path(trainee.spec.out), force=True) as tmp:
        save_module(drafter, drafter.config.to_dict(), tmp)
        (tmp / DRAFT_VOCAB_FILE).write_text(json.dumps(draft_vocab_record(trainee, plan)))
        record = {"args": plan.record(trainee.spec), "seconds": round(seconds, 1), "log": trainee.log}
        (tmp / "training.json").write_text(json.dumps(record, indent=2))
        fingerprint.write(tmp, plan.model)  # target.json: the model it fits, in any form
