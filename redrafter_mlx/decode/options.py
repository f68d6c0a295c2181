"""What a request asks of the decoder (DecodeOptions) and the one check of a request."""

from dataclasses import dataclass
from typing import List

from .beam_search import BeamShape
from ..errors import UsageError
from .lookup import MAX_MATCH
from .sampled_drafts import METHODS
from .sampling import SamplingParams

MODES = ("redrafter", "ar")
LOOKUP_MIN_MATCH = 1  # lookup.py: ~3% more tokens per step than 2 on code and chat; on CPUs 3.5% faster on
# code, chat within 1% (2026-12-07; docs/perf.md); no extra rows on GPUs, whose trees always hold the lookup beam
SAMPLED_DRAFTS = "iid"  # sampled_drafts.py: how drafts are drawn when sampling; accepted more than rsd-s at
# widths 2 and 8 on an H100 and faster on the CPU (Qwen2.5-Coder-1.5B, temperature 1.0; docs/perf.md)


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: ReDrafter or AR (mode), the beam shape, the sampling settings, the
    lookup beam's minimum match (greedy only; 0: off) and how sampled drafts are drawn
    (sampling only: sampled_drafts.METHODS). Errors name the field, not a flag."""

    mode: str = "redrafter"
    beam: BeamShape = BeamShape()
    sampling: SamplingParams = SamplingParams()
    lookup: int = LOOKUP_MIN_MATCH
    sampled_drafts: str = SAMPLED_DRAFTS

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.lookup, int) or not 0 <= self.lookup <= MAX_MATCH:
            raise UsageError(f"lookup (the lookup beam's minimum match) must be an integer in 0..{MAX_MATCH} (the "
                             f"longest suffix it looks for), got {self.lookup!r}")
        if self.sampled_drafts not in METHODS:
            raise UsageError(f"sampled_drafts must be one of {', '.join(METHODS)}, got {self.sampled_drafts!r}")
        if self.beam.nodes and not self.sampling.greedy:
            raise UsageError(f"beam {self.beam}: a tree of the best nodes is for greedy decoding (temp 0): sampled "
                             "drafts left out of the tree would bias the output")

    @property
    def lookup_match(self) -> int:
        """The lookup beam's minimum match where it applies (greedy decoding), else 0."""
        return self.lookup if self.sampling.greedy else 0


def max_tokens_in_window(prompt_length: int, max_tokens: int, window: int) -> int:
    """max_tokens cut to the room that a prompt of prompt_length tokens leaves in a context
    window of `window` positions (the model's ModelConfig.context_window); UsageError when the
    prompt leaves none."""
    if prompt_length >= window:
        raise UsageError(f"the prompt is {prompt_length} tokens and the model's context window "
                         f"{window}: no room to generate; shorten the prompt")
    return min(max_tokens, window - prompt_length)


def check_request(prompt: List[int], max_tokens: int, window: int) -> int:
    """Checks a request once; returns max_tokens cut to the room the prompt leaves in a
    context window of `window` positions (the model's ModelConfig.context_window)."""
    if not prompt:
        raise UsageError("the prompt is empty")
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be >= 1, got {max_tokens}")
    return max_tokens_in_window(len(prompt), max_tokens, window)
