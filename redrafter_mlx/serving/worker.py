"""The server's generation thread: one model on one device decodes one request at a time.

Requests wait in a bounded FIFO queue (a full queue is refused, the caller answers 429).
Every MLX call runs on this one thread (MLX arrays and streams are not meant to be shared
between threads); text goes back to the request's coroutine through its asyncio queue
(`loop.call_soon_threadsafe`). A request that is cancelled (its client went away) or runs
past its time limit stops being advanced: between prefill chunks (the decode generators'
progress callback raises) and between decoding steps.
"""

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import mlx.core as mx

from ..decode import DecodeOptions
from ..decode.beam_search import BeamShape
from ..engine import Engine
from ..decode.sampling import SamplingParams
from ..decode.stats import Stats
from ..text import StopStrings, keeping_leading_space

log = logging.getLogger("redrafter_mlx.server")


class QueueFull(Exception):
    """The queue holds max_queue waiting requests already."""


class _Stopped(Exception):
    """Raised from the prefill's progress callback: the job was cancelled or is past its deadline."""


@dataclass
class Result:
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens or the time limit)
    prompt_tokens: int
    completion_tokens: int
    steps: int
    seconds: float  # decoding it, from its first step (prefill) to its last
    timed_out: bool = False
    prefill_seconds: float = 0.0  # 0: its prefill was stopped
    mode: str = "redrafter"  # how it was decoded ("ar": without the drafter)

    @property
    def tokens_per_step(self) -> float:
        return self.completion_tokens / self.steps if self.steps else 0.0


@dataclass
class Job:
    """One request's generation. Events on `events`: ("text", str) per step with new text,
    then ("done", Result) or ("error", message)."""

    prompt: List[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: Tuple[str, ...] = ()
    seed: Optional[int] = None
    loop: asyncio.AbstractEventLoop = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self):
        self.cancelled.set()

    def emit(self, kind: str, value):
        if self.loop is None or (kind == "text" and not value):
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed (server shutting down)
            self.cancel()


