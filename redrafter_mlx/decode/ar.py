"""Auto-regressive decoding: the baseline, and what ReDrafter's output is checked against."""

import time
from typing import Callable, Iterator, List

import mlx.core as mx
import numpy as np

from ..model.llm import Model
from ..policy import DecodePolicy
from .sampling import SamplingParams, sample
from .stats import Stats
from .options import check_request
from .prefill import prefill
from .steps import CompiledSteps, ar_step, slot_inputs


def finish(tokens: List[int], produced: int, max_tokens: int, eos_ids) -> List[int]:
    """Cuts a step's tokens at max_tokens and just after the first EOS."""
    tokens = tokens[:max_tokens - produced]
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i + 1]
    return tokens


def generate_ar(model: Model, prompt: List[int], *, max_tokens: int, sampling: SamplingParams = SamplingParams(),
                eos_ids=(), policy: DecodePolicy = None, stats: Stats = None,
                progress: Callable[[int, int], None] = None, compiled: CompiledSteps = None) -> Iterator[List[int]]:
    """Auto-regressive decoding; yields one token per step (as a one-element list).

    Pipelined like mlx-lm: step n+1 is queued (`mx.async_eval`) before token n is read, so
    building the next graph overlaps the device's work. policy.compile_ar: each step is one
    compiled function over the cache's whole capacity (CPUs, where building the graph in
    Python costs ~9% of a step; on GPUs the plain step, whose fused one-query attention
    reads exactly the keys in use, was as fast: docs/perf.md). max_tokens is cut to the room
    that the prompt leaves in the model's context window; progress: prefill's."""
    max_tokens = check_request(prompt, max_tokens, model.config.context_window)
    policy = policy or DecodePolicy.for_device()
    stats = stats or Stats()
    cache = model.new_cache(fixed_shapes=policy.compile_ar or policy.fixed_shapes)
    step = None
    if policy.compile_ar:
        step = (compiled or CompiledSteps()).get((id(model), "ar", sampling), lambda: ar_step(model, sampling))
    start = time.perf_counter()
    token = sample(model.logits(prefill(model, cache, prompt, bucket=policy.prefill_bucket, progress=progress,
                                        chunk_size=policy.prefill_chunk)),
                   sampling)
    mx.eval(token)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start

    def following(token):
        if step is None:
            hidden = model(token[None], mx.array([[cache.length]]), cache)
            following_token = sample(model.logits(hidden[:, -1]), sampling)
        else:
            inputs = slot_inputs(cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
            following_token, keys, values = step(token[None], *inputs, *cache.arrays())
            cache.adopt(keys, values)
        cache.advance(1)
        return following_token

    start = time.perf_counter()
    while True:
        queued = following(token) if stats.generated_tokens + 1 < max_tokens else None
        if queued is not None:
            mx.async_eval(queued)
        chunk = finish(token.tolist(), stats.generated_tokens, max_tokens, eos_ids)
        stats.generated_tokens += len(chunk)
        stats.steps += 1
        stats.generation_time = time.perf_counter() - start
        yield chunk
        if stats.generated_tokens >= max_tokens or chunk[-1] in eos_ids:
            return
        token = queued
