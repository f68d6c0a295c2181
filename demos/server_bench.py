"""The server's overhead: the same chat requests answered in this process (as the command
line decodes them) and through `python -m redrafter_mlx.server` with the openai client
(streamed), ReDrafter and auto-regressive, interleaved prompt by prompt so that both see
the same machine load. Greedy, so the texts must be identical.

  python -m demos.server_bench --num-prompts 10 --max-tokens 64

Reports tokens/s (completion tokens over the whole request, from sending it to its last
token) and time to first token (the first text) per method, and the server's overhead.

With --idle-sockets and/or --long-prompt-tokens, a load test follows on the ReDrafter server:
the same requests timed quiet, then while N silent connections are held open (reopened as
the server closes them) and a request with a long prompt runs, with /health polled
throughout:

  python -m demos.server_bench --num-prompts 5 --idle-sockets 1000 --long-prompt-tokens 4000
"""

import argparse
import json
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from redrafter_mlx import BeamShape, DecodeOptions, Engine, models
from redrafter_mlx.atomic import atomic_file
from redrafter_mlx.errors import ArgumentParser, int_at_least, run_cli
from redrafter_mlx.text import detokenize

from .prompts import load_prompts
from .side_by_side import check_output


@dataclass
class Run:
    text: str
    tokens: int
    seconds: float  # from the request to its last token
    first_token: float  # seconds to the first text (a reply without text: to its end)
    decode_seconds: float = None  # the server's own time decoding it (its `redrafter` extension field)


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m demos.server_bench", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"model name or directory (default: {models.DEFAULT})")
    p.add_argument("--drafter", help="drafter directory (default: the named model's)")
    p.add_argument("--prompts", default="mtbench", help="mtbench, humaneval or a .jsonl file")
    p.add_argument("--num-prompts", type=int_at_least(1), default=10)
    p.add_argument("--max-tokens", type=int_at_least(1), default=64)
    p.add_argument("--beam", default="1x3")
    p.add_argument("--repeats", type=int_at_least(1), default=1, help="times each prompt is run per method")
    p.add_argument("--idle-sockets", type=int_at_least(0), default=0,
                   help="load test: silent connections held open (0: none)")
    p.add_argument("--long-prompt-tokens", type=int_at_least(0), default=0,
                   help="load test: a request with a prompt this long runs meanwhile (0: none)")
    p.add_argument("--out", type=Path, help="write the runs and the summary as JSON")
    return p.parse_args(argv)


class Local:
    """In-process decoding, as `python -m redrafter_mlx.generate` runs it."""

    def __init__(self, args):
        self.engine = Engine.load(args.model, args.drafter)
        self.beam = BeamShape.parse(args.beam)

    def run(self, prompt: str, max_tokens: int, mode: str) -> Run:
        start = time.perf_counter()
        tokens = self.engine.encode(prompt)
        options = DecodeOptions(mode=mode, beam=self.beam)
        chunks = self.engine.generate(tokens, max_tokens=max_tokens, options=options)
        detokenizer, texts, count, first = self.engine.tokenizer.detokenizer, [], 0, None
        for chunk in detokenize(chunks, detokenizer, self.engine.eos_ids):
            count += len(chunk)
            texts.append(detokenizer.last_segment)
            if first is None and texts[-1]:
                first = time.perf_counter() - start
        texts.append(detokenizer.last_segment)
        seconds = time.perf_counter() - start
        return Run("".join(texts), count, seconds, seconds if first is None else first)


class Served:
    """`python -m redrafter_mlx.server` in a subprocess, asked through the openai client."""

    def __init__(self, args, mode: str, log: Path):
        import openai

        command = [sys.executable, "-m", "redrafter_mlx.server", "--port", "0", "--mode", mode]
        flags = ("model",) if mode == "ar" else ("model", "drafter", "beam")  # --mode ar refuses the others
        for flag in flags:
            if getattr(args, flag):
                command += [f"--{flag}", getattr(args, flag)]
        self.log = log
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = self._port()
        self.address = self.url[len("http://"):].rsplit(":", 1)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        self.name = self.client.models.list().data[0].id

    def _port(self) -> str:
        while self.process.poll() is None:
            found = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", self.log.read_text())
            if found:
                return found.group(1)
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")

    def run(self, prompt: str, max_tokens: int) -> Run:
        start = time.perf_counter()
        stream = self.client.chat.completions.create(
            model=self.name,
            messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True})
        texts, first, tokens, decode = [], None, 0, None
        for part in stream:
            if part.usage:
                tokens = part.usage.completion_tokens
            decode = (part.model_extra or {}).get("redrafter", {}).get("decode_seconds", decode)
            for choice in part.choices:
                if choice.delta.content:
                    texts.append(choice.delta.content)
                    first = first or time.perf_counter() - start
        seconds = time.perf_counter() - start
        return Run("".join(texts), tokens, seconds, seconds if first is None else first, decode)

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


