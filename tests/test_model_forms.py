"""--model in every form a user holds a model: a repo in the local Hugging Face cache, a
.gguf file, a quantized directory (made dense on CPUs); the shipped drafter found by the
fingerprint of what it depends on, whatever the form; and the waits and flags that used to
pass without a word now saying so."""

import io
import json
import re
import shutil
import sys
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import pytest

from redrafter_mlx import generate, models, server
from redrafter_mlx.model import fingerprint
from redrafter_mlx.decode import generate_ar
from redrafter_mlx.errors import UsageError
from redrafter_mlx.model.load import load_model, save_module
from redrafter_mlx.policy import CPU, GPU
from redrafter_mlx.decode.stats import Stats
from helpers.commands import run_generate
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir, write_tokenizer

REPO, REVISION = "org/tiny", "0123abcd"


def notes(err: str) -> list:
    return [line for line in err.splitlines() if line.startswith("[redrafter_mlx]")]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding org/tiny, and shipped drafters: one trained for it
    (its fingerprint in target.json) and one for a model with one more layer."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    model = tiny_model(0, vocab=16)
    repo = cache / "models--org--tiny"
    snapshot = write_model_dir(repo / "snapshots" / REVISION, model)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("REDRAFTER_CACHE", str(tmp_path / "cache"))
    other = tiny_model(0, vocab=16, num_hidden_layers=3)
    other_dir = write_model_dir(tmp_path / "other", other)
    shipped = tmp_path / "drafters"
    right = write_drafter_dir(shipped / "a-right", tiny_drafter(model))
    wrong = write_drafter_dir(shipped / "b-wrong", tiny_drafter(other))
    fingerprint.write(right, snapshot)
    fingerprint.write(wrong, other_dir)
    monkeypatch.setattr(models, "DRAFTERS", shipped)
    return SimpleNamespace(model=model, snapshot=snapshot, right=right, wrong=wrong, root=tmp_path)


def test_a_repo_id_is_found_in_the_hf_cache_with_the_drafter_its_fingerprint_picks(hub):
    assert models.resolve(REPO, None) == (hub.snapshot, hub.right)


def test_a_drafter_trained_for_another_model_is_refused(hub):
    with pytest.raises(UsageError, match="trained for another model .* differs in num_hidden_layers"):
        models.resolve(REPO, str(hub.wrong))


def test_another_vocabulary_gets_no_drafter(hub):
    renumbered = hub.root / "renumbered"
    shutil.copytree(hub.snapshot, renumbered)
    vocab = json.loads((renumbered / "tokenizer.json").read_text())
    vocab["model"]["vocab"] = {token: 15 - i for token, i in vocab["model"]["vocab"].items()}
    (renumbered / "tokenizer.json").write_text(json.dumps(vocab))
    assert fingerprint.differences(fingerprint.fingerprint(hub.snapshot), fingerprint.fingerprint(renumbered)) == \
        ["vocabulary"]
    assert models.resolve(str(renumbered), None, need_drafter=False) == (renumbered, None)
    with pytest.raises(UsageError, match="no shipped drafter fits it"):
        models.resolve(str(renumbered), None)


def test_a_repo_missing_offline_is_one_line(hub):
    with pytest.raises(UsageError, match="not in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
        models.resolve("org/absent", None, need_drafter=False)


def test_generate_takes_a_repo_id_and_decodes_with_its_drafter_or_says_why_not(hub, monkeypatch, capfd):
    base = ["--model", REPO, "--prompt", "w3 w4", "--max-tokens", "3", "--no-chat-template"]
    code, _, err = run_generate(monkeypatch, capfd, *base)
    assert code == 0 and "Steps:" in err and "no shipped drafter" not in err, err  # ReDrafter, its drafter found
    shutil.rmtree(hub.right)
    code, _, err = run_generate(monkeypatch, capfd, *base, "--beam", "2x3")
    assert code == 0 and "Steps:" not in err, err  # auto-regressive
    assert [line for line in notes(err) if "no shipped drafter fits" in line and "--beam unused" in line], err


def hf_style_tokenizer(path, gguf_vocab, merges):
    """tokenizer.json as Hugging Face writes it for the vocabulary a GGUF holds: its special
    tokens only among the added tokens, merges as pairs."""
    specials = {0: "<s>", 1: "</s>"}
    data = {"added_tokens": [{"id": i, "content": t, "special": True} for i, t in specials.items()],
            "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(gguf_vocab) if i not in specials},
                      "merges": [m.split(" ") for m in merges]}}
    (path / "tokenizer.json").write_text(json.dumps(data))


