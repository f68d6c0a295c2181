"""One frame of the race: two panes of text with live stats, as plain lines plus styles."""

import textwrap
from typing import List, NamedTuple

from .trace import Trace

STYLES = {"title": "\x1b[1m", "note": "\x1b[2m", "left": "\x1b[1;37m", "right": "\x1b[1;32m",
          "result": "\x1b[1;33m", "text": ""}
RESET = "\x1b[0m"


class Line(NamedTuple):
    text: str
    style: str  # a key of STYLES


def stats_line(trace: Trace, seconds: float) -> str:
    event = trace.at(seconds)
    elapsed = min(seconds, trace.seconds)
    rate = event.tokens / elapsed if elapsed > 0 else 0.0
    per_step = event.tokens / event.steps if event.steps else 0.0
    done = "  done" if seconds >= trace.seconds else ""
    return f"{rate:5.1f} tok/s  {per_step:.2f} tok/step  {elapsed:4.1f} s  {event.tokens} tok{done}"


def wrap(text: str, width: int, height: int) -> List[str]:
    """The last `height` lines of text wrapped to `width` (the pane scrolls)."""
    lines = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, width, replace_whitespace=False, drop_whitespace=True) or [""])
    return lines[-height:]


def result_line(left: Trace, right: Trace, seconds: float) -> str:
    if seconds < max(left.seconds, right.seconds):
        return "racing..."
    ratio = (right.tokens / right.seconds) / (left.tokens / left.seconds)
    return (f"{right.name}: {ratio:.2f}x the speed of {left.name} "
            f"({right.tokens} tokens in {right.seconds:.1f} s vs {left.tokens} in {left.seconds:.1f} s)")


def frame(left: Trace, right: Trace, seconds: float, width: int, height: int, title: str, note: str) -> List[Line]:
    """The screen at `seconds` into the race: height lines of at most width characters."""
    pane = (width - 3) // 2
    rule = "-" * pane + "-+-" + "-" * pane
    body_height = height - 8
    columns = [wrap(trace.at(seconds).text, pane, body_height) for trace in (left, right)]
    lines = [Line(title[:width], "title"), Line(note[:width], "note"), Line(rule, "note"),
             Line(f"{left.name[:pane]:<{pane}} | {right.name[:pane]}", "right"),
             Line(f"{stats_line(left, seconds)[:pane]:<{pane}} | {stats_line(right, seconds)[:pane]}", "left"),
             Line(rule, "note")]
    for i in range(body_height):
        a = columns[0][i] if i < len(columns[0]) else ""
        b = columns[1][i] if i < len(columns[1]) else ""
        lines.append(Line(f"{a:<{pane}} | {b}", "text"))
    lines += [Line(rule, "note"), Line(result_line(left, right, seconds)[:width], "result")]
    return lines


def to_ansi(lines: List[Line]) -> str:
    """A full-screen redraw: cursor home, each line styled and cleared to its end."""
    body = "\r\n".join(f"{STYLES[line.style]}{line.text}{RESET}\x1b[K" for line in lines)
    return "\x1b[H" + body + "\x1b[J"
