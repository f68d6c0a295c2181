"""demos/: the benchmark's quick mode, the race renderer, the terminal UI under a pty, the recordings."""

import csv
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from demos import benchmark
from demos.render import frame
from demos.trace import Event, Trace
from helpers.tiny import write_tiny_setup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("demos"))


def test_benchmark_quick_writes_csv_json_and_plots(dirs):
    out = dirs["root"] / "bench"
    rows = benchmark.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]),
                           "--prompts", str(dirs["prompts"]), "--quick", "--out-dir", str(out),
                           "--draft-model", str(dirs["model"])])  # the target as its own draft: all accepted
    methods = {r["method"] for r in rows}
    assert methods == {"ar", "mlx_lm_ar", "mlx_lm_speculative", "redrafter_1x2", "redrafter_1x3", "redrafter_2x2",
                       "redrafter_2x3"}
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 and all(r["device"] and r["mlx"] and r["model"] == "model" for r in table)
    speculative = next(r for r in table if r["method"] == "mlx_lm_speculative")
    assert float(speculative["tokens_per_step"]) > 3 and speculative["outputs_differing_from_ar"] == "0"
    for r in table:
        if r["method"].startswith("redrafter_"):
            assert r["outputs_differing_from_ar"] == "0"  # greedy: identical to AR
            assert 1 <= float(r["tokens_per_step"]) <= int(r["length"])
        if not r["method"].startswith("mlx_lm"):  # our methods: time to the first step, and the rate after it
            prefill = float(r["prefill_seconds"])
            assert 0 < prefill < float(r["seconds"])
            rate = float(r["decode_tokens_per_s"])  # the CSV's seconds are rounded to 1 ms: tiny runs, loose bounds
            assert rate > float(r["tokens_per_s"])
            assert rate == pytest.approx(int(r["tokens"]) / (float(r["seconds"]) - prefill), rel=0.2)
        else:
            assert r["prefill_seconds"] == r["decode_tokens_per_s"] == ""
    assert table[0]["speedup_vs_ar"] == "1.0"
    from PIL import Image
    for name in ("speedup_heatmap.png", "best_configs.png"):
        assert Image.open(out / name).size[0] > 300
    results = json.loads((out / "results.json").read_text())
    assert results["rows"][0]["method"] == "ar"
    per_prompt = results["per_prompt_tokens_seconds"]  # each method's prompts in the order they ran
    assert set(per_prompt) == {r["method"] for r in table}
    for r in table:
        assert sum(tokens for tokens, _ in per_prompt[r["method"]]) == int(r["tokens"])
        assert sum(seconds for _, seconds in per_prompt[r["method"]]) == pytest.approx(float(r["seconds"]), abs=0.01)


def test_benchmark_times_each_shape_per_lookup(dirs):
    out = dirs["root"] / "bench_lookup"
    rows = benchmark.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]), "--prompts",
                           str(dirs["prompts"]), "--quick", "--no-mlx-lm", "--lookup", "0,2", "--out-dir", str(out)])
    assert {r["method"] for r in rows} == {"ar"} | {f"redrafter_{w}x{n}_lookup{k}" for w in (1, 2) for n in (2, 3)
                                                   for k in (0, 2)}
    assert all(r["outputs_differing_from_ar"] == 0 for r in rows)


def test_benchmark_times_each_shape_per_sampled_drafts_method(dirs):
    out = dirs["root"] / "bench_rsd"
    rows = benchmark.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]), "--prompts",
                           str(dirs["prompts"]), "--num-prompts", "2", "--max-tokens", "8", "--no-mlx-lm", "--temp",
                           "1.0", "--top-p", "0.9",
                           "--widths", "2", "--lengths", "3", "--sampled-drafts", "iid,rsd-c,rsd-s",
                           "--out-dir", str(out)])
    assert {r["method"] for r in rows} == {"ar"} | {f"redrafter_2x3_{m}" for m in ("iid", "rsd-c", "rsd-s")}
    assert all(r["temp"] == 1.0 and r["top_p"] == 0.9 for r in rows)


