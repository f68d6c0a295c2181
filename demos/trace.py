"""Per-token timestamps of one generation, the raw material of the race replays."""

import time
from dataclasses import dataclass, field
from typing import Iterable, List

from redrafter_mlx.text import detokenize


@dataclass
class Event:
    seconds: float  # since the request (prefill included)
    text: str  # all text so far
    tokens: int  # tokens so far
    steps: int  # decode steps so far


@dataclass
class Trace:
    name: str
    events: List[Event] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.events[-1].seconds if self.events else 0.0

    @property
    def tokens(self) -> int:
        return self.events[-1].tokens if self.events else 0

    def at(self, seconds: float) -> Event:
        """The last event at or before `seconds` (an empty one before the first)."""
        shown = Event(0.0, "", 0, 0)
        for event in self.events:
            if event.seconds > seconds:
                break
            shown = event
        return shown

    def to_dict(self) -> dict:
        return {"name": self.name, "events": [[round(e.seconds, 4), e.text, e.tokens, e.steps]
                                              for e in self.events]}


def record(name: str, chunks: Iterable[List[int]], tokenizer, eos_ids) -> Trace:
    """Consumes a decode generator, timestamping the text after every step."""
    start = time.perf_counter()
    trace, tokens, steps = Trace(name), 0, 0
    detokenizer = tokenizer.detokenizer
    for chunk in detokenize(chunks, detokenizer, eos_ids):
        tokens, steps = tokens + len(chunk), steps + 1
        trace.events.append(Event(time.perf_counter() - start, detokenizer.text, tokens, steps))
    if trace.events:
        trace.events[-1].text = detokenizer.text  # after finalize
    return trace
