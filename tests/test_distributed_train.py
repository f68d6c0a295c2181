"""`train data` and `train fit` in two processes under mlx.launch (the ring backend over
loopback) give what one process gives (select with `pytest -m distributed`)."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.training.data import read_shard, save_sequences
from redrafter_mlx.train import main as train_main
from helpers.tiny import tiny_model, write_model_dir

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now (the ring backend
    listens on one per process, from mlx.launch's --starting-port up)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, s in enumerate(sockets):
                s.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def launch(processes: int, *train_args: str):
    """python -m redrafter_mlx.train ARGS in `processes` processes under mlx.launch (ring, loopback)."""
    launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or shutil.which("mlx.launch")
    command = [launcher, "--backend", "ring", "-n", str(processes), "--starting-port", str(free_ports(processes)),
               "--", sys.executable, "-m", "redrafter_mlx.train", *train_args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "exited with code" not in done.stderr, done.stdout + done.stderr  # exits 0 anyway
    return done.stderr


def tiny_setup(tmp_path, prompts: int):
    model = tiny_model(0, "llama", vocab=16)
    model_dir = write_model_dir(tmp_path / "model", model)
    rng = np.random.default_rng(0)
    lines = [json.dumps({"prompt": " ".join(f"w{t}" for t in rng.integers(1, 16, size=rng.integers(2, 7)))})
             for _ in range(prompts)]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return model_dir, tmp_path / "prompts.jsonl"


def test_two_processes_write_the_shards_of_one(tmp_path):
    """Greedy answers in 5 batches: the processes take batches 0, 2, 4 and 1, 3 and write the
    same shards as one process; a shard already there is kept (resumable)."""
    model_dir, prompts = tiny_setup(tmp_path, prompts=40)
    common = ["--model", str(model_dir), "--prompts", str(prompts), "--batch-size", "8", "--max-new-tokens", "12",
              "--max-prompt-tokens", "8"]
    train_main(["data", *common, "--out", str(tmp_path / "one")])
    two = tmp_path / "two"
    save_sequences(two / "shard-00003.npz", [[1, 2, 3]], [1])  # from an earlier run
    launch(2, "data", *common, "--out", str(two))
    names = sorted(p.name for p in (tmp_path / "one").glob("shard-*.npz"))
    assert names == [f"shard-{n:05d}.npz" for n in range(5)]
    assert sorted(p.name for p in two.glob("shard-*.npz")) == names
    for name in names:
        if name == "shard-00003.npz":
            assert read_shard(two / name)[0].tolist() == [1, 2, 3]
            continue
        for one_array, two_array in zip(read_shard(tmp_path / "one" / name), read_shard(two / name)):
            np.testing.assert_array_equal(one_array, two_array, err_msg=name)
    infos = [json.loads((tmp_path / run / "info.json").read_text()) for run in ("one", "two")]
    _, offsets, prompt_lengths = read_shard(tmp_path / "one" / "shard-00003.npz")
    skipped = int((np.diff(offsets) - prompt_lengths).sum())  # its answer tokens
    assert infos[1]["prompts"] == infos[0]["prompts"]
    assert infos[1]["answer_tokens_generated_now"] == infos[0]["answer_tokens_generated_now"] - skipped > 0


def test_two_processes_fit_the_drafter_of_one(tmp_path):
    """The rows of every batch split between two processes (3 rows: one padded), distilled, two
    drafters at once: the same weights, losses and held-out accuracies as one process."""
    model_dir, prompts = tiny_setup(tmp_path, prompts=48)
    train_main(["data", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "data"),
                "--batch-size", "48", "--max-new-tokens", "16", "--max-prompt-tokens", "8"])

    def fit_args(name):
        out = tmp_path / name
        return ["fit", "--model", str(model_dir), "--data", str(tmp_path / "data"), "--out", str(out / "own"),
                "--epochs", "2", "--batch-tokens", "192", "--distill", "0.5", "--log-every", "1",
                "--eval-fraction", "0.2", "--save-dtype", "float32", "--also", f"out={out / 'target'},head=target"]

    train_main(fit_args("one"))
    output = launch(2, *fit_args("two"))
    assert output.count('"epoch": 2') == 2  # the log lines of rank 0 only (one per drafter)
    for drafter in ("own", "target"):
        one, two = (mx.load(str(tmp_path / run / drafter / "model.safetensors")) for run in ("one", "two"))
        assert set(one) == set(two)
        for name in one:
            np.testing.assert_allclose(np.array(two[name]), np.array(one[name]), atol=1e-5, err_msg=name)
        logs = [json.loads((tmp_path / run / drafter / "training.json").read_text())["log"] for run in ("one", "two")]
        assert [e["step"] for e in logs[1]] == [e["step"] for e in logs[0]]
        for entry_one, entry_two in zip(*logs):
            for key in ("loss", "held_out_top1_per_step"):
                np.testing.assert_allclose(entry_two.get(key, 0), entry_one.get(key, 0), atol=2e-4)
