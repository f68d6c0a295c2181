"""`--beam auto`: pick the beam shape by timing a few on this device, cached per device + model.

The best shape depends on the hardware (width 1-3 on Apple GPUs, 12-24 for the default
model on an H100, short beams on CPUs), so it is measured once and remembered in
<cache>/beam_auto.json.
"""

import json
import sys
import time
from pathlib import Path

import mlx.core as mx

from .decode import generate_redrafter
from .default_model import cache_dir
from .device import device_kind, device_name

PROMPTS = ["Explain how a refrigerator keeps food cold.", "Write a short story about a lighthouse keeper."]
CANDIDATES = {"cpu": [(1, 2), (1, 3), (1, 4), (2, 3)],
              "gpu": [(1, 4), (4, 4), (8, 4), (12, 4), (16, 4), (24, 4), (8, 5)]}  # H100 best: 12x4-24x4 (docs/perf.md)


def shape_speed(model, drafter, prompts, shape, max_tokens: int) -> float:
    """tok/s of one beam shape over the prompts, after a warm-up run."""
    width, length = shape
    sum(generate_redrafter(model, drafter, prompts[0], 8, width, length), [])
    tokens, start = 0, time.perf_counter()
    for prompt in prompts:
        tokens += len(sum(generate_redrafter(model, drafter, prompt, max_tokens, width, length), []))
    return tokens / (time.perf_counter() - start)


def calibrate(model, drafter, prompts, candidates, max_tokens: int = 48):
    """Returns the fastest (width, length) and the measured tok/s of every candidate."""
    speeds = {}
    for shape in candidates:
        speeds[shape] = shape_speed(model, drafter, prompts, shape, max_tokens)
        print(f"[redrafter_mlx] beam {shape[0]}x{shape[1]}: {speeds[shape]:.1f} tok/s", file=sys.stderr)
    return max(speeds, key=speeds.get), speeds


def weights_identity(directory) -> str:
    """The directory with the size and newest modification time of its weight files, so
    that a drafter or model replaced in place is calibrated again."""
    files = sorted(Path(directory).glob("*.safetensors"))
    size, newest = sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0)
    return f"{Path(directory).resolve()} ({size} B, {newest})"


def auto_beam(model, drafter, encode_prompt, model_dir, drafter_dir, cache_file: Path = None):
    """The cached best shape for this device + model + drafter, calibrated on first use."""
    cache_file = cache_file or cache_dir() / "beam_auto.json"
    key = (f"{device_name()} | {weights_identity(model_dir)} | {weights_identity(drafter_dir)} "
           f"(draft vocab {drafter.draft_vocab_size}) | mlx {mx.__version__}")
    known = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if key not in known:
        print("[redrafter_mlx] calibrating the beam shape for this device (once)", file=sys.stderr)
        best, speeds = calibrate(model, drafter, [encode_prompt(p) for p in PROMPTS], CANDIDATES[device_kind()])
        known[key] = {"best": list(best), "tokens_per_s": {f"{w}x{n}": round(s, 2) for (w, n), s in speeds.items()}}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2))
        tmp.replace(cache_file)
    return tuple(known[key]["best"])