def test_benchmark_times_each_shape_per_verify_form(dirs):
    """A verify form other than the device's adds our AR and every ReDrafter shape again (AR
    runs on other layers in each form); on the CPU's float model "dense" changes nothing but the name."""
    out = dirs["root"] / "bench_forms"
    rows = benchmark.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]), "--prompts",
                           str(dirs["prompts"]), "--num-prompts", "1", "--max-tokens", "8", "--no-mlx-lm",
                           "--widths", "2", "--lengths", "3", "--verify-forms", "as_loaded,dense", "--out-dir", str(out)])
    assert [r["method"] for r in rows] == ["ar", "redrafter_2x3", "ar_dense", "redrafter_2x3_dense"]
    assert all(r["outputs_differing_from_ar"] == 0 for r in rows)
    fastest = max(r["tokens_per_s"] for r in rows if r["method"] in ("ar", "ar_dense"))
    assert all(abs(r["speedup_vs_fastest_ar"] - r["tokens_per_s"] / fastest) < 0.01 for r in rows)


@pytest.mark.parametrize("extra,fragment", [(["--widths", "1,x"], "--widths must be comma-separated"),
                                            (["--prompts", "nope.jsonl"], "--prompts nope.jsonl: no such file"),
                                            (["--lookup", "-1"], "--lookup values must be in 0..4, got -1"),
                                            (["--sampled-drafts", "iid,x"], "--sampled-drafts must be"),
                                            (["--verify-forms", "dense,fp8"], "--verify-forms must be")])
def test_benchmark_bad_input_is_one_error_line(dirs, extra, fragment):
    out = subprocess.run([sys.executable, "-m", "demos.benchmark", "--model", str(dirs["model"]), "--drafter",
                          str(dirs["drafter"]), "--prompts", str(dirs["prompts"]), "--max-tokens", "2", *extra],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]


def trace(name, seconds_per_step, tokens_per_step, steps):
    events = [Event(seconds_per_step * (i + 1), " ".join(["word"] * (tokens_per_step * (i + 1))),
                    tokens_per_step * (i + 1), i + 1) for i in range(steps)]
    return Trace(name, events)


def test_frame_layout_and_live_stats():
    left, right = trace("AR", 0.1, 1, 20), trace("RD", 0.1, 2, 10)
    lines = frame(left, right, 1.0, 80, 24, "title", "note")
    assert len(lines) == 24 and all(len(line.text) <= 80 for line in lines)
    assert "10.0 tok/s" in lines[4].text and "20.0 tok/s" in lines[4].text and "2.00 tok/step" in lines[4].text
    assert lines[-1].text == "racing..."
    final = frame(left, right, 5.0, 80, 24, "title", "note")
    assert "2.00x the speed of AR" in final[-1].text