def summary(runs) -> dict:
    tokens, seconds = sum(r.tokens for r in runs), sum(r.seconds for r in runs)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "ttft_ms_median": round(1e3 * statistics.median(r.first_token for r in runs), 1),
            "ttft_ms_mean": round(1e3 * statistics.fmean(r.first_token for r in runs), 1)}


def main(argv=None) -> dict:
    """Runs the benchmark, prints the report; returns the summary per method."""
    args = parse_args(argv)
    return run_cli(lambda: run(args))


def run(args) -> dict:
    BeamShape.parse(args.beam)  # checked before anything loads
    check_output(args.out, "--out")
    models.check_paths(args.model, args.drafter)
    prompts = load_prompts(args.prompts)[:args.num_prompts]
    local = Local(args)
    with tempfile.TemporaryDirectory(prefix="server_bench") as logs:
        servers = {mode: Served(args, mode, Path(logs) / f"{mode}.log") for mode in ("redrafter", "ar")}
        try:
            runs = measure(local, servers, prompts * args.repeats, args.max_tokens)
            load = under_load(servers["redrafter"], local.engine.tokenizer, prompts, args) \
                if args.idle_sockets or args.long_prompt_tokens else None
        finally:
            for server in servers.values():
                server.stop()
    return report(runs, args, load)


def measure(local: Local, servers: dict, prompts: list, max_tokens: int) -> dict:
    """Each prompt by each method in turn, the order reversed every other prompt (after one
    warm-up run each): {method: [Run]}."""
    methods = {"in-process redrafter": lambda p: local.run(p, max_tokens, "redrafter"),
               "server redrafter": lambda p: servers["redrafter"].run(p, max_tokens),
               "in-process ar": lambda p: local.run(p, max_tokens, "ar"),
               "server ar": lambda p: servers["ar"].run(p, max_tokens)}
    for run in methods.values():  # compiled steps, first prompt lengths
        run(prompts[0])
    runs = {name: [] for name in methods}
    for i, prompt in enumerate(prompts):
        order = list(methods) if i % 2 == 0 else list(methods)[::-1]  # none always runs after the same other
        for name in order:
            runs[name].append(methods[name](prompt))
        print(f"prompt {i + 1}/{len(prompts)}", file=sys.stderr)
    return runs


class IdleFlood:
    """`count` silent connections to a server, reopened as the server closes them."""

    def __init__(self, server: Served, count: int):
        self.address, self.count = (server.address[0], int(server.address[1])), count
        self.sockets, self.opened, self.done = [], 0, threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self):
        self._top_up()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()

    def _top_up(self):
        while len(self.sockets) < self.count:
            self.sockets.append(socket.create_connection(self.address))
            self.opened += 1

    def _hold(self):
        while not self.done.wait(0.2):
            readable, _, _ = select.select(self.sockets, [], [], 0)  # closed by the server: readable, empty
            for sock in readable:
                self.sockets.remove(sock)
                sock.close()
            self._top_up()


