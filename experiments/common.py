"""What the experiments share: their command line's model and drafter (a model name, by
default the default model, or MLX directories), chat prompts from a prompt set, and a timer
of a function evaluated alone."""

import argparse
import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from demos.prompts import load_prompts
from redrafter_mlx import models
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.text import encode_prompt


def parser(doc: str, drafter: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the module docstring as its help, --model and (with drafter)
    --drafter."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model name or an MLX model directory (default: smollm2-135m-instruct)")
    if drafter:
        parser.add_argument("--drafter", help="drafter directory (default: the named model's shipped drafter)")
    return parser


def load(args, drafter: bool = True):
    """(model directory, model, drafter or None) for the parsed --model and --drafter."""
    model_dir, drafter_dir = models.resolve(args.model, getattr(args, "drafter", None), need_drafter=drafter)
    model = load_model(model_dir)
    return model_dir, model, load_drafter(drafter_dir, model) if drafter else None


def chat_prompts(model_dir, prompt_set: str, count: int):
    """The first `count` prompts of a prompt set (mtbench, humaneval or a .jsonl file) as
    chat-template tokens, and the model's EOS ids."""
    tokenizer = load_tokenizer(model_dir)
    prompts = [encode_prompt(tokenizer, text) for text in load_prompts(prompt_set)[:count]]
    return prompts, set(tokenizer.eos_token_ids)


def timed(fn, repeats: int, warmup: int = 5) -> float:
    """Milliseconds per call of fn, each call's result evaluated, after `warmup` calls."""
    for _ in range(warmup):
        mx.eval(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    return (time.perf_counter() - start) / repeats * 1e3
