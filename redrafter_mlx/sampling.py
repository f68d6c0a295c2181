"""The target distribution shared by every sampler: temperature, top-k, top-p.

AR sampling and ReDrafter's speculative sampling both read the LLM through
`target_log_probs`, so both sample from exactly the same distribution.
"""

import math
from dataclasses import dataclass

import mlx.core as mx

from .errors import UsageError


@dataclass(frozen=True)
class SamplingParams:
    temp: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    def __post_init__(self):
        if not math.isfinite(self.temp) or self.temp < 0:
            raise UsageError(f"--temp must be a finite number >= 0, got {self.temp}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise UsageError(f"--top-k must be an integer >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:  # False for NaN
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temp == 0


def log_softmax(x: mx.array) -> mx.array:
    """Normalised log-probs over the last axis."""
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


def target_log_probs(logits: mx.array, params: SamplingParams) -> mx.array:
    """logits (..., V) -> log-probs (..., V) of the sampling distribution (-inf outside it)."""
    log_probs = log_softmax(logits.astype(mx.float32) / params.temp)
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = mx.sort(log_probs, axis=-1)[..., -params.top_k][..., None]
        log_probs = mx.where(log_probs >= kth, log_probs, -mx.inf)
    if params.top_p < 1:
        order = mx.argsort(-log_probs, axis=-1)
        sorted_probs = mx.exp(mx.take_along_axis(log_probs, order, axis=-1))
        mass_before = mx.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < params.top_p  # the smallest prefix reaching top_p
        keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
        log_probs = mx.where(keep, log_probs, -mx.inf)
    return log_softmax(log_probs)


def sample(logits: mx.array, params: SamplingParams) -> mx.array:
    """logits (..., V) -> tokens (...) int32: argmax when greedy, else a draw."""
    if params.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    return mx.random.categorical(target_log_probs(logits, params), axis=-1).astype(mx.int32)