def run_in_pty(args, timeout=300):
    """Runs a command with a pseudo-terminal as stdout; returns (exit code, output)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "30"}
    process = subprocess.Popen(args, stdout=follower, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    os.close(follower)
    output = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
    process.wait(timeout)
    os.close(leader)
    return process.returncode, output.decode(errors="replace"), process.stderr.read().decode()


def test_side_by_side_in_a_terminal_and_recordings(dirs):
    root = dirs["root"]
    code, output, errors = run_in_pty([sys.executable, "-m", "demos.side_by_side", "--model", str(dirs["model"]),
                                       "--drafter", str(dirs["drafter"]), "--prompt", "w3 w4", "--max-tokens", "24",
                                       "--beam-width", "2", "--record", str(root / "race.cast"),
                                       "--gif", str(root / "race.gif"), "--html", str(root / "race.html")])
    assert code == 0, errors
    assert "\x1b[?1049h" in output and "Auto-regressive" in output and "ReDrafter 2x3" in output
    assert "the speed of Auto-regressive" in output and "measured speed" in output
    cast = (root / "race.cast").read_text().splitlines()
    header = json.loads(cast[0])
    assert header["version"] == 2 and header["width"] == 100
    times = [json.loads(line)[0] for line in cast[1:]]
    assert times == sorted(times) and len(times) > 5
    from PIL import Image
    gif = Image.open(root / "race.gif")
    assert gif.n_frames > 1
    assert "the speed of" in (root / "race.html").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_html_replay_in_headless_chromium(dirs, tmp_path):
    from demos.recordings import write_html

    left, right = trace("Auto-regressive", 0.05, 1, 30), trace("ReDrafter 1x3", 0.05, 2, 15)
    page = tmp_path / "race.html"
    write_html(page, left, right, "title", "note", "ReDrafter 1x3: 2.00x the speed of Auto-regressive")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,600"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "2.00x the speed of" in dom and "done" in dom and "40.0 tok/s" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri() + "#end"], capture_output=True, timeout=120)
    from PIL import Image
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 600)
    half = image.width // 2
    green = sum(1 for x in range(half, image.width) for y in range(0, 200, 2)
                if image.getpixel((x, y))[1] > 180 and image.getpixel((x, y))[0] < 140)
    text_left = sum(1 for x in range(0, half, 2) for y in range(100, 500, 2) if sum(image.getpixel((x, y))) > 450)
    text_right = sum(1 for x in range(half, image.width, 2) for y in range(100, 500, 2)
                     if sum(image.getpixel((x, y))) > 450)
    assert green > 20 and text_left > 100 and text_right > 100


def test_side_by_side_concurrent_without_a_terminal(dirs):
    out = subprocess.run([sys.executable, "-m", "demos.side_by_side", "--model", str(dirs["model"]), "--drafter",
                          str(dirs["drafter"]), "--prompt", "w5", "--max-tokens", "12", "--concurrent"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout  # no animation when stdout is not a terminal
    assert out.stdout.startswith("ReDrafter 1x3: ") and "the speed of Auto-regressive" in out.stdout


def test_side_by_side_bad_model_is_one_error_line(dirs):
    out = subprocess.run([sys.executable, "-m", "demos.side_by_side", "--model", str(dirs["root"] / "nope"),
                          "--drafter", str(dirs["drafter"])], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: ") and len(out.stderr.splitlines()) == 1


def test_server_bench_compares_the_server_with_in_process_decoding(dirs):
    from demos import server_bench

    table = server_bench.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]),
                               "--prompts", str(dirs["prompts"]), "--num-prompts", "2", "--max-tokens", "6",
                               "--idle-sockets", "300", "--long-prompt-tokens", "2000",
                               "--out", str(dirs["root"] / "server_bench.json")])
    load = table.pop("under load")
    assert set(table) == {"in-process redrafter", "server redrafter", "in-process ar", "server ar"}
    assert len({row["tokens"] for row in table.values()}) == 1 and all(r["tokens_per_s"] > 0 for r in table.values())
    assert json.loads((dirs["root"] / "server_bench.json").read_text())["identical"] == 2
    assert load["sockets_opened"] >= 300 and load["long_prompt_error"] is None and load["long_prompt_s"] > 0
    assert load["health_polls"] >= 1 and load["health_ms_max"] < 1000  # 300 idle sockets lock nobody out
    assert load["failure_count"] == 0 and load["loaded_requests"] == 2


def test_measure_warms_each_prompt_up_untimed():
    """Before each prompt a method may compile its kernels (a new prompt-length bucket on a
    GPU): measure() calls its warm-up first, outside the timed run."""
    calls = []

    def run(prompt, stats):
        calls.append(("run", prompt[0]))
        return iter([prompt])

    runners = {"ar": benchmark.Runner(run, 0, 0, lambda prompt: calls.append(("warm", prompt[0])))}
    totals = benchmark.measure(runners, [[1], [2]], greedy=True)
    assert calls == [("warm", 1), ("run", 1), ("warm", 1), ("run", 1), ("warm", 2), ("run", 2)]
    assert totals["ar"]["tokens"] == 2


def test_measure_runs_apart_methods_after_the_interleaved_ones():
    """mlx-lm's methods (apart) run over every prompt after ours have run interleaved; partial
    results hold only the methods that have run, each with its prompts so far."""
    calls, partial = [], []

    def runner(name, apart=False):
        def run(prompt, stats):
            calls.append((name, prompt[0]))
            return iter([prompt])
        return benchmark.Runner(run, 0, 0, apart=apart)

    runners = {"ar": runner("ar"), "mlx_lm_ar": runner("mlx_lm_ar", apart=True), "redrafter_2x3": runner("rd")}
    meta = dict(device="cpu", dtype="float32", model="m", mlx="0", max_tokens=1, temp=0.0, top_p=1.0)
    totals = benchmark.measure(runners, [[1], [2]], greedy=True,
                               after_prompt=lambda t: partial.append(benchmark.rows_from(t, runners, meta)))
    assert calls == [("ar", 1), ("rd", 1), ("ar", 1), ("rd", 1), ("ar", 2), ("rd", 2),  # warm-up, then the prompts
                     ("mlx_lm_ar", 1), ("mlx_lm_ar", 1), ("mlx_lm_ar", 2)]
    assert [[(row["method"], row["prompts"]) for row in rows] for rows in partial] == [
        [("ar", 1), ("redrafter_2x3", 1)], [("ar", 2), ("redrafter_2x3", 2)],
        [("ar", 2), ("mlx_lm_ar", 1), ("redrafter_2x3", 2)], [("ar", 2), ("mlx_lm_ar", 2), ("redrafter_2x3", 2)]]
    compared = lambda rows: [(r["method"], r["speedup_vs_ar"] != "", r["speedup_vs_mlx_lm"] != "") for r in rows]  # noqa: E731
    assert compared(partial[2]) == [("ar", True, False), ("mlx_lm_ar", False, True),  # over the same prompts only
                                    ("redrafter_2x3", True, False)]
    assert all(ar and lm for _, ar, lm in compared(partial[3]))
    assert totals["mlx_lm_ar"]["mismatches"] == 0  # compared with our AR's outputs of the first pass
    assert [tokens for tokens, _ in totals["redrafter_2x3"]["per_prompt"]] == [1, 1]  # each prompt's run, in order


def test_plots_command_line(tmp_path):
    """Plots over the fastest of our AR forms; one-line errors for a missing or foreign results file."""
    from demos import plots
    from redrafter_mlx.errors import UsageError

    rows = [dict(method="ar", tokens_per_s=100.0), dict(method="ar_dense", tokens_per_s=125.0),
            dict(method="redrafter_2x3", tokens_per_s=250.0)]
    assert plots.speedups(rows) == {"ar": 0.8, "ar_dense": 1.0, "redrafter_2x3": 2.0}
    with pytest.raises(UsageError, match="usage"):
        plots.main([])
    with pytest.raises(UsageError, match="not a demos.benchmark results file"):
        plots.main([str(tmp_path)])
    for text in ("[1, 2]", '{"rows": [1]}', '{"rows": []}', '{"rows": [{"method": "redrafter_2x3"}]}'):
        (tmp_path / "results.json").write_text(text)
        with pytest.raises(UsageError, match="not a demos.benchmark results file"):
            plots.main([str(tmp_path)])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_drafter_accuracy_reports_on_a_drafter_without_a_ranking(dirs, capsys):
    """A drafter that scores every token needs no draft_vocab.json (Apple's, converted): the
    report leaves out only the comparison with larger draft vocabularies. A minimum match
    that proposes nothing reports "-", not nan (and numpy's warnings)."""
    from demos import drafter_accuracy

    assert not (dirs["drafter"] / "draft_vocab.json").exists()
    drafter_accuracy.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]), "--prompts",
                           str(dirs["prompts"]), "--num-prompts", "2", "--max-tokens", "8", "--lookup"])
    out = capsys.readouterr().out
    assert "answer tokens outside the draft vocabulary (16): 0.000" in out and "most frequent" not in out
    assert "predicted tokens/step at 1x4" in out and "lookup, min match 4" in out and "nan" not in out