def test_a_gguf_file_is_converted_once_and_keeps_the_fingerprint_of_its_other_forms(tmp_path, monkeypatch, capfd):
    pytest.importorskip("gguf")
    from gguf import GGMLQuantizationType as Q
    from test_gguf import VOCAB, write_gguf

    monkeypatch.setenv("REDRAFTER_CACHE", str(tmp_path / "cache"))
    model = tiny_model(0, vocab=len(VOCAB))
    write_gguf(tmp_path / "tiny.gguf", model, Q.F32)
    args = ["--model", tmp_path / "tiny.gguf", "--prompt", "ab", "--max-tokens", "2", "--no-chat-template"]
    code, _, err = run_generate(monkeypatch, capfd, *args)
    assert code == 0 and "converting" in err and "no shipped drafter fits" in err, err
    converted = list((tmp_path / "cache").glob("gguf-*-float32"))
    assert len(converted) == 1
    code, _, err = run_generate(monkeypatch, capfd, *args)
    assert code == 0 and "converting" not in err, err  # cached by checksum
    other_form = write_model_dir(tmp_path / "hf_form", model)
    hf_style_tokenizer(other_form, VOCAB, ["Ġ a", "a b", "Ġ ab"])
    assert fingerprint.fingerprint(other_form) == fingerprint.fingerprint(converted[0])


def greedy(model, tokens: int = 8) -> list:
    return [t for step in generate_ar(model, [3, 5, 7], max_tokens=tokens, policy=CPU, stats=Stats()) for t in step]


@pytest.fixture
def quantized(tmp_path, monkeypatch):
    """A 4-bit model directory as mlx-lm saves it, and the same model with its weights dense."""
    monkeypatch.setenv("REDRAFTER_CACHE", str(tmp_path / "cache"))
    model = tiny_model(0, vocab=16, hidden_size=64, intermediate_size=128)
    nn.quantize(model, group_size=32, bits=4)
    path = tmp_path / "q4"
    path.mkdir()
    save_module(model, {**model.config.to_dict(), "quantization": {"group_size": 32, "bits": 4}}, path)
    write_tokenizer(path, 16)
    return path, model


def test_a_quantized_directory_is_made_dense_once_on_cpus(quantized, capfd):
    path, model = quantized
    dense_dir, _ = models.resolve(str(path), None, need_drafter=False, policy=CPU)
    assert dense_dir.name.startswith("dense-q4-") and "made" not in capfd.readouterr().err
    dense = load_model(dense_dir, policy=CPU)
    assert not [m for _, m in dense.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]
    assert greedy(dense) == greedy(model)  # the same values, dense
    assert models.resolve(str(path), None, need_drafter=False, policy=CPU)[0] == dense_dir
    assert "dense" not in capfd.readouterr().err  # the copy is made once
    assert models.resolve(str(path), None, need_drafter=False, policy=GPU)[0] == path  # GPUs keep it 4-bit


def test_a_quantized_directory_loaded_directly_is_dense_on_cpus_and_says_so(quantized, capfd):
    path, _ = quantized
    capfd.readouterr()
    model = load_model(path, policy=CPU)
    assert model.dtype == mx.float32 and not isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert "4-bit weights made dense float32" in capfd.readouterr().err


