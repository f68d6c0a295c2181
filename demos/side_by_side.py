"""Side-by-side race in the terminal: auto-regressive (left) vs ReDrafter (right).

  python -m demos.side_by_side --prompt "Write a haiku about the sea."
  python -m demos.side_by_side --prompt "..." --record race.cast --gif race.gif --html race.html

By default the two are generated one after the other, each alone on the device with
per-token timestamps, then replayed side by side at their true measured speed (the
screen says so). --concurrent runs both live, alternating steps on the shared device.
"""

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from redrafter_mlx import DecodeOptions, DecodePolicy, Engine, SamplingParams, models
from redrafter_mlx.errors import ArgumentParser, UsageError, finite_float, int_at_least, run_cli
from redrafter_mlx.text import check_text

from .recordings import write_cast, write_gif, write_html
from .render import frame, result_line, to_ansi
from .trace import Trace, record


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m demos.side_by_side", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", default="Explain in a few sentences why the sky is blue.")
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}), an MLX model directory, a .gguf "
                   f"file or a Hugging Face repo id (default: {models.DEFAULT})")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped one trained for the model)")
    p.add_argument("--max-tokens", type=int_at_least(1), default=160)
    p.add_argument("--beam-width", type=int, help="beams (default: the named model's fastest shape measured on "
                   "this kind of device, docs/perf.md; else 1)")
    p.add_argument("--beam-length", type=int, help="tokens per beam (default: likewise; else 3)")
    p.add_argument("--temp", type=finite_float(0), default=0.0)
    p.add_argument("--concurrent", action="store_true", help="run both live, alternating steps")
    p.add_argument("--record", metavar="CAST", help="write an asciinema v2 cast")
    p.add_argument("--gif", help="write an animated GIF")
    p.add_argument("--html", help="write a self-contained HTML replay")
    p.add_argument("--no-play", dest="play", action="store_false", help="do not animate in the terminal")
    p.add_argument("--width", type=int_at_least(20), default=100, help="columns of the recordings")
    p.add_argument("--height", type=int_at_least(10), default=30, help="rows of the recordings")
    return p


def generators(args, engine: Engine, prompt):
    """(name, decode generator) of AR and of ReDrafter for the race."""
    options = DecodeOptions(beam=args.beam, sampling=args.sampling)
    return [("Auto-regressive", engine.generate(prompt, max_tokens=args.max_tokens, options=replace(options, mode="ar"))),
            (f"ReDrafter {args.beam}", engine.generate(prompt, max_tokens=args.max_tokens, options=options))]


def run_alone(args, engine: Engine, prompt):
    return [record(name, chunks, engine.tokenizer, engine.eos_ids) for name, chunks in generators(args, engine, prompt)]


def run_concurrent(args, engine: Engine, prompt):
    """Alternates one step of each on the shared device; timestamps share one clock."""
    start = time.perf_counter()
    names, generators_ = zip(*generators(args, engine, prompt))
    traces, buffers, live = [], [[], []], [True, True]
    while any(live):
        for i, gen in enumerate(generators_):
            if live[i]:
                chunk = next(gen, None)
                if chunk is None:
                    live[i] = False
                else:
                    buffers[i].append((time.perf_counter() - start, chunk))
    for name, chunks in zip(names, buffers):
        trace = record(name, (c for _, c in chunks), engine.tokenizer, engine.eos_ids)
        for event, (seconds, _) in zip(trace.events, chunks):
            event.seconds = seconds
        traces.append(trace)
    return traces


def play(left: Trace, right: Trace, title: str, note: str, fps: float = 20.0):
    width, height = shutil.get_terminal_size((100, 30))
    out = sys.stdout
    out.write("\x1b[?1049h\x1b[?25l\x1b[2J")
    try:
        end, start = max(left.seconds, right.seconds), time.perf_counter()
        while True:
            seconds = min(time.perf_counter() - start, end)
            out.write(to_ansi(frame(left, right, seconds, width, height - 1, title, note)))
            out.flush()
            if seconds >= end:
                break
            time.sleep(1 / fps)
        time.sleep(1.5)
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: run(args))


def check_output(path, flag: str):
    """UsageError unless `path` can be written: its directory exists and it is no directory."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: no such directory {path.parent}")


def run(args):
    args.sampling, args.policy = SamplingParams(args.temp), DecodePolicy.for_device()
    args.beam = models.beam_from_flags(args.model, args.beam_width, args.beam_length, args.policy,
                                       greedy=args.sampling.greedy)  # checked first
    check_text(args.prompt, "--prompt")
    for flag in ("record", "gif", "html"):
        check_output(getattr(args, flag), f"--{flag}")
    if args.gif:
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise UsageError("--gif needs Pillow (pip install pillow)") from None
    models.check_paths(args.model, args.drafter)
    engine = Engine.load(args.model, args.drafter, policy=args.policy)
    args.model = str(engine.files.model_dir)
    prompt = engine.encode(args.prompt)
    args.max_tokens = engine.check(prompt, args.max_tokens, DecodeOptions(beam=args.beam, sampling=args.sampling))
    print("warming up...", file=sys.stderr)
    run_alone(argparse.Namespace(**{**vars(args), "max_tokens": 8}), engine, prompt)
    runner = run_concurrent if args.concurrent else run_alone
    left, right = runner(args, engine, prompt)
    title = f"ReDrafter vs auto-regressive: {Path(args.model).name}, up to {args.max_tokens} tokens, temp {args.temp}"
    note = ("both live, alternating steps on one device" if args.concurrent else
            "each generated alone, then replayed side by side at its measured speed")
    if args.play and sys.stdout.isatty():
        play(left, right, title, note)
    if args.record:
        write_cast(args.record, left, right, args.width, args.height, title, note)
    if args.gif:
        write_gif(args.gif, left, right, args.width, args.height, title, note)
    result = result_line(left, right, float("inf"))
    if args.html:
        write_html(args.html, left, right, title, note, result)
    print(result)


if __name__ == "__main__":
    main()
