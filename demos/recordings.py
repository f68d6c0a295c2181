"""Recordings of a race: asciinema v2 cast, animated GIF (Pillow), self-contained HTML replay."""

import json
from pathlib import Path
from typing import List

from redrafter_mlx.atomic import atomic_file

from .render import frame, to_ansi
from .trace import Trace

HOLD_END = 3.0  # seconds the final frame stays on screen


def frame_times(left: Trace, right: Trace, fps: float) -> List[float]:
    end = max(left.seconds, right.seconds)
    count = int(end * fps)
    return [i / fps for i in range(count + 1)] + [end]


def write_cast(path: Path, left: Trace, right: Trace, width: int, height: int, title: str, note: str):
    """asciinema v2: a header line, then [seconds, "o", data] for every change of the screen."""
    times = sorted({0.0} | {e.seconds for t in (left, right) for e in t.events})
    lines = [json.dumps({"version": 2, "width": width, "height": height, "title": title,
                         "env": {"TERM": "xterm-256color"}})]
    lines.append(json.dumps([0.0, "o", "\x1b[2J"]))
    for seconds in times:
        screen = to_ansi(frame(left, right, seconds, width, height, title, note))
        lines.append(json.dumps([round(seconds, 4), "o", screen]))
    end = times[-1] + HOLD_END
    lines.append(json.dumps([round(end, 4), "o", "\r\n"]))
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSansMono.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", "Menlo.ttc"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


COLORS = {"title": (255, 255, 255), "note": (140, 140, 140), "left": (220, 220, 220), "right": (90, 220, 120),
          "result": (250, 210, 90), "text": (210, 210, 210)}


def write_gif(path: Path, left: Trace, right: Trace, width: int, height: int, title: str, note: str,
              fps: float = 8.0, font_size: int = 14):
    """Renders the race at `fps` frames per second with a monospace font."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    size = (int(font.getlength("M" * width)) + 16, (font_size + 4) * height + 16)
    frames = []
    for seconds in frame_times(left, right, fps):
        image = Image.new("RGB", size, (24, 26, 32))
        draw = ImageDraw.Draw(image)
        for row, line in enumerate(frame(left, right, seconds, width, height, title, note)):
            draw.text((8, 8 + row * (font_size + 4)), line.text, font=font, fill=COLORS[line.style])
        frames.append(image)
    durations = [int(1000 / fps)] * (len(frames) - 1) + [int(HOLD_END * 1000)]
    with atomic_file(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                       optimize=True)


HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>%(title)s</title>
<style>
body { background: #181a20; color: #ddd; font: 14px/1.4 Menlo, 'DejaVu Sans Mono', monospace; margin: 16px; }
h1 { font-size: 16px; margin: 0 0 4px; } .note { color: #888; margin-bottom: 8px; }
.panes { display: flex; gap: 12px; }
.pane { flex: 1; border: 1px solid #444; border-radius: 6px; padding: 8px; min-height: 380px; }
.pane h2 { font-size: 14px; margin: 0; } #left h2 { color: #ccc; } #right h2 { color: #5adc78; }
.stats { color: #aaa; margin: 4px 0 8px; border-bottom: 1px solid #333; padding-bottom: 6px; }
.text { white-space: pre-wrap; word-wrap: break-word; }
#result { color: #fad25a; font-weight: bold; margin-top: 10px; min-height: 20px; }
button { margin-top: 8px; }
</style></head><body>
<h1>%(title)s</h1><div class="note">%(note)s</div>
<div class="panes">
<div class="pane" id="left"><h2></h2><div class="stats"></div><div class="text"></div></div>
<div class="pane" id="right"><h2></h2><div class="stats"></div><div class="text"></div></div>
</div>
<div id="result"></div><button id="replay">replay</button>
<script>
const race = %(data)s;
const end = Math.max(...race.traces.map(t => t.events.length ? t.events[t.events.length - 1][0] : 0));
function at(trace, s) {
  let shown = [0, "", 0, 0];
  for (const e of trace.events) { if (e[0] > s) break; shown = e; }
  return shown;
}
function draw(s) {
  race.traces.forEach((trace, i) => {
    const pane = document.getElementById(i ? "right" : "left");
    const [_, text, tokens, steps] = at(trace, s);
    const total = trace.events.length ? trace.events[trace.events.length - 1][0] : 0;
    const elapsed = Math.min(s, total);
    const rate = elapsed > 0 ? tokens / elapsed : 0;
    pane.querySelector("h2").textContent = trace.name;
    pane.querySelector(".stats").textContent = rate.toFixed(1) + " tok/s  " +
      (steps ? tokens / steps : 0).toFixed(2) + " tok/step  " + elapsed.toFixed(1) + " s  " + tokens + " tok" +
      (s >= total ? "  done" : "");
    pane.querySelector(".text").textContent = text;
  });
  document.getElementById("result").textContent = s >= end ? race.result : "racing...";
}
let t0 = 0;
function tick() {
  const s = (Date.now() - t0) / 1000;
  draw(Math.min(s, end));
  if (s < end) setTimeout(tick, 33);
}
function play() { t0 = Date.now(); tick(); }
document.getElementById("replay").onclick = play;
if (location.hash === "#end") draw(end); else play();
</script></body></html>
"""


def write_html(path: Path, left: Trace, right: Trace, title: str, note: str, result: str):
    """A page that replays the race with the measured timestamps (open it; #end shows the finish)."""
    import html

    data = json.dumps({"traces": [left.to_dict(), right.to_dict()], "result": result})
    page = HTML % {"title": html.escape(title), "note": html.escape(note), "data": data.replace("</", "<\\/")}
    with atomic_file(path) as tmp:
        tmp.write_text(page)
