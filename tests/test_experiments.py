"""Every experiment runs: each experiments/*.py module on the tiny model at small sizes (CPU),
exits 0 and prints the lines it promises, so that none can rot unnoticed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlx.core as mx
import numpy as np

from helpers.tiny import cpu_policy, tiny_drafter, tiny_model, write_tiny_setup
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode.stats import Stats
from redrafter_mlx.training.data import save_sequences

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"__init__", "common"}  # experiments/ modules that are not experiments
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem not in SHARED)
N = r"\d+\.\d+"  # a measured number

# name: (arguments after --model, each with {model}, {drafter}, {prompts} filled in; lines the output promises)
RUNS = {
    "batch_generation": (["--prompts", "{prompts}", "--num-prompts", "3", "--max-new-tokens", "4"],
                         [rf"{label}: \d prompts, \d+ answer tokens in {N} s = {N} tokens/s"
                          for label in ("fixed shapes", "keys in use")] + [r"identical answers: \d of \d"]),
    "forward_rows": (["--rows", "1,4", "--context", "8", "--repeats", "2"],
                     [rf"T=\s+1\s+{N} ms\s+1\.00x the first", rf"T=\s+4\s+{N} ms\s+{N}x the first"]),
    "kernel_rows": (["--rows", "4,8", "--keys", "16", "--repeats", "2"],
                    [r"4/2 heads of 8, product 32 x 48"]
                    + [rf"keys 16 T {t}: sdpa {N} ms, q4 32x48 {N} ms" for t in (4, 8)]),
    "tree_acceptance": (["--drafter", "{drafter}", "--data", "{answers}", "--shapes", "1x3,2x4,2x4:5"],
                        [r"1 answers, 8 tokens, lookup 1:"]
                        + [rf"{shape}\s+{N} tokens per step \(\d+ steps\); distinct tree tokens of {full}: mean {N}, "
                           rf"90th percentile \d+, max \d+" for shape, full in (("1x3", 5), ("2x4", 10), ("2x4:5", 9))]),
    "op_costs": (["--rows", "4", "--chain", "3", "--repeats", "1"],
                 [r"32 wide, 4/2 heads of 8, 4 rows; per operation:"]
                 + [rf"{kind}.*host\s+{N} us, total\s+{N} us; compiled: host\s+{N} us, total\s+{N} us" for kind in (
                     "add", "reshape", "matmul", "quantized matmul", r"layer products q/k/v \+ o, float16",
                     r"layer products q/k/v \+ o, 4-bit", r"layer products gate/up \+ down, float16",
                     "rms_norm", "take_along_axis", "rope",
                     "attention.*boolean mask", "attention.*additive mask", "attention.*no mask",
                     "cache write: slice_update", "cache write: put_along_axis", "cache write: select",
                     "cache write: slice assignment", "log-softmax", "sort of 65536", "sort of 8192 in 8 rows")]),
    "prefill_timing": (["--lengths", "5,9", "--repeats", "2"],
                       [rf"{kind} round {r} length\s+{n}:\s+{N}\s+{N} ms" for kind in ("padded", "unpadded")
                        for r in (1, 2) for n in (5, 9)]),
    "profile_phases": (["--drafter", "{drafter}", "--beam", "2x3", "--max-tokens", "6"],
                       [rf"AR: {N} tok/s, {N} ms per token",
                        rf"ReDrafter 2x3 \(profiled\): {N} tok/s, {N} tokens/step, {N} ms per step; per phase: "
                        rf"(\{{'tree': '{N} ms', 'step': '{N} ms', 'commit': '{N} ms'\}}|none \(a resident step\))"]),
    "sampled_acceptance": (["--drafter", "{drafter}", "--prompts", "{prompts}", "--skip", "1", "--num-prompts", "2",
                            "--widths", "1,2", "--length", "2", "--max-tokens", "4"],
                           [rf"{w}x2 {m}\s+{N} tokens per step \(\d+ steps\)" for w in (1, 2)
                            for m in ("iid", "rsd-c", "rsd-s")]),
    "sampled_step": (["--drafter", "{drafter}", "--beam", "2x3", "--context", "8", "--repeats", "2"],
                     [r"vocabulary 16, draft vocabulary 16, beam 2x3, tree of 5 rows"]
                     + [rf"{part}\s+{N} ms" for part in (
                         "draft: beam search \\(greedy\\)", "draft: sampled, iid", "draft: sampled, rsd-c",
                         "draft: sampled, rsd-s", "target head, 5 rows", "target log-probs of every tree token",
                         "judge: greedy \\(head, argmax, match\\)", "judge: rejection walk, i.i.d.",
                         "judge: rejection walk, recursive, without replacement")]),
    "step_parts": (["--drafter", "{drafter}", "--beam", "2x3", "--context", "8", "--repeats", "2"],
                   [r"resident tree: 7 rows \(3 beams, \d distinct tokens\), attention over 256 slots",
                    r"packed tree: \d+ rows, attention over \d+ slots"]
                   + [rf"{part}\s+{N} ms \(host\s+{N} ms\)" for part in (
                       "resident: packing the tree on the device, 7 rows",
                       "resident: forward of 7 rows, tree mask", "resident: forward of 7 rows, additive mask",
                       "resident: forward of 7 rows, no mask",
                       "forward of 1 token, mask", "target head \\+ argmax, 7 rows", "target head \\+ argmax, 1 row",
                       "beam search 2x3", "resident: whole step 2x3 \\(verify, judge, commit, draft\\)",
                       "packed: host tree packing and inputs", "packed: step 2x3 alone \\(verify, judge, draft\\)",
                       "packed: whole step 2x3 \\(host packing, then the step\\)")]
                   + [rf"chained: {part}\s+{N} ms" for part in ("AR token \\(as verified\\)", "resident step 2x3")]),
    "step_ops": (["--drafter", "{drafter}", "--beam", "2x3", "--context", "8", "--top", "3"],
                 [r"AR step, uncompiled \(as GPUs run it\): \d+ operations \(\w+ \d+, \w+ \d+, \w+ \d+\)",
                  r"AR step, compiled: \d+ operations \(.+\)",
                  r"resident step 2x3, greedy, compiled \(7 tree rows\): \d+ operations \(.+\)",
                  r"of which drafting 2x3, compiled: \d+ operations \(.+\)"]),
    "step_timing": (["--drafter", "{drafter}", "--beam", "2x3,2x3:3", "--prompts", "{prompts}", "--num-prompts", "2",
                     "--max-tokens", "6", "--warm-up"],
                    [rf"pass {p}: AR {N} tok/s \({N} ms/token, prefill {N} ms/prompt\); wall {N} tok/s \({N} ms/prompt "
                     rf"outside the steps\)" for p in (1, 2)]
                    + [rf"pass {p} {shape}: {N} tok/s \({N}x AR\), {N} tokens/step, {N} ms/step \(prefill \+ first "
                       rf"draft {N} ms/prompt\); wall {N} tok/s \({N}x AR; {N} ms/prompt outside the steps\); median "
                       rf"step {N} ms, \d+ steps over 2x it \({N} ms/prompt, {N} beyond the median\), request to first "
                       rf"step {N} ms/prompt; cache per prompt: {N} compactions, {N} growths"
                       for p in (1, 2) for shape in ("2x3", "2x3:3")]),
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    setup = write_tiny_setup(tmp_path_factory.mktemp("experiments"))
    (setup["root"] / "answers").mkdir()
    save_sequences(setup["root"] / "answers" / "shard-00000.npz", [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], [4])
    return {**setup, "answers": setup["root"] / "answers"}


@pytest.mark.parametrize("fixed_shapes", [None, True])
def test_tree_acceptance_replays_greedy_decoding_step_for_step(fixed_shapes):
    """On the target's greedy answer the replay takes as many steps as decoding does, at
    several shapes, with and without the lookup beam, packed (CPU) and resident (GPU) steps."""
    from experiments.tree_acceptance import accepted_drafts, replay_steps
    from redrafter_mlx.training.loss import target_features

    model = tiny_model(4, vocab=12)
    drafter = tiny_drafter(model, 5)
    prompt = [1, 2, 3, 1, 2]
    answer = sum(generate_ar(model, prompt, max_tokens=60), [])
    hidden, _ = target_features(model, mx.array(prompt + answer)[None], drafter.taps)
    for beam in (BeamShape(1, 3), BeamShape(3, 4), BeamShape(3, 4, 5)):
        for lookup in (0, 2):
            stats = Stats()
            decoded = sum(generate_redrafter(model, drafter, prompt, max_tokens=60, beam=beam, lookup=lookup,
                                             policy=cpu_policy(fixed_shapes), stats=stats), [])
            assert decoded == answer
            counts, _ = accepted_drafts(model, drafter, hidden, np.array(prompt + answer), len(prompt), beam, lookup)
            assert replay_steps(counts) == stats.steps, (beam, lookup)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_and_prints_its_lines(dirs, name):
    if name not in RUNS:
        pytest.fail(f"experiments/{name}.py: give it small sizes and the lines it prints in RUNS")
    arguments, promised = RUNS[name]
    command = [sys.executable, "-m", f"experiments.{name}", "--model", str(dirs["model"]),
               *(a.format(**dirs) for a in arguments)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for pattern in promised:
        assert any(re.fullmatch(pattern, line.strip()) for line in lines), f"no line {pattern!r} in:\n{out.stdout}"


def test_step_ops_counts_the_sampled_step(dirs):
    """With --temp the resident step counted is the sampled one (no lookup beam: 2x3 packs 5 rows)."""
    command = [sys.executable, "-m", "experiments.step_ops", "--model", str(dirs["model"]), "--drafter",
               str(dirs["drafter"]), "--beam", "2x3", "--context", "8", "--temp", "0.7", "--top-p", "0.9"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"resident step 2x3, sampled \(.*top_p=0.9.*, iid drafts\), compiled \(5 tree rows\): \d+ "
                     r"operations", out.stdout), out.stdout


def test_step_timing_counts_resident_cache_compactions_and_growths(monkeypatch):
    """experiments.step_timing counts what the resident cache does between steps: a compaction
    where the next tree does not fit after the slots in use, then a growth where it still does
    not fit after the sequence."""
    from experiments.step_timing import counting_cache_events
    from redrafter_mlx.model.kv_cache import KVCache, ResidentCache

    for name in ("_compact", "_grow"):
        monkeypatch.setattr(ResidentCache, name, getattr(ResidentCache, name))  # unwrapped after the test
    events = counting_cache_events()
    cache = KVCache(1, 1, 1, 2, mx.float32, step=8, fixed_shapes=True)
    cache.reserve(3)
    cache.advance(3)  # a prompt of 3 tokens in 8 slots
    resident = ResidentCache(cache, [1, 2, 3])
    resident.make_room(4, 2)  # a tree of 4 rows: slots 3..6
    assert not events
    resident.read(2)  # that step added 2 tokens: 5 in the sequence, 7 slots used
    resident.make_room(4, 2)  # 7 + 4 > 8: compacted to 5 slots; 5 + 4 > 8: grown to 16
    assert events == {"compact": 1, "grow": 1} and resident.capacity == 16
