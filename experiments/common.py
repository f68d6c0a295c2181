"""What the experiments share: their command line's model and drafter (a model name, by
default the default model, or MLX directories) loaded as an Engine, chat prompts from a
prompt set, and timers of a function evaluated alone (its total time; its host time beside
it)."""

import argparse
import time
from typing import List, Tuple

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from demos.prompts import load_prompts
from redrafter_mlx import Engine
from redrafter_mlx.decode import prefill, tree_cache
from redrafter_mlx.model.kv_cache import ResidentCache


def parser(doc: str, drafter: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the module docstring as its help, --model and (with drafter)
    --drafter."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model name or an MLX model directory (default: smollm2-135m-instruct)")
    if drafter:
        parser.add_argument("--drafter", help="drafter directory (default: the named model's shipped drafter)")
    return parser


def add_prompt_flags(parser: argparse.ArgumentParser, count: int):
    """--prompts (a prompt set or a .jsonl file) and --num-prompts (default `count`)."""
    parser.add_argument("--prompts", default="mtbench", help="mtbench, humaneval or a .jsonl file")
    parser.add_argument("--num-prompts", type=int, default=count)


def load(args, drafter: bool = True) -> Engine:
    """The Engine of the parsed --model and (with drafter) --drafter, under this device's policy."""
    return Engine.load(args.model, getattr(args, "drafter", None), need_drafter=drafter)


def chat_prompts(engine: Engine, prompt_set: str, count: int) -> List[List[int]]:
    """The first `count` prompts of a prompt set (mtbench, humaneval or a .jsonl file) as
    chat-template tokens."""
    return [engine.encode(text) for text in load_prompts(prompt_set)[:count]]


def context_tokens(engine: Engine, count: int) -> List[int]:
    """A made-up prompt of `count` tokens inside the model's vocabulary, for a cache to hold."""
    return [((7 * i) % 1000 + 100) % engine.model.config.vocab_size for i in range(count)]


def resident_context(engine: Engine, prompt: List[int], rows: int, length: int, bucket: int = 1):
    """The prompt prefilled into a fixed-shape cache sized for trees of `rows` rows, kept as
    a ResidentCache with room for one tree of beams `length` long; -> (resident, the
    drafter's context after the prompt (1, context_size), the target's greedy next token (1,))."""
    model, drafter = engine.model, engine.drafter
    cache = tree_cache(model, rows, fixed_shapes=True)
    context = prefill(model, cache, prompt, bucket=bucket, taps=drafter.taps)
    resident = ResidentCache(cache, prompt)
    resident.make_room(rows, length)
    return resident, context, mx.argmax(model.logits(context), -1)


def timed_split(fn, repeats: int, warmup: int = 5) -> Tuple[float, float]:
    """(host, total) milliseconds per call of fn after `warmup` calls: host is the time to
    build the call's graph and hand it to the device (fn() and mx.async_eval), total the time
    until its result is evaluated. Where host is close to total, the part is bound by the
    host's per-operation cost; where it is far below, by the device's kernels."""
    for _ in range(warmup):
        mx.eval(fn())
    host = total = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        mx.async_eval(out)
        queued = time.perf_counter()
        mx.eval(out)
        host, total = host + queued - start, total + time.perf_counter() - start
    return host / repeats * 1e3, total / repeats * 1e3


def timed(fn, repeats: int, warmup: int = 5) -> float:
    """Milliseconds per call of fn, each call's result evaluated, after `warmup` calls."""
    return timed_split(fn, repeats, warmup)[1]