class LongPrompt:
    """One completion request whose prompt is `tokens` long (a prompt's tokens repeated), in a
    thread; records its seconds."""

    def __init__(self, server: Served, tokenizer, prompt: str, tokens: int):
        ids = tokenizer.encode(prompt)
        self.prompt = (ids * (tokens // len(ids) + 1))[:tokens]
        self.server, self.seconds, self.error = server, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        start = time.perf_counter()
        try:
            self.server.client.completions.create(model=self.server.name, prompt=self.prompt, max_tokens=1)
        except Exception as error:  # reported, not raised: the load test goes on
            self.error = f"{type(error).__name__}: {error}"
        self.seconds = time.perf_counter() - start


def health_poll(http, done: threading.Event, seconds: list, failures: list):
    """Polls /health every 0.1 s until done: the seconds of each answer, the failures."""
    while not done.wait(0.1):
        start = time.perf_counter()
        try:
            status = http.get("/health").status_code
        except Exception as error:  # counted, not raised: the load test goes on
            failures.append(f"{type(error).__name__}: {error}")
            continue
        if status == 200:
            seconds.append(time.perf_counter() - start)
        else:
            failures.append(f"status {status}")


def timed(server: Served, prompt: str, max_tokens: int, failures: list):
    """A request's seconds, or None (its failure added to failures)."""
    try:
        return server.run(prompt, max_tokens).seconds
    except Exception as error:  # counted, not raised: the load test goes on
        failures.append(f"{type(error).__name__}: {error}")
        return None


def under_load(server: Served, tokenizer, prompts: list, args) -> dict:
    """The prompts' request times quiet, then under the flood and the long prompt."""
    import httpx

    quiet = [server.run(p, args.max_tokens).seconds for p in prompts]
    done, health, failures = threading.Event(), [], []
    http = httpx.Client(base_url=server.url, timeout=30)
    poller = threading.Thread(target=health_poll, args=(http, done, health, failures), daemon=True)
    with IdleFlood(server, args.idle_sockets) as flood, http:
        poller.start()
        long = LongPrompt(server, tokenizer, prompts[0], args.long_prompt_tokens) if args.long_prompt_tokens else None
        if long:
            long.thread.start()
            time.sleep(0.2)  # it starts first: the requests below wait behind its prefill
        loaded = [s for s in (timed(server, p, args.max_tokens, failures) for p in prompts) if s is not None]
        if long:
            long.thread.join()
        done.set()
        poller.join()
    return {"idle_sockets": args.idle_sockets, "sockets_opened": flood.opened,
            "long_prompt_tokens": args.long_prompt_tokens, "long_prompt_s": round(long.seconds, 3) if long else None,
            "long_prompt_error": long.error if long else None,
            "quiet_request_s_median": round(statistics.median(quiet), 3), "quiet_request_s_max": round(max(quiet), 3),
            "loaded_requests": len(loaded), "failures": failures[:10], "failure_count": len(failures),
            "loaded_request_s_median": round(statistics.median(loaded), 3) if loaded else None,
            "loaded_request_s_max": round(max(loaded), 3) if loaded else None, "health_polls": len(health),
            "health_ms_median": round(1e3 * statistics.median(health), 1) if health else None,
            "health_ms_max": round(1e3 * max(health), 1) if health else None}


def report(runs: dict, args, load: dict = None) -> dict:
    table = {name: summary(r) for name, r in runs.items()}
    texts = {name: [r.text for r in rs] for name, rs in runs.items()}
    same = sum(len(set(t)) == 1 for t in zip(*texts.values()))
    print(f"{len(runs['server ar'])} requests x {args.max_tokens} tokens, greedy, beam {args.beam}; "
          f"identical texts across the 4 methods: {same}/{len(runs['server ar'])}")
    print(f"{'method':24} {'tokens/s':>9} {'TTFT median':>12} {'TTFT mean':>10}")
    for name, row in table.items():
        print(f"{name:24} {row['tokens_per_s']:9.2f} {row['ttft_ms_median']:10.1f}ms {row['ttft_ms_mean']:8.1f}ms")
    for mode in ("redrafter", "ar"):
        served, own = table[f"server {mode}"], table[f"in-process {mode}"]
        paired = [(o.seconds / o.tokens) / (s.seconds / s.tokens) for s, o in
                  zip(runs[f"server {mode}"], runs[f"in-process {mode}"])]
        outside = [1 - r.decode_seconds / r.seconds for r in runs[f"server {mode}"]]
        table[f"server {mode}"].update(paired_speed_ratio_median=round(statistics.median(paired), 4),
                                       outside_decoding_median=round(statistics.median(outside), 4))
        print(f"server vs in-process, {mode}: tokens/s {served['tokens_per_s'] / own['tokens_per_s'] - 1:+.1%} "
              f"(median of per-request ratios {statistics.median(paired) - 1:+.1%}), "
              f"TTFT median {served['ttft_ms_median'] - own['ttft_ms_median']:+.1f} ms; time of a request "
              f"outside decoding (HTTP, JSON, encoding, the thread hand-off): median {statistics.median(outside):.1%}")
    speedup = table["server redrafter"]["tokens_per_s"] / table["server ar"]["tokens_per_s"]
    print(f"through the server: ReDrafter {speedup:.2f}x auto-regressive")
    if load:
        print(f"under load ({load['idle_sockets']} idle sockets held, {load['sockets_opened']} opened; a "
              f"{load['long_prompt_tokens']}-token prompt: {load['long_prompt_s']} s): requests "
              f"{load['loaded_request_s_median']} s median, {load['loaded_request_s_max']} s max (quiet: "
              f"{load['quiet_request_s_median']} s, {load['quiet_request_s_max']} s); /health "
              f"{load['health_ms_median']} ms median, {load['health_ms_max']} ms max over {load['health_polls']} polls; "
              f"{load['failure_count']} failed requests or polls"
              + (f" (first: {load['failures'][0]})" if load["failures"] else "")
              + (f"; the long request failed: {load['long_prompt_error']}" if load["long_prompt_error"] else ""))
        table["under load"] = load
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": table,
                                       "identical": same, "runs": {k: [vars(r) for r in v] for k, v in runs.items()}},
                                      indent=1))
    return table


if __name__ == "__main__":
    main()