class Worker:
    """The generation thread and its queue. submit() is called from the event loop."""

    def __init__(self, engine: Engine, options: DecodeOptions, *, max_queue: int, time_limit: float,
                 warmup: bool = True, ar_when_sampling: bool = False, greedy_beam: BeamShape = None,
                 sampled_beam: BeamShape = None):
        self.engine, self.options = engine, options  # options: every request's, but for its sampling settings
        # and beam: greedy requests decode with greedy_beam, sampled ones with sampled_beam (default: options.beam)
        self.greedy_beam, self.sampled_beam = greedy_beam or options.beam, sampled_beam or options.beam
        self.ar_when_sampling = ar_when_sampling  # sampled requests decode auto-regressively (flags.ar_when_sampling)
        self.warmup = warmup  # decode two tokens first (compiled steps, first allocations)
        self.time_limit = time_limit
        self.jobs = queue.Queue(maxsize=max_queue)
        self.max_queue = max_queue
        self.running = None
        self.counts = dict(completed=0, cancelled=0, rejected=0, errors=0, timed_out=0)
        self.peak_queued = 0
        self.started = None  # when the running request started (time.monotonic)
        self.prompt_seconds = 0.01  # per prompt token: running means, for the expected work ahead
        self.token_seconds = 0.05  # per completion token
        self.ready = threading.Event()  # the warm-up is done
        self.thread = threading.Thread(target=self._serve, name="redrafter-generation", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        """Cancels the running request; the thread stays, waiting for jobs that will not come
        (a thread that has run MLX work must not end before the process: MLX aborts it)."""
        if self.running is not None:
            self.running.cancel()

    def wait_idle(self, seconds: float):
        """Waits up to `seconds` for the thread to finish its warm-up and running request."""
        deadline = time.monotonic() + seconds
        while (self.running is not None or not self.ready.is_set()) and time.monotonic() < deadline:
            time.sleep(0.01)

    def submit(self, job: Job):
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.counts["rejected"] += 1
            raise QueueFull from None
        self.peak_queued = max(self.peak_queued, self.jobs.qsize())

    def expected_seconds(self, job: Job) -> float:
        """A request's expected time: its prompt and max_tokens at the measured rates, at most the
        time limit."""
        seconds = len(job.prompt) * self.prompt_seconds + job.max_tokens * self.token_seconds
        return min(seconds, self.time_limit) if self.time_limit else seconds

    def running_seconds_left(self) -> float:
        running, started = self.running, self.started
        if running is None or started is None:
            return 0.0
        return max(0.0, self.expected_seconds(running) - (time.monotonic() - started))

    def retry_after(self) -> int:
        """Seconds until a queue slot is expected to be free: the running request's expected
        rest (its end starts the first queued request, which frees its slot)."""
        return max(1, math.ceil(self.running_seconds_left()))

    def work_ahead(self) -> float:
        """Expected seconds before a request queued now would start."""
        with self.jobs.mutex:  # the generation thread takes jobs meanwhile
            queued = list(self.jobs.queue)
        return self.running_seconds_left() + sum(self.expected_seconds(job) for job in queued
                                                 if not job.cancelled.is_set())

    def health(self) -> dict:
        return dict(status="ok", mode=self.options.mode, running=self.running is not None, queued=self.jobs.qsize(),
                    max_queue=self.max_queue, peak_queued=self.peak_queued, work_ahead_s=round(self.work_ahead(), 2),
                    **self.counts)

    def _serve(self):
        if self.warmup:
            self._run(Job(prompt=[0, 1], max_tokens=2, loop=None), report=False)
        self.ready.set()
        while True:
            job = self.jobs.get()
            if job.cancelled.is_set():  # its client left while it waited
                self.counts["cancelled"] += 1
                continue
            self.running, self.started = job, time.monotonic()
            self._run(job)
            self.running = self.started = None

    def _run(self, job: Job, report: bool = True):
        try:
            result = self._generate(job, time.monotonic() + self.time_limit if self.time_limit else None)
        except Exception as error:  # a bug or a device error: this request fails, the server goes on
            log.exception("generation failed")
            self.counts["errors"] += 1
            if report:
                job.emit("error", f"generation failed: {type(error).__name__}")
            return
        if not report:
            return
        self._measure(result)
        self.counts["cancelled" if job.cancelled.is_set() else "completed"] += 1
        self.counts["timed_out"] += result.timed_out
        job.emit("done", result)

    def _generate(self, job: Job, deadline: Optional[float]) -> Result:
        """Decodes the job step by step, emitting the text of each step; stops at EOS, a stop
        string, max_tokens, the deadline or a cancellation (also between prefill chunks)."""
        if job.seed is not None:
            mx.random.seed(job.seed)
        stats, start = Stats(), time.perf_counter()
        texts = StepTexts(self.engine.tokenizer, job.stop)

        def past_deadline() -> bool:
            return deadline is not None and time.monotonic() > deadline

        def progress(done: int, total: int):
            if job.cancelled.is_set() or past_deadline():
                raise _Stopped

        options = self.options_for(job.sampling)
        chunks = self.engine.generate(job.prompt, max_tokens=job.max_tokens, stats=stats, progress=progress,
                                      options=options)
        timed_out = False
        try:
            for chunk in chunks:
                job.emit("text", texts.add(chunk))
                if texts.finish_reason or job.cancelled.is_set():
                    break
                if past_deadline():
                    timed_out = True
                    job.emit("text", texts.finish())
                    break
            else:
                job.emit("text", texts.finish())
        except _Stopped:  # during the prefill: no text yet
            timed_out = not job.cancelled.is_set()
        chunks.close()
        return Result(texts.finish_reason or "length", len(job.prompt), texts.tokens, stats.steps,
                      time.perf_counter() - start, timed_out, stats.prompt_time, options.mode)

    def options_for(self, sampling: SamplingParams) -> DecodeOptions:
        """A request's options: the server's, with its sampling settings and the beam for them
        (a sampled request verifies every beam token: a tree of the best nodes is for greedy decoding)."""
        beam = self.greedy_beam if sampling.greedy else replace(self.sampled_beam, nodes=0)
        options = replace(self.options, sampling=sampling, beam=beam)
        return replace(options, mode="ar") if self.ar_when_sampling and not sampling.greedy else options

    def _measure(self, result: "Result"):
        """Updates the running means of the time per prompt token and per completion token."""
        if result.prefill_seconds:
            self.prompt_seconds = 0.8 * self.prompt_seconds + 0.2 * result.prefill_seconds / result.prompt_tokens
        if result.completion_tokens:
            decoding = result.seconds - result.prefill_seconds
            self.token_seconds = 0.8 * self.token_seconds + 0.2 * decoding / result.completion_tokens


class StepTexts:
    """Accepted tokens -> text to emit, token by token, every character of it (a text
    completion's leading space too): the text ends at EOS or before the
    first stop string, and the token count where that token was (as auto-regressive
    decoding would have stopped there, whatever else the step accepted)."""

    def __init__(self, tokenizer, stops):
        self.eos_ids = set(tokenizer.eos_token_ids)
        self.detokenizer = keeping_leading_space(tokenizer.detokenizer)  # a fresh copy
        self.stops = StopStrings(stops)
        self.tokens = 0
        self.finish_reason = None

    def add(self, chunk: List[int]) -> str:
        out = []
        for token in chunk:
            self.tokens += 1
            if token in self.eos_ids:
                return self._end(out)
            self.detokenizer.add_token(token)
            out.append(self.stops.feed(self.detokenizer.last_segment))
            if self.stops.stopped:
                self.finish_reason = "stop"
                return "".join(out)
        return "".join(out)

    def _end(self, out: list) -> str:
        """EOS: the detokenizer's and the stop strings' held-back text, then the end."""
        self.finish_reason = "stop"
        return "".join(out) + self.finish()

    def finish(self) -> str:
        self.detokenizer.finalize()
        text = self.stops.feed(self.detokenizer.last_segment)
        return text + self.stops.flush()