def test_prompt_sets_need_a_usable_cache_only_to_fetch(tmp_path, monkeypatch):
    from demos.prompts import load_prompts
    from redrafter_mlx.errors import UsageError

    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("REDRAFTER_CACHE", str(tmp_path / "file"))
    with pytest.raises(UsageError, match="cache directory .*file is a file: set REDRAFTER_CACHE"):
        load_prompts("mtbench")


def test_server_bench_times_a_reply_without_text_to_its_end(tmp_path):
    """A model whose first token is its EOS answers no text: its time to the first text is
    the reply's whole time, and the summary has one."""
    from types import SimpleNamespace

    import mlx.core as mx

    from demos.server_bench import Local, summary
    from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir

    model = tiny_model(2, "llama", vocab=16, tie_word_embeddings=False)
    model.lm_head.weight = mx.zeros_like(model.lm_head.weight)  # every logit equal: the argmax is w0, the EOS
    write_model_dir(tmp_path / "model", model)
    write_drafter_dir(tmp_path / "drafter", tiny_drafter(model, 3))
    local = Local(SimpleNamespace(model=str(tmp_path / "model"), drafter=str(tmp_path / "drafter"), beam="2x3"))
    runs = [local.run("w3 w4", 4, mode) for mode in ("ar", "redrafter")]
    assert all(run.text == "" and run.first_token == run.seconds for run in runs)
    assert summary(runs)["ttft_ms_median"] > 0


def test_drafter_accuracy_refuses_answers_too_short_to_score(dirs, capsys):
    """Answers of one token leave no position to score: one line, not rows of nan."""
    from demos import drafter_accuracy

    with pytest.raises(SystemExit) as exited:
        drafter_accuracy.main(["--model", str(dirs["model"]), "--drafter", str(dirs["drafter"]), "--prompts",
                               str(dirs["prompts"]), "--num-prompts", "2", "--max-tokens", "1", "--lookup"])
    captured = capsys.readouterr()
    assert exited.value.code == 2 and captured.out == ""
    assert captured.err.strip() == ("error: no answer position to score: every answer was shorter than 2 tokens "
                                    "(--max-tokens 1)")
