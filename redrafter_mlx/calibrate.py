"""`--beam auto`: pick the beam shape, or AR where no shape beats it, by timing them on this
device, cached per device, model, drafter and sampling settings.

The best shape depends on the hardware (width 1-3 on Apple GPUs, 12-24 for the default
model on an H100, short beams on CPUs) and on the sampling settings (sampled drafts are
accepted less often than greedy ones), so it is measured once per device, model, drafter
and sampling settings and remembered in <cache>/beam_auto.json. Where AR is faster than
every shape, decoding falls back to AR and says so: ReDrafter never makes a user wait longer.
"""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlx.core as mx

from .atomic import atomic_file
from .decode.beam_search import BeamShape
from .model.config import is_int
from .decode import DecodeOptions
from .device import device_name
from .errors import UsageError
from .models import writable_cache_dir
from .decode.sampling import SamplingParams

PROMPTS = ["Explain how a refrigerator keeps food cold.", "Write a short story about a lighthouse keeper."]
# GPUs: 12x4-24x4 were fastest on an H100; trees of the best nodes (greedy only): 16x6:64 beat 16x5 for the coder in
# one process, where SmolLM2's 24x4:72 and 24x6:72 tied with 24x4, their steps costing what they gained (docs/perf.md,
# 2026-12-07); CPUs: SmolLM2's 1x4:5 beat 1x3 by 5% (2026-12-07)
CANDIDATES = {"cpu": [BeamShape(1, 2), BeamShape(1, 3), BeamShape(1, 4), BeamShape(2, 3), BeamShape(1, 4, 5)],
              "gpu": [BeamShape(w, 4) for w in (1, 4, 8, 12, 16, 24)] + [BeamShape(8, 5)]
              + [BeamShape(16, 6, 64), BeamShape(24, 4, 60)]}
AR = "ar"  # a calibration's winner when AR was faster than every shape


def candidate_shapes(device_kind: str, options: DecodeOptions) -> list:
    """The shapes --beam auto times for a request: the device's candidates (trees of the best
    nodes when greedy only) and the shape the request names."""
    shapes = [b for b in CANDIDATES[device_kind] if options.sampling.greedy or not b.nodes]
    return shapes if options.beam in shapes else shapes + [options.beam]


def speed(engine, prompts, options: DecodeOptions, max_tokens: int) -> float:
    """tok/s of one way to decode over the prompts, after a warm-up run (sampling: seeded
    alike for every candidate)."""
    def run(prompt, tokens):
        return len(sum(engine.generate(prompt, max_tokens=tokens, options=options), []))

    run(prompts[0], 8)
    mx.random.seed(0)
    start = time.perf_counter()
    tokens = sum(run(prompt, max_tokens) for prompt in prompts)
    return tokens / (time.perf_counter() - start)


def calibrate(engine, prompts, candidates, options: DecodeOptions, max_tokens: int = 48):
    """Times AR and every candidate shape; returns the winner (a BeamShape, or AR) and the
    measured tok/s of each."""
    speeds = {AR: speed(engine, prompts, replace(options, mode="ar"), max_tokens)}
    print(f"[redrafter_mlx] AR: {speeds[AR]:.1f} tok/s", file=sys.stderr)
    for beam in candidates:
        speeds[beam] = speed(engine, prompts, replace(options, mode="redrafter", beam=beam), max_tokens)
        print(f"[redrafter_mlx] beam {beam}: {speeds[beam]:.1f} tok/s", file=sys.stderr)
    return max(speeds, key=speeds.get), speeds


def weights_identity(directory) -> str:
    """The directory with the size and newest modification time of its weight files, so
    that a drafter or model replaced in place is calibrated again."""
    files = sorted(Path(directory).glob("*.safetensors"))
    size, newest = sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0)
    return f"{Path(directory).resolve()} ({size} B, {newest})"


def sampling_key(sampling: SamplingParams) -> str:
    if sampling.greedy:
        return "greedy"
    return f"temp {sampling.temp:g}, top-k {sampling.top_k}, top-p {sampling.top_p:g}"


def auto_options(engine, options: DecodeOptions, *, chat_template: bool = True,
                 cache_file: Path = None) -> DecodeOptions:
    """options with the cached best beam shape for this device + model + drafter + sampling
    settings (calibrated on first use; options.beam, a named model's measured shape, is
    timed with the device's candidates), or mode "ar" where AR was fastest (said on stderr)."""
    cache_file = cache_file or writable_cache_dir() / "beam_auto.json"
    files = engine.files
    shapes = candidate_shapes(engine.policy.device_kind, options)
    key = (f"{device_name()} | {weights_identity(files.model_dir)} ({engine.model.dtype}, trees on "
           f"{engine.policy.verify_form}) | {weights_identity(files.drafter_dir)} "
           f"(draft vocab {engine.drafter.draft_vocab_size}) | {sampling_key(options.sampling)} | "
           f"{options.sampled_drafts} | lookup {options.lookup_match} | mlx {mx.__version__} | candidates "
           f"{','.join(map(str, shapes))}")
    known = read_cache(cache_file)
    if key not in known:
        print("[redrafter_mlx] calibrating the beam shape for this device (once)", file=sys.stderr)
        prompts = [engine.encode(p, chat_template) for p in PROMPTS]
        best, speeds = calibrate(engine, prompts, shapes, options)
        entry = {"best": AR if best == AR else [best.width, best.length] + ([best.nodes] if best.nodes else []),
                 "tokens_per_s": {str(b): round(s, 2) for b, s in speeds.items()}}
        known = read_cache(cache_file) | {key: entry}  # read again: keeps what another process wrote meanwhile
        with atomic_file(cache_file) as tmp:
            tmp.write_text(json.dumps(known, indent=2))
    best = known[key]["best"]
    if best == AR:
        print("[redrafter_mlx] --beam auto: auto-regressive decoding is faster than every beam shape on this "
              "device for these settings; decoding without the drafter", file=sys.stderr)
        return replace(options, mode="ar")
    return replace(options, beam=BeamShape(*best))


def read_cache(cache_file: Path) -> dict:
    """The calibrations in beam_auto.json; entries that are not well formed (a file edited by
    hand or cut short) are dropped, to be measured again."""
    try:
        known = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        known = None
    if not isinstance(known, dict):
        print(f"[redrafter_mlx] {cache_file}: not a calibration cache; calibrating again", file=sys.stderr)
        return {}

    def well_formed(entry) -> bool:
        best = entry.get("best") if isinstance(entry, dict) else None
        if best == AR:
            return True
        if not (isinstance(best, list) and len(best) in (2, 3) and all(is_int(v) for v in best)):
            return False
        try:
            BeamShape(*best)
        except UsageError:
            return False
        return True

    return {key: entry for key, entry in known.items() if well_formed(entry)}
