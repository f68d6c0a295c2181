"""The target distribution shared by every sampler: temperature, top-k, top-p.

AR sampling and ReDrafter's speculative sampling both read the LLM through
`target_log_probs`, so both sample from exactly the same distribution.

Settings whose float32 arithmetic would underflow are refused (SamplingError): a temperature
is 0 (greedy) or at least MIN_TEMP, so that logits / temp stays finite for any logit below
3.4e35 (float32's largest number times MIN_TEMP; 1e-38 made every logit inf), and it makes
no difference: at 1e-3 a logit gap of 0.1 is already a factor e^100, greedy in all but ties.
top_p is at least MIN_TOP_P: the most likely token's probability is at least 1 / vocab, so
any top_p up to 1e-6 keeps only that token (for vocabularies up to a million words), while
values below float32's smallest number (1e-46) became 0 and kept no token at all.
"""

import math
from dataclasses import dataclass

import mlx.core as mx

from ..errors import UsageError

MIN_TEMP = 1e-3  # a smaller temperature > 0 is refused (the module's docstring says why)
MIN_TOP_P = 1e-6


class SamplingError(UsageError):
    """A sampling setting out of range; `param` names it (temp, top_k, top_p)."""

    def __init__(self, param: str, requirement: str, value):
        super().__init__(f"{param} {requirement}, got {value}")
        self.param, self.requirement, self.value = param, requirement, value


@dataclass(frozen=True)
class SamplingParams:
    temp: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    def __post_init__(self):
        if not (self.temp == 0 or (math.isfinite(self.temp) and self.temp >= MIN_TEMP)):
            raise SamplingError("temp", f"must be 0 (greedy) or a finite number >= {MIN_TEMP:g}", self.temp)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError("top_k", "must be an integer >= 0", self.top_k)
        if not MIN_TOP_P <= self.top_p <= 1:  # False for NaN
            raise SamplingError("top_p", f"must be in [{MIN_TOP_P:g}, 1]", self.top_p)

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
