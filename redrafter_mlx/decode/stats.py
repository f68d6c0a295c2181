"""Generation statistics: throughput, tokens per step, acceptance, time per phase of a step."""

import time
from collections import Counter
from dataclasses import dataclass, field

import mlx.core as mx


@dataclass
class Stats:
    """Filled by the decode loops. Phase times are measured only when `profile` is set,
    because measuring them needs an extra evaluation (a device sync) per phase."""

    profile: bool = False
    prompt_tokens: int = 0
    prompt_time: float = 0.0
    generated_tokens: int = 0
    generation_time: float = 0.0
    steps: int = 0
    accepted_histogram: Counter = field(default_factory=Counter)  # drafts accepted per step
    phase_time: Counter = field(default_factory=Counter)  # seconds per phase of a ReDrafter step (profile):
    #   tree (packing the beams, host), step (verify, accept and next draft: one device function), commit
    draft_length: int = 0  # L - 1, drafted tokens per beam
    lookup_steps: int = 0  # steps whose lookup beam (lookup.py) was accepted furthest
    _mark: float = 0.0

    def start_phase(self):
        self._mark = time.perf_counter()

    def end_phase(self, name: str, *arrays):
        """Adds the time since the last mark to `name` (evaluating `arrays` first)."""
        if self.profile:
            mx.eval(*arrays)
            now = time.perf_counter()
            self.phase_time[name] += now - self._mark
            self._mark = now

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_time if self.prompt_time else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_time if self.generation_time else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Tokens committed per target forward (AR: 1)."""
        total = sum((n + 1) * c for n, c in self.accepted_histogram.items())
        return total / self.steps if self.steps else 0.0

    @property
    def acceptance(self) -> float:
        """Fraction of drafted positions accepted on the chosen beam."""
        if not self.steps or not self.draft_length:
            return 0.0
        accepted = sum(n * c for n, c in self.accepted_histogram.items())
        return accepted / (self.steps * self.draft_length)

    def summary(self) -> str:
        lines = [
            f"Prefill: {self.prompt_tokens} prompt tokens in {self.prompt_time:.2f} s, {self.prompt_tps:.1f} tokens/s",
            f"Generation: {self.generated_tokens} tokens, {self.generation_tps:.1f} tokens/s",
        ]
        if self.draft_length:
            hist = " ".join(f"{n}:{self.accepted_histogram[n]}" for n in range(self.draft_length + 1))
            lines.append(f"Steps: {self.steps}, {self.tokens_per_step:.2f} tokens/step, "
                         f"acceptance {self.acceptance:.1%} (accepted drafts per step {hist})")
        if self.lookup_steps:
            lines.append(f"Lookup beam accepted furthest in {self.lookup_steps} steps")
        if self.phase_time:
            lines.append("Time: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.phase_time.items()))
        lines.append(f"Peak memory: {mx.get_peak_memory() / 1e9:.3f} GB")
        return "\n".join(lines)
