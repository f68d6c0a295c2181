"""The command line: end-to-end on a tiny model directory, and one-line errors on bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.model.load import load_drafter, load_model
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model(0, "llama", vocab=16)
    other = tiny_model(0, "llama", vocab=16, hidden_size=48)
    return {
        "model": write_model_dir(root / "model", model),
        "drafter": write_drafter_dir(root / "drafter", tiny_drafter(model)),
        "wide_drafter": write_drafter_dir(root / "wide", tiny_drafter(other)),
        "vocab_drafter": write_drafter_dir(root / "vocab", tiny_drafter(tiny_model(0, vocab=20))),
        "root": root,
    }


def cli(*args, stdin=None, env=None):
    command = [sys.executable, "-m", "redrafter_mlx.generate", *map(str, args)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_load_round_trip(dirs):
    model = load_model(dirs["model"])
    drafter = load_drafter(dirs["drafter"], model)
    assert drafter.config.exit_dim == 64 and model.config.vocab_size == 16


def test_redrafter_text_equals_ar_text(dirs):
    common = ["--model", dirs["model"], "--prompt", "w3 w4 w5", "--max-tokens", "24", "--no-chat-template"]
    ar = cli(*common, "--mode", "ar")
    rd = cli(*common, "--drafter", dirs["drafter"], "--beam-width", "4", "--beam-length", "4")
    assert ar.returncode == 0 and rd.returncode == 0, ar.stderr + rd.stderr
    assert ar.stdout == rd.stdout and ar.stdout.strip()
    assert "tokens/step" in rd.stderr and "Generation:" in ar.stderr


@pytest.mark.parametrize("method", ["iid", "rsd-c", "rsd-s"])
def test_redrafter_sampling_is_seeded(dirs, method):
    common = ["--model", dirs["model"], "--drafter", dirs["drafter"], "--prompt", "w3 w4", "--max-tokens", "16",
              "--no-chat-template", "--temp", "1.0", "--top-p", "0.95", "--beam-width", "3",
              "--sampled-drafts", method]
    runs = [cli(*common, "--seed", seed) for seed in ("1", "1", "2", "3")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    texts = [r.stdout for r in runs]
    assert texts[0] == texts[1] and len(set(texts)) >= 2 and "tokens/step" in runs[0].stderr


def test_beam_auto_calibrates_once_per_device_and_model(dirs, tmp_path):
    drafter_dir = shutil.copytree(dirs["drafter"], tmp_path / "drafter")
    common = ["--model", dirs["model"], "--drafter", drafter_dir, "--prompt", "w3 w4", "--max-tokens", "8",
              "--no-chat-template", "--beam", "auto"]
    env = {"REDRAFTER_CACHE": str(tmp_path)}
    first, second = cli(*common, env=env), cli(*common, env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    assert "calibrating" in first.stderr and "calibrating" not in second.stderr
    (entry,) = json.loads((tmp_path / "beam_auto.json").read_text()).values()
    assert set(entry["tokens_per_s"]) == {"ar", "1x2", "1x3", "1x4", "2x3", "1x4:5"}  # AR is timed too
    best = "ar" if entry["best"] == "ar" else str(BeamShape(*entry["best"]))
    assert entry["tokens_per_s"][best] == max(entry["tokens_per_s"].values())
    assert ("decoding without the drafter" in second.stderr) == (best == "ar")
    ar = cli("--model", dirs["model"], "--mode", "ar", "--prompt", "w3 w4", "--max-tokens", "8", "--no-chat-template")
    assert second.stdout == ar.stdout  # greedy: any beam shape gives the AR text
    shutil.rmtree(drafter_dir)
    write_drafter_dir(drafter_dir, tiny_drafter(load_model(dirs["model"]), seed=5))  # replaced in place
    third = cli(*common, env=env)
    assert third.returncode == 0 and "calibrating" in third.stderr, third.stderr
    sampled = [cli(*common, "--temp", temp, env=env) for temp in ("0.7", "0.7", "1.0")]
    assert ["calibrating" in r.stderr for r in sampled] == [True, False, True], sampled[0].stderr
    keys = list(json.loads((tmp_path / "beam_auto.json").read_text()))
    assert sum("greedy" in k for k in keys) == 2 and sum("temp 0.7," in k for k in keys) == 1
    other_dtype = cli(*common, "--dtype", "bfloat16", env=env)  # weights of another dtype decode at another speed
    assert other_dtype.returncode == 0 and "calibrating" in other_dtype.stderr, other_dtype.stderr


def test_prompt_from_stdin(dirs):
    out = cli("--model", dirs["model"], "--mode", "ar", "--max-tokens", "5", "--no-chat-template", stdin="w3 w4")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) >= 1


@pytest.mark.parametrize("case,fragment", [
    ("missing_model", "nope: no such directory, and not a model name"),
    ("no_config", "no config.json"),
    ("hidden_mismatch", "hidden_size 48 != model hidden_size 32"),
    ("vocab_mismatch", "vocab_size 20 != model vocab_size 16"),
    ("width_zero", "beam width must be >= 1"),
    ("width_large", "beam width must be in 1..16"),
    ("length_short", "beam length must be in 2..16"),
    ("no_drafter", "no shipped drafter fits it"),
    ("bad_top_p", "argument --top-p: must be a finite number in (0, 1], got 0"),
    ("bad_beam", "--beam must be 'auto' or WIDTHxLENGTH"),
    ("bad_lookup", "argument --lookup: must be >= 0, got -1"),
])
def test_bad_input_gives_one_error_line(dirs, case, fragment):
    model, drafter = dirs["model"], dirs["drafter"]
    base = ["--prompt", "w3", "--max-tokens", "3", "--no-chat-template"]
    args = {
        "missing_model": ["--model", dirs["root"] / "nope", "--drafter", drafter],
        "no_config": ["--model", dirs["root"], "--drafter", drafter],
        "hidden_mismatch": ["--model", model, "--drafter", dirs["wide_drafter"]],
        "vocab_mismatch": ["--model", model, "--drafter", dirs["vocab_drafter"]],
        "width_zero": ["--model", model, "--drafter", drafter, "--beam-width", "0"],
        "width_large": ["--model", model, "--drafter", drafter, "--beam-width", "17"],
        "length_short": ["--model", model, "--drafter", drafter, "--beam-length", "1"],
        "no_drafter": ["--model", model, "--mode", "redrafter"],
        "bad_top_p": ["--model", model, "--mode", "ar", "--temp", "1", "--top-p", "0"],
        "bad_beam": ["--model", model, "--drafter", drafter, "--beam", "2x"],
        "bad_lookup": ["--model", model, "--drafter", drafter, "--lookup", "-1"],
    }[case]
    out = cli(*args, *base)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out.stderr


def test_default_beam_is_the_named_models_measured_shape(tmp_path):
    from redrafter_mlx import models
    from redrafter_mlx.policy import CPU, CUDA, GPU

    assert models.default_beam(None, CPU) == BeamShape(1, 4, 5)  # greedy: a tree of the best nodes
    assert models.default_beam(None, CPU, greedy=False) == BeamShape(1, 3)
    assert models.beam_from_flags(None, None, 3, CPU) == BeamShape(1, 3)  # flags: plain beams
    assert models.default_beam("smollm2-135m-instruct", GPU) == BeamShape(24, 4)
    assert models.default_beam("smollm2-135m-instruct", CUDA) == BeamShape(24, 4)  # no CUDA shape: the GPU one
    assert models.default_beam("qwen2.5-coder-1.5b", GPU) == BeamShape(2, 5)  # 4-bit trees (Apple GPUs)
    assert models.default_beam("qwen2.5-coder-1.5b", CUDA) == BeamShape(16, 6, 64)  # trees through the few-row kernel
    assert models.default_beam("qwen2.5-coder-1.5b", CUDA, greedy=False) == BeamShape(16, 5)  # sampled: plain beams
    assert models.beam_from_flags("qwen2.5-coder-1.5b", None, None, CUDA) == BeamShape(16, 6, 64)
    assert models.beam_from_flags("qwen2.5-coder-1.5b", None, 5, CUDA) == BeamShape(16, 5)  # flags: plain beams
    assert models.beam_from_flags("qwen2.5-coder-1.5b", 8, None, CUDA) == BeamShape(8, 5)  # their length, not 6
    assert models.beam_from_flags("qwen2.5-coder-1.5b", None, None, CUDA, greedy=False) == BeamShape(16, 5)
    assert models.default_beam(str(tmp_path), GPU) == models.DEFAULT_BEAM  # a directory: no measurement
    assert models.beam_from_flags("qwen2.5-coder-1.5b", 4, None, GPU) == BeamShape(4, 5)  # the rest: measured
    assert models.beam_from_flags(str(tmp_path), None, 4, CPU) == BeamShape(models.DEFAULT_BEAM.width, 4)
    assert all(m.drafter_dir is None or (m.drafter_dir / "config.json").is_file() for m in models.MODELS.values())


def test_beam_auto_falls_back_to_ar_where_it_is_faster(dirs, tmp_path):
    """A calibration that AR won decodes without the drafter, and says so (one line)."""
    common = ["--model", dirs["model"], "--drafter", dirs["drafter"], "--prompt", "w3 w4", "--max-tokens", "8",
              "--no-chat-template", "--beam", "auto"]
    env = {"REDRAFTER_CACHE": str(tmp_path)}
    assert cli(*common, env=env).returncode == 0
    calibrations = json.loads((tmp_path / "beam_auto.json").read_text())
    for entry in calibrations.values():
        entry["best"], entry["tokens_per_s"]["ar"] = "ar", 1e9
    (tmp_path / "beam_auto.json").write_text(json.dumps(calibrations))
    out = cli(*common, env=env)
    assert out.returncode == 0 and "calibrating" not in out.stderr
    assert "decoding without the drafter" in out.stderr and "tokens/step" not in out.stderr


def test_calibration_cache_keeps_best_node_trees(tmp_path):
    """A shape with a tree of the best nodes (WxL:N) is cached as [W, L, N] and read back
    whole; a negative count is not a shape, so its entry is measured again."""
    from redrafter_mlx.calibrate import read_cache

    cache = tmp_path / "beam_auto.json"
    cache.write_text(json.dumps({"kept": {"best": [16, 5, 48]}, "plain": {"best": [2, 4]},
                                 "short": {"best": [16, 5, -3]}, "long": {"best": [1, 2, 3, 4]}}))
    assert read_cache(cache) == {"kept": {"best": [16, 5, 48]}, "plain": {"best": [2, 4]}}


@pytest.mark.parametrize("device_kind", ["cpu", "gpu"])
def test_beam_auto_times_best_node_trees_for_greedy_requests_only(device_kind):
    """Every candidate of --beam auto is a shape the request may use: best-node trees (WxL:N)
    only when greedy; the requested shape is timed too."""
    from redrafter_mlx import BeamShape, DecodeOptions, SamplingParams
    from redrafter_mlx.calibrate import candidate_shapes

    for sampling in (SamplingParams(), SamplingParams(0.7, top_p=0.9)):
        options = DecodeOptions(beam=BeamShape(3, 3), sampling=sampling)
        shapes = candidate_shapes(device_kind, options)
        assert BeamShape(3, 3) in shapes
        assert any(b.nodes for b in shapes) == sampling.greedy
        for shape in shapes:
            DecodeOptions(beam=shape, sampling=sampling)  # raises for a shape the request may not use


def test_beam_auto_keeps_a_calibration_written_meanwhile(dirs, tmp_path, monkeypatch):
    """Two processes calibrating at once: each keeps the other's entry (the cache is read again
    just before it is written), not only the last writer's."""
    from redrafter_mlx import DecodeOptions, Engine, calibrate

    cache = tmp_path / "beam_auto.json"

    def other_process_meanwhile(engine, prompts, shapes, options):
        cache.write_text(json.dumps({"other device": {"best": [4, 3]}}))
        return BeamShape(2, 2), {BeamShape(2, 2): 10.0}

    monkeypatch.setattr(calibrate, "calibrate", other_process_meanwhile)
    engine = Engine.load(str(dirs["model"]), str(dirs["drafter"]))
    options = calibrate.auto_options(engine, DecodeOptions(), chat_template=False, cache_file=cache)
    assert options.beam == BeamShape(2, 2)
    known = json.loads(cache.read_text())
    assert known.pop("other device") == {"best": [4, 3]} and [e["best"] for e in known.values()] == [[2, 2]]