def test_a_slow_dtype_on_the_device_says_how_slow(tmp_path, capfd):
    path = write_model_dir(tmp_path / "model", tiny_model(0, vocab=16))
    load_model(path, mx.bfloat16, policy=CPU)
    assert "--dtype bfloat16 decodes about" in capfd.readouterr().err
    load_model(path, mx.bfloat16, policy=GPU)
    assert "slower" not in capfd.readouterr().err


@pytest.mark.parametrize("cache", ["file", "under_file"])
def test_an_unusable_cache_directory_is_one_line_naming_redrafter_cache(tmp_path, monkeypatch, capfd, cache):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("REDRAFTER_CACHE", str(tmp_path / {"file": "file", "under_file": "file/cache"}[cache]))
    code, _, err = run_generate(monkeypatch, capfd, "--prompt", "hi")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "REDRAFTER_CACHE" in lines[0], err


def test_long_prefills_show_progress_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model = tiny_model(0, vocab=16)
    prompt = [3, 4, 5] * 400
    bar = generate.PrefillBar(len(prompt))
    for _ in generate_ar(model, prompt, max_tokens=1, policy=CPU, stats=Stats(), progress=bar):
        pass
    assert re.search(r"prefill: +[1-9]\d*%.* [1-9]\d*/1200 ", terminal.getvalue()), terminal.getvalue()
    assert bar.bar is None  # closed once the prompt is in
    assert generate.PrefillBar(generate.PROGRESS_MIN_TOKENS).bar is None  # short prompts: no bar


def test_a_generation_cut_at_max_tokens_says_so_and_prefill_is_reported(tmp_path, monkeypatch, capfd):
    path = write_model_dir(tmp_path / "model", tiny_model(0, vocab=16))
    code, out, err = run_generate(monkeypatch, capfd, "--model", path, "--mode", "ar", "--prompt", "w3 w4",
                                  "--max-tokens", "2", "--no-chat-template")
    assert code == 0 and "Prefill: " in err
    cut = len(out.split()) == 2 and "w0" not in out.split()  # w0: the tiny tokenizer's EOS
    assert ("stopped at --max-tokens 2" in err) == cut, (out, err)


def test_help_shows_the_defaults():
    assert "(default: 256)" in generate.build_parser().format_help()
    assert "(default: 512)" in server.build_parser().format_help()
    assert "auto: ReDrafter when a drafter fits" in generate.build_parser().format_help()


def test_cpu_decoding_without_openblas_says_so_once(monkeypatch, capsys):
    from redrafter_mlx import _blas
    from redrafter_mlx.policy import DecodePolicy

    monkeypatch.setattr(_blas, "_noted", False)
    monkeypatch.setattr(_blas, "DEFAULT_PATHS", ("/nonexistent/libopenblas.so.0",))
    monkeypatch.delenv("REDRAFTER_OPENBLAS", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("REDRAFTER_NO_OPENBLAS", "1")
    assert DecodePolicy.for_device(mx.cpu) is CPU
    assert capsys.readouterr().err == ""  # turned off: nothing to say
    monkeypatch.delenv("REDRAFTER_NO_OPENBLAS")
    DecodePolicy.for_device(mx.cpu)
    DecodePolicy.for_device(mx.cpu)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "OpenBLAS not found" in lines[0] and "libopenblas0-pthread" in lines[0]


def test_cpu_decoding_with_openblas_found_says_nothing(tmp_path, monkeypatch, capsys):
    from redrafter_mlx import _blas
    from redrafter_mlx.policy import DecodePolicy

    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"")
    monkeypatch.setattr(_blas, "_noted", False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("REDRAFTER_NO_OPENBLAS", raising=False)
    monkeypatch.setenv("REDRAFTER_OPENBLAS", str(library))
    DecodePolicy.for_device(mx.cpu)
    assert capsys.readouterr().err == ""
