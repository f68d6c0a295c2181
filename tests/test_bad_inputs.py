"""Bad inputs to every command line, as a table: each row must exit with status 2, print
exactly one line on stderr that names the file or flag at fault, no traceback, and leave
no file behind. Rows run in-process (each CLI's main(argv)); hypothesis adds generated
config values and flag values."""

import io
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import mlx.core as mx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from mlx.utils import tree_flatten

from convert.__main__ import main as convert_main
from convert.gguf_header import _Cursor
from demos import benchmark, server_bench, side_by_side
from redrafter_mlx import generate, server, train
from redrafter_mlx.training.data import save_sequences
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir

gguf = pytest.importorskip("gguf")
from test_gguf import VOCAB, Q, write_gguf  # noqa: E402  (needs gguf)

CLIS = {"generate": generate.main, "train": train.main, "convert": convert_main, "benchmark": benchmark.main,
        "side_by_side": side_by_side.main, "server": server.main, "server_bench": server_bench.main}
MODEL_CONFIG = "model/config.json"


def listing(root: Path) -> set:
    """Every path under root, hidden ones included, with file sizes."""
    return {(str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def variant(root: Path, name: str, base: str, config=None, edit=None, files=None, remove=()):
    """A copy of root/base as root/name: config replaces config.json's dict (a callable edits
    it; a string or bytes is written as is), files adds {name: bytes}, remove deletes files."""
    path = root / name
    shutil.copytree(root / base, path)
    if config is not None:
        data = config if isinstance(config, (str, bytes)) else json.dumps(config)
        (path / "config.json").write_bytes(data.encode() if isinstance(data, str) else data)
    if edit is not None:
        raw = json.loads((path / "config.json").read_text())
        edit(raw)
        (path / "config.json").write_text(json.dumps(raw))
    for file_name, data in (files or {}).items():
        (path / file_name).write_bytes(data)
    for file_name in remove:
        (path / file_name).unlink()
    return path


def setter(**values):
    return lambda raw: raw.update(values)


def deleter(*keys):
    return lambda raw: [raw.pop(k) for k in keys]


def gguf_offsets(path: Path) -> dict:
    """Byte offsets in a GGUF header: the first key's length, the first tensor's dimension count and type."""
    with open(path, "rb") as f:
        cursor = _Cursor(f)
        f.seek(16)
        fields = cursor.unpack("Q")
        offsets = {"first_key_length": f.tell()}
        for _ in range(fields):
            cursor.string()
            cursor.skip_value(cursor.unpack("I"))
        cursor.string()
        offsets["first_dims"] = f.tell()
        dims = cursor.unpack("I")
        f.seek(8 * dims, 1)
        offsets["first_type"] = f.tell()
    return offsets


def patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    out[offset:offset + struct.calcsize("<" + fmt)] = struct.pack("<" + fmt, value)
    return bytes(out)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model = tiny_model(0, "llama", vocab=16)
    write_model_dir(root / "model", model)
    write_drafter_dir(root / "drafter", tiny_drafter(model))
    write_drafter_dir(root / "wide_drafter", tiny_drafter(tiny_model(0, vocab=16, hidden_size=48)))
    write_drafter_dir(root / "target_head_drafter", tiny_drafter(model, head="target"))
    write_drafter_dir(root / "vocab_drafter", tiny_drafter(tiny_model(0, vocab=20)))
    variant(root, "small_window", "model", edit=setter(max_position_embeddings=8))
    variant(root, "sliding_window", "model", edit=setter(model_type="mistral", max_position_embeddings=64,
                                                         sliding_window=8))  # Mistral v0.1's form
    variant(root, "rows_drafter", "drafter", edit=setter(draft_vocab_size=8, head_rows=8))  # config only: refused first
    variant(root, "vocab_drafter_json", "drafter", files={"draft_vocab.json": json.dumps(
        {"token_ids": list(range(16))}).encode()})
    weights = (root / "model" / "model.safetensors").read_bytes()
    drafter_weights = (root / "drafter" / "model.safetensors").read_bytes()
    other = root / "other_weights"
    write_model_dir(other, tiny_model(0, vocab=16, hidden_size=48))

    model_configs = {
        "cfg_list": "[]", "cfg_invalid": "{\"model_type\": ", "cfg_empty": "", "cfg_binary": b"\xff\xfe{\x00\x81",
        "cfg_string_size": setter(hidden_size="32"), "cfg_bool_size": setter(hidden_size=True),
        "cfg_nan_size": '{"model_type": "llama", "hidden_size": NaN, "num_hidden_layers": 2, '
                        '"intermediate_size": 48, "num_attention_heads": 4, "vocab_size": 16}',
        "cfg_negative": setter(hidden_size=-32), "cfg_absurd": setter(hidden_size=10 ** 12),
        "cfg_zero_vocab": setter(vocab_size=0), "cfg_zero_heads": setter(num_attention_heads=0),
        "cfg_kv_heads": setter(num_key_value_heads=3), "cfg_inf_eps": '{"model_type": "llama", "hidden_size": 32, '
        '"num_hidden_layers": 2, "intermediate_size": 48, "num_attention_heads": 4, "vocab_size": 16, '
        '"rms_norm_eps": Infinity}',
        "cfg_rope_theta": setter(rope_theta=-1.0), "cfg_window_string": setter(max_position_embeddings="big"),
        "cfg_no_vocab": deleter("vocab_size"), "cfg_no_type": deleter("model_type"),
        "cfg_gpt2": setter(model_type="gpt2"), "cfg_bits": setter(quantization={"group_size": 64, "bits": 3.5}),
        "cfg_yarn": setter(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "cfg_eos": setter(eos_token_id=999),
        "cfg_tie_string": setter(tie_word_embeddings="yes"), "cfg_head_dim": setter(head_dim=7),
        "cfg_layers_float": setter(num_hidden_layers=2.0),
    }
    for name, config in model_configs.items():
        variant(root, name, "model", **({"edit": config} if callable(config) else {"config": config}))
    drafter_configs = {
        "dcfg_exit_string": setter(exit_dim="64"), "dcfg_layers_negative": setter(num_draft_layers=-1),
        "dcfg_vocab_size": setter(draft_vocab_size=17), "dcfg_context": setter(context_layers="0"),
        "dcfg_list": "[1, 2]", "dcfg_rnn": setter(rnn="no"), "dcfg_head": setter(head="shared"),
        "dcfg_nan_eps": '{"hidden_size": 32, "vocab_size": 16, "exit_dim": 64, "num_draft_layers": 2, '
                        '"rms_norm_eps": NaN}',
    }
    for name, config in drafter_configs.items():
        variant(root, name, "drafter", **({"edit": config} if callable(config) else {"config": config}))
    for name, data in {"dv_invalid": b"{", "dv_out_of_vocab": json.dumps({"token_ids": [1, 2, 99]}).encode(),
                       "dv_string": json.dumps({"token_ids": "abc"}).encode(), "dv_list": b"[1, 2, 3]",
                       "dv_binary": b"\x00\xff\x13"}.items():
        variant(root, name, "drafter", files={"draft_vocab.json": data})
    variant(root, "st_truncated", "model", files={"model.safetensors": weights[:len(weights) // 2]})
    variant(root, "st_header", "model", files={"model.safetensors": b"\xff" * 16 + weights[16:]})
    variant(root, "st_empty", "model", files={"model.safetensors": b""})
    variant(root, "st_other", "model", files={"model.safetensors": (other / "model.safetensors").read_bytes()})
    variant(root, "st_none", "model", remove=["model.safetensors"])
    variant(root, "st_drafter_truncated", "drafter", files={"model.safetensors": drafter_weights[:100]})
    variant(root, "no_tokenizer", "model", remove=["tokenizer.json", "tokenizer_config.json"])
    variant(root, "bad_tokenizer", "model", files={"tokenizer.json": b"{\"version\": "})
    (root / "empty_dir").mkdir()
    (root / "a_file.gguf").write_bytes(b"GGUF")
    (root / "notes.txt").write_text("not a model")

    # prompt files
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}"}) + "\n" for i in range(3)))
    (root / "prompts_long.jsonl").write_text(json.dumps({"prompt": " ".join(["w3"] * 12)}) + "\n")
    (root / "prompts_binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    (root / "prompts_invalid.jsonl").write_text('{"prompt": "w1"\n')
    (root / "prompts_nokey.jsonl").write_text('{"text": "w1"}\n')
    (root / "prompts_empty.jsonl").write_text("")
    (root / "prompts_sharegpt_binary.json").write_bytes(bytes(range(256)) * 4)
    (root / "prompts_sharegpt_items.json").write_text('[1, 2, 3]')
    (root / "prompts_dir.jsonl").mkdir()

    # training data
    save_sequences(root / "data" / "shard-00000.npz", [[3, 4, 5, 6, 7, 8]] * 4, [2] * 4)
    (root / "data_empty").mkdir()
    (root / "data_corrupt").mkdir()
    (root / "data_corrupt" / "shard-00000.npz").write_bytes(b"PK\x03\x04 not a zip")
    save_sequences(root / "data_other_vocab" / "shard-00000.npz", [[3, 4, 5, 60, 7, 8]] * 4, [2] * 4)

    # conversion sources: an HF directory, GGUF files
    hf = variant(root, "hf", "model")
    params = dict(tree_flatten(tiny_model(0, "llama", vocab=16).parameters()))
    params["model.norm.weight"] = mx.full(params["model.norm.weight"].shape, math.nan)
    variant(root, "hf_nan", "hf", remove=["model.safetensors"])
    mx.save_safetensors(str(root / "hf_nan" / "model.safetensors"), params)
    variant(root, "hf_pickle", "hf", remove=["model.safetensors"], files={"pytorch_model.bin": b"\x80\x02}q\x00."})
    variant(root, "hf_bad_config", "hf", edit=setter(intermediate_size="48"))
    variant(root, "hf_truncated", "hf", files={"model.safetensors": weights[:1000]})
    assert hf.is_dir()
    gguf_model = tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=64, intermediate_size=96, scale=0.1)
    write_gguf(root / "m.gguf", gguf_model, Q.F32)
    data = (root / "m.gguf").read_bytes()
    offsets = gguf_offsets(root / "m.gguf")
    ggufs = {"g_header": data[:100], "g_tensors": data[:len(data) - 5000], "g_magic": b"GGML" + data[4:],
             "g_type": patched(data, offsets["first_type"], "I", 200),
             "g_dims": patched(data, offsets["first_dims"], "I", 9),
             "g_key_length": patched(data, offsets["first_key_length"], "Q", 2 ** 60),
             "g_version": patched(data, 4, "I", 7), "g_arch": data.replace(b"llama", b"llamb"),
             "g_empty": b""}
    for name, content in ggufs.items():
        (root / f"{name}.gguf").write_bytes(content)
    (root / "exists").mkdir()
    (root / "cwd").mkdir()
    (root / "out_file").write_text("a file")
    return root


IDS = []


def rows():
    """(id, cli, argv template, stdin bytes or None, fragment that the error line must hold)."""
    M, D = "--model {root}/model", "--drafter {root}/drafter"
    G = f"{M} {D} --prompt w3 --max-tokens 3 --no-chat-template"
    table = [
        # generate: paths and file kinds
        ("gen_missing_model", "generate", "--model {root}/nope {D} --prompt w3", None, "--model {root}/nope: no such directory"),
        ("gen_missing_model_first", "generate", "--model {root}/nope --prompt w3", None, "--model {root}/nope"),
        ("gen_model_is_file", "generate", "--model {root}/notes.txt {D} --prompt w3", None, "a file, not a model directory"),
        ("gen_model_bad_gguf", "generate", "--model {root}/a_file.gguf {D} --prompt w3", None, "a_file.gguf"),
        ("gen_model_empty_dir", "generate", "--model {root}/empty_dir {D} --prompt w3", None, "empty_dir: no config.json"),
        ("gen_missing_drafter", "generate", "{M} --drafter {root}/nope --prompt w3", None, "--drafter {root}/nope: no such drafter directory"),
        ("gen_drafter_is_model", "generate", "{M} --drafter {root}/model --prompt w3", None, "model/config.json: lacks exit_dim"),
        ("gen_model_is_drafter", "generate", "--model {root}/drafter {D} --prompt w3", None, "drafter/config.json: is a drafter's config, not a model's"),
        ("gen_no_drafter", "generate", "{M} --mode redrafter --prompt w3", None, "no shipped drafter fits it"),
        ("gen_ar_beam", "generate", "{M} --mode ar --beam 2x3 --prompt w3", None, "--beam is for ReDrafter decoding"),
        ("gen_lookup_sampling", "generate", "{M} {D} --temp 1 --lookup 2 --prompt w3", None,
         "--lookup is for greedy decoding"),
        ("gen_sampled_drafts_greedy", "generate", "{M} {D} --sampled-drafts iid --prompt w3", None,
         "--sampled-drafts is for sampling"),
        # model configs
        *[(f"gen_{name}", "generate", f"--model {{root}}/{name} {D} --prompt w3", None, fragment) for name, fragment in [
            ("cfg_list", "cfg_list/config.json: must hold a JSON object, got list"),
            ("cfg_invalid", "cfg_invalid/config.json: invalid JSON"),
            ("cfg_empty", "cfg_empty/config.json: invalid JSON"),
            ("cfg_binary", "cfg_binary/config.json: not UTF-8"),
            ("cfg_string_size", "cfg_string_size/config.json: hidden_size must be an integer"),
            ("cfg_bool_size", "cfg_bool_size/config.json: hidden_size must be an integer"),
            ("cfg_nan_size", "cfg_nan_size/config.json: hidden_size must be an integer"),
            ("cfg_negative", "cfg_negative/config.json: hidden_size must be an integer in 1.."),
            ("cfg_absurd", "cfg_absurd/config.json: hidden_size must be an integer in 1..65536"),
            ("cfg_zero_vocab", "cfg_zero_vocab/config.json: vocab_size"),
            ("cfg_zero_heads", "cfg_zero_heads/config.json: num_attention_heads"),
            ("cfg_kv_heads", "cfg_kv_heads/config.json: num_attention_heads must be a multiple of num_key_value_heads"),
            ("cfg_inf_eps", "cfg_inf_eps/config.json: rms_norm_eps must be a finite number"),
            ("cfg_rope_theta", "cfg_rope_theta/config.json: rope_theta must be a finite number > 0"),
            ("cfg_window_string", "cfg_window_string/config.json: max_position_embeddings"),
            ("cfg_no_vocab", "cfg_no_vocab/config.json: lacks vocab_size"),
            ("cfg_no_type", "cfg_no_type/config.json: lacks model_type"),
            ("cfg_gpt2", "cfg_gpt2/config.json: unsupported model_type 'gpt2'"),
            ("cfg_bits", "cfg_bits/config.json: quantization bits"),
            ("cfg_yarn", "cfg_yarn/config.json: unsupported rope_scaling type 'yarn'"),
            ("cfg_eos", "cfg_eos/config.json: eos_token_id"),
            ("cfg_tie_string", "cfg_tie_string/config.json: tie_word_embeddings must be true or false"),
            ("cfg_head_dim", "cfg_head_dim/config.json: head_dim"),
            ("cfg_layers_float", "cfg_layers_float/config.json: num_hidden_layers must be an integer"),
        ]],
        # drafter configs and draft vocabularies
        *[(f"gen_{name}", "generate", f"{M} --drafter {{root}}/{name} --prompt w3", None, fragment) for name, fragment in [
            ("dcfg_exit_string", "dcfg_exit_string/config.json: exit_dim must be an integer"),
            ("dcfg_layers_negative", "dcfg_layers_negative/config.json: num_draft_layers"),
            ("dcfg_vocab_size", "dcfg_vocab_size/config.json: draft_vocab_size must be an integer in 0..16"),
            ("dcfg_context", "dcfg_context/config.json: context_layers must be a list"),
            ("dcfg_list", "dcfg_list/config.json: must hold a JSON object"),
            ("dcfg_rnn", "dcfg_rnn/config.json: rnn must be true or false"),
            ("dcfg_head", "dcfg_head/config.json: drafter head must be 'own' or 'target'"),
            ("dcfg_nan_eps", "dcfg_nan_eps/config.json: rms_norm_eps"),
        ]],
        *[(f"gen_{name}", "generate", f"{M} --drafter {{root}}/{name} --draft-vocab 4 --prompt w3", None, fragment)
          for name, fragment in [
            ("dv_invalid", "dv_invalid/draft_vocab.json: invalid JSON"),
            ("dv_out_of_vocab", "dv_out_of_vocab/draft_vocab.json: token_ids[2] must be a token id in 0..15, got 99"),
            ("dv_string", "dv_string/draft_vocab.json: token_ids must be a non-empty list"),
            ("dv_list", "dv_list/draft_vocab.json: must hold a JSON object with token_ids"),
            ("dv_binary", "dv_binary/draft_vocab.json: not UTF-8"),
            ("drafter", "drafter/draft_vocab.json: no token frequency list for --draft-vocab"),
        ]],
        ("gen_draft_vocab_too_large", "generate", f"{M} --drafter {{root}}/vocab_drafter_json --draft-vocab 17 --prompt w3",
         None, "--draft-vocab must be in 1..16"),
        ("gen_hidden_mismatch", "generate", f"{M} --drafter {{root}}/wide_drafter --prompt w3", None,
         "wide_drafter: does not fit the model: drafter hidden_size 48 != model hidden_size 32"),
        ("gen_vocab_mismatch", "generate", f"{M} --drafter {{root}}/vocab_drafter --prompt w3", None,
         "vocab_drafter: does not fit the model: drafter vocab_size 20 != model vocab_size 16"),
        # weights
        ("gen_st_truncated", "generate", f"--model {{root}}/st_truncated {D} --prompt w3", None, "st_truncated/model.safetensors: cannot read safetensors"),
        ("gen_st_header", "generate", f"--model {{root}}/st_header {D} --prompt w3", None, "st_header/model.safetensors: cannot read safetensors"),
        ("gen_st_empty", "generate", f"--model {{root}}/st_empty {D} --prompt w3", None, "st_empty/model.safetensors: cannot read safetensors"),
        ("gen_st_other", "generate", f"--model {{root}}/st_other {D} --prompt w3", None, "st_other: weights do not match the config"),
        ("gen_st_none", "generate", f"--model {{root}}/st_none {D} --prompt w3", None, "st_none: no *.safetensors weights"),
        ("gen_st_drafter", "generate", f"{M} --drafter {{root}}/st_drafter_truncated --prompt w3", None, "st_drafter_truncated/model.safetensors: cannot read"),
        ("gen_no_tokenizer", "generate", f"--model {{root}}/no_tokenizer {D} --prompt w3", None, "no_tokenizer: no tokenizer files"),
        ("gen_bad_tokenizer", "generate", f"--model {{root}}/bad_tokenizer {D} --prompt w3", None, "bad_tokenizer: cannot load the tokenizer"),
        # flags
        ("gen_max_tokens_0", "generate", f"{G} --max-tokens 0", None, "argument --max-tokens: must be >= 1, got 0"),
        ("gen_max_tokens_text", "generate", f"{G} --max-tokens many", None, "argument --max-tokens: expected an integer"),
        ("gen_temp_negative", "generate", f"{G} --temp -1", None, "argument --temp"),
        ("gen_temp_nan", "generate", f"{G} --temp nan", None, "argument --temp: must be a finite number"),
        ("gen_top_p_0", "generate", f"{G} --top-p 0", None, "argument --top-p"),
        ("gen_top_p_large", "generate", f"{G} --top-p 1.5", None, "argument --top-p"),
        ("gen_top_k_negative", "generate", f"{G} --top-k -1", None, "argument --top-k: must be >= 0"),
        ("gen_top_k_greedy", "generate", f"{G} --top-k 5", None, "--top-k is for sampling (--temp > 0)"),
        ("gen_top_p_greedy", "generate", f"{G} --top-p 0.9", None, "--top-p is for sampling (--temp > 0)"),
        ("gen_temp_underflow", "generate", f"{G} --temp 1e-38", None,
         "temp must be 0 (greedy) or a finite number >= 0.001, got 1e-38"),
        ("gen_top_p_underflow", "generate", f"{G} --temp 0.7 --top-p 1e-46", None, "--top-p must be in [1e-06, 1], got 1e-46"),
        ("gen_beam_1x200", "generate", f"{G} --beam 1x200", None, "beam length must be in 2..16"),
        ("gen_beam_form", "generate", f"{G} --beam 2x", None, "--beam must be 'auto' or WIDTHxLENGTH"),
        ("gen_beam_tree", "generate", f"{G} --beam 100x11", None, "at most 1024 tokens per tree"),
        ("gen_beam_nodes_form", "generate", f"{G} --beam 4x4:x", None, "--beam must be 'auto' or WIDTHxLENGTH"),
        ("gen_beam_nodes_negative", "generate", f"{G} --beam 4x4:-3", None,
         "nodes must be 0 (the beams' tokens) or at least 1"),
        ("gen_beam_nodes_sampled", "generate", f"{G} --temp 0.7 --beam 4x4:8", None,
         "a tree of the best nodes is for greedy decoding"),
        ("gen_beam_width_0", "generate", f"{G} --beam-width 0", None, "beam width must be >= 1"),
        ("gen_beam_width_vocab", "generate", f"{G} --beam-width 17", None, "beam width must be in 1..16"),
        ("gen_lookup_negative", "generate", f"{G} --lookup -1", None, "argument --lookup: must be >= 0"),
        ("gen_lookup_long", "generate", f"{G} --lookup 5", None, "argument --lookup: must be in 0..4, got 5"),
        ("gen_draft_vocab_negative", "generate", f"{G} --draft-vocab -1", None, "argument --draft-vocab"),
        ("gen_seed_negative", "generate", f"{G} --seed -1", None, "argument --seed"),
        ("gen_dtype", "generate", f"{G} --dtype float64", None, "argument --dtype: invalid choice"),
        ("gen_mode", "generate", f"{G} --mode fast", None, "argument --mode: invalid choice"),
        ("gen_ar_with_drafter", "generate", f"{G} --mode ar", None, "--drafter is for --mode redrafter"),
        ("gen_unknown_flag", "generate", f"{G} --bogus", None, "unrecognized arguments: --bogus"),
        ("gen_draft_vocab_rows", "generate", f"{M} --drafter {{root}}/rows_drafter --prompt w3 --draft-vocab 4", None,
         "--draft-vocab 4: the drafter's head holds only the rows of its 8-token draft vocabulary"),
        ("gen_model_not_a_repo_id", "generate", "--model foo..bar/baz --prompt w3", None,
         "--model foo..bar/baz: no such directory, and not a model name"),
        ("gen_model_repo_id_dash", "generate", "--model foo/bar- --prompt w3", None,
         "--model foo/bar-: no such directory, and not a model name"),
        # prompts
        ("gen_stdin_not_utf8", "generate", f"{M} {D}", b"\xff\xfe", "stdin: not UTF-8 text (byte 0xff at offset 0)"),
        ("gen_stdin_binary", "generate", f"{M} {D}", bytes(range(256)), "stdin: not UTF-8 text (byte 0x80"),
        ("gen_stdin_empty", "generate", f"{M} {D}", b"", "stdin: the prompt is empty"),
        ("gen_stdin_newline", "generate", f"{M} {D}", b"\n \n", "stdin: the prompt is empty"),
        ("gen_prompt_empty", "generate", f"{M} {D} --prompt ''", None, "--prompt: the prompt is empty"),
        ("gen_prompt_surrogate", "generate", f"{M} {D} --prompt w3\udcff", None, "--prompt: not UTF-8 text"),
        ("gen_prompt_huge", "generate", f"--model {{root}}/small_window {D} --no-chat-template --prompt '{' '.join(['w3'] * 9)}'",
         None, "the prompt is 9 tokens and the model's context window 8"),
        ("gen_stdin_huge", "generate", f"--model {{root}}/small_window {D} --no-chat-template", ("w4 " * 5000).encode(),
         "the prompt is 5000 tokens"),
        # train
        ("train_data_missing_prompts", "train", "data {M} --prompts {root}/nope.json --out {root}/data_out", None,
         "--prompts {root}/nope.json: no such file"),
        ("train_data_prompts_dir", "train", "data {M} --prompts {root}/prompts_dir.jsonl --out {root}/data_out", None,
         "prompts_dir.jsonl: not a file"),
        ("train_data_prompts_binary", "train", "data {M} --prompts {root}/prompts_binary.jsonl --out {root}/data_out",
         None, "prompts_binary.jsonl: not UTF-8"),
        ("train_data_prompts_invalid", "train", "data {M} --prompts {root}/prompts_invalid.jsonl --out {root}/data_out",
         None, "prompts_invalid.jsonl: line 1: invalid JSON"),
        ("train_data_prompts_nokey", "train", "data {M} --prompts {root}/prompts_nokey.jsonl --out {root}/data_out",
         None, "prompts_nokey.jsonl: line 1: expected an object"),
        ("train_data_prompts_empty", "train", "data {M} --prompts {root}/prompts_empty.jsonl --out {root}/data_out",
         None, "prompts_empty.jsonl: no prompts"),
        ("train_data_sharegpt_binary", "train", "data {M} --prompts {root}/prompts_sharegpt_binary.json --out "
         "{root}/data_out", None, "prompts_sharegpt_binary.json: not a ShareGPT JSON list"),
        ("train_data_sharegpt_items", "train", "data {M} --prompts {root}/prompts_sharegpt_items.json --out "
         "{root}/data_out", None, "prompts_sharegpt_items.json: item 0 is not a ShareGPT conversation"),
        ("train_data_missing_model", "train", "data --model {root}/nope --prompts {root}/prompts.jsonl --out "
         "{root}/data_out", None, "nope: no such directory"),
        ("train_data_bad_config", "train", "data --model {root}/cfg_string_size --prompts {root}/prompts.jsonl --out "
         "{root}/data_out", None, "cfg_string_size/config.json: hidden_size"),
        ("train_data_num_prompts", "train", "data {M} --prompts {root}/prompts.jsonl --out {root}/data_out "
         "--num-prompts 0", None, "argument --num-prompts"),
        ("train_data_out_file", "train", "data {M} --prompts {root}/prompts.jsonl --out {root}/out_file", None,
         "--out {root}/out_file: exists and is not a directory"),
        ("train_data_window", "train", "data --model {root}/small_window --prompts {root}/prompts.jsonl --out "
         "{root}/data_out", None, "exceed the model's context window of 8"),
        ("train_data_sliding_window", "train", "data --model {root}/sliding_window --prompts {root}/prompts.jsonl "
         "--out {root}/data_out", None, "exceed the model's context window of 8"),
        ("train_text_missing_sharegpt", "train", "text {M} --sharegpt {root}/nope.json --out {root}/text_out", None,
         "--sharegpt {root}/nope.json: no such file"),
        ("train_text_sharegpt_binary", "train", "text {M} --sharegpt {root}/prompts_sharegpt_binary.json --out "
         "{root}/text_out", None, "prompts_sharegpt_binary.json: not a ShareGPT JSON list"),
        ("train_text_sharegpt_items", "train", "text {M} --sharegpt {root}/prompts_sharegpt_items.json --out "
         "{root}/text_out", None, "prompts_sharegpt_items.json: item 0 is not a ShareGPT conversation"),
        ("train_text_missing_stdlib", "train", "text {M} --stdlib {root}/nope --out {root}/text_out", None,
         "--stdlib {root}/nope: no such directory"),
        ("train_text_no_source", "train", "text {M} --out {root}/text_out", None, "give --sharegpt FILE, --stdlib"),
        ("train_text_out_file", "train", "text {M} --stdlib {root}/cwd --out {root}/out_file", None,
         "--out {root}/out_file: exists and is not a directory"),
        ("train_eval_missing_data", "train", "eval {M} {D} --data {root}/nope", None,
         "--data {root}/nope: no such directory"),
        ("train_fit_missing_eval_data", "train", "fit {M} --data {root}/data --out {root}/fit_out --eval-data "
         "{root}/nope", None, "--eval-data {root}/nope: no such directory"),
        ("train_fit_missing_data", "train", "fit {M} --data {root}/nope --out {root}/fit_out", None,
         "--data {root}/nope: no such directory"),
        ("train_fit_empty_data", "train", "fit {M} --data {root}/data_empty --out {root}/fit_out", None,
         "data_empty: no shard-*.npz"),
        ("train_fit_corrupt_shard", "train", "fit {M} --data {root}/data_corrupt --out {root}/fit_out", None,
         "data_corrupt/shard-00000.npz: cannot read the shard"),
        ("train_fit_other_vocab", "train", "fit {M} --data {root}/data_other_vocab --out {root}/fit_out", None,
         "token id 60 is outside the model's vocabulary"),
        ("train_fit_epochs", "train", "fit {M} --data {root}/data --out {root}/fit_out --epochs 0", None,
         "argument --epochs"),
        ("train_fit_lr_nan", "train", "fit {M} --data {root}/data --out {root}/fit_out --lr nan", None,
         "argument --lr"),
        ("train_fit_distill", "train", "fit {M} --data {root}/data --out {root}/fit_out --distill 1.5", None,
         "argument --distill"),
        ("train_fit_step_decay", "train", "fit {M} --data {root}/data --out {root}/fit_out --step-decay 0", None,
         "argument --step-decay"),
        ("train_fit_also_step_decay", "train", "fit {M} --data {root}/data --out {root}/fit_out --also "
         "out={root}/o2,step_decay=1.5", None, "--step-decay must be in (0, 1]"),
        ("train_fit_grow_no_init", "train", "fit {M} --data {root}/data --out {root}/fit_out --grow", None,
         "--grow grows the drafter of --init"),
        ("train_fit_grow_fewer", "train", "fit {M} --data {root}/data --out {root}/fit_out --init {root}/drafter "
         "--grow --layers 1", None, "--grow adds ResBlocks: --layers 1 is fewer than the --init drafter's 2"),
        ("train_fit_grow_layer", "train", "fit {M} --data {root}/data --out {root}/fit_out --init {root}/drafter "
         "--grow --context-layers 9", None, "--grow --context-layers 9: drafter context_layers [9] name layers beyond"),
        ("train_fit_also", "train", "fit {M} --data {root}/data --out {root}/fit_out --also taps=3", None,
         "--also: expected KEY=VALUE"),
        ("train_fit_also_value", "train", "fit {M} --data {root}/data --out {root}/fit_out --also layers=two", None,
         "--also: layers must be int"),
        ("train_fit_init_missing", "train", "fit {M} --data {root}/data --out {root}/fit_out --init {root}/nope",
         None, "nope: no such drafter directory"),
        ("train_fit_init_mismatch", "train", "fit {M} --data {root}/data --out {root}/fit_out --init "
         "{root}/wide_drafter", None, "hidden_size 48 != model hidden_size 32"),
        ("train_fit_head_bits", "train", "fit {M} --data {root}/data --out {root}/fit_out --head target "
         "--head-bits 4", None, "--head-bits"),
        ("train_fit_init_head_bits", "train", "fit {M} --data {root}/data --out {root}/fit_out --init "
         "{root}/target_head_drafter --head-bits 4", None, "the --init drafter uses the target's head"),
        ("train_fit_head_bits_width", "train", "fit {M} --data {root}/data --out {root}/fit_out --exit-dim 24 "
         "--head-bits 4", None, "the head's input width 24 is not a multiple of 64"),
        ("train_fit_out_file", "train", "fit {M} --data {root}/data --out {root}/out_file", None,
         "--out {root}/out_file: exists and is not a directory"),
        ("train_fit_same_out", "train", "fit {M} --data {root}/data --out {root}/fit_out --also out={root}/fit_out",
         None, "--out and --also name the same output twice"),
        ("train_fit_out_is_data", "train", "fit {M} --data {root}/data --out {root}/data", None,
         "--out {root}/data: saving there would replace --data {root}/data"),
        ("train_fit_out_holds_data", "train", "fit {M} --data {root}/data/ --out {root}", None,
         "--out {root}: saving there would replace --data {root}/data/"),
        ("train_fit_out_not_drafter", "train", "fit {M} --data {root}/data --out {root}/data_corrupt", None,
         "--out {root}/data_corrupt: exists and is not a drafter directory"),
        ("train_fit_one_prompt", "train", "fit {M} --data {root}/data --out {root}/fit_out", None,
         "--data: every sequence answers a held-out prompt (4 sequences, too few distinct prompts)"),
        ("train_fit_max_length", "train", "fit {M} --data {root}/data --out {root}/fit_out --max-length 2", None,
         "argument --max-length: must be >= 3"),
        ("train_eval_max_length", "train", "eval {M} {D} --data {root}/data --max-length 2", None,
         "argument --max-length: must be >= 3"),
        ("train_eval_missing_model", "train", "eval --model {root}/nope {D} --data {root}/data", None,
         "{root}/nope"),
        ("train_no_command", "train", "", None, "the following arguments are required: command"),
        # convert
        ("conv_missing", "convert", "model {root}/nope {root}/conv_out", None, "nope: not a checkpoint directory"),
        ("conv_text_file", "convert", "model {root}/notes.txt {root}/conv_out", None, "notes.txt: not a checkpoint"),
        ("conv_gguf_header", "convert", "model {root}/g_header.gguf {root}/conv_out", None,
         "g_header.gguf: truncated or corrupt GGUF header"),
        ("conv_gguf_tensors", "convert", "model {root}/g_tensors.gguf {root}/conv_out", None,
         "g_tensors.gguf: cannot read it"),
        ("conv_gguf_magic", "convert", "model {root}/g_magic.gguf {root}/conv_out", None, "g_magic.gguf: not a GGUF file"),
        ("conv_gguf_type", "convert", "model {root}/g_type.gguf {root}/conv_out", None, "has unknown type 200"),
        ("conv_gguf_dims", "convert", "model {root}/g_dims.gguf {root}/conv_out", None, "has 9 dimensions"),
        ("conv_gguf_key_length", "convert", "model {root}/g_key_length.gguf {root}/conv_out", None,
         "g_key_length.gguf: truncated or corrupt GGUF header"),
        ("conv_gguf_version", "convert", "model {root}/g_version.gguf {root}/conv_out", None,
         "g_version.gguf: GGUF version 7 is not supported"),
        ("conv_gguf_arch", "convert", "model {root}/g_arch.gguf {root}/conv_out", None,
         "g_arch.gguf: unsupported GGUF architecture 'llamb'"),
        ("conv_gguf_empty", "convert", "model {root}/g_empty.gguf {root}/conv_out", None, "g_empty.gguf: not a GGUF file"),
        ("conv_hf_config", "convert", "model {root}/hf_bad_config {root}/conv_out", None,
         "hf_bad_config/config.json: intermediate_size must be an integer"),
        ("conv_hf_nan", "convert", "model {root}/hf_nan {root}/conv_out", None,
         "hf_nan: tensor model.norm.weight holds NaN or infinite values"),
        ("conv_hf_truncated", "convert", "model {root}/hf_truncated {root}/conv_out", None,
         "hf_truncated/model.safetensors: cannot read safetensors"),
        ("conv_hf_pickle", "convert", "model {root}/hf_pickle {root}/conv_out", None,
         "pytorch_model.bin is a pickle"),
        ("conv_hf_no_config", "convert", "model {root}/empty_dir {root}/conv_out", None, "empty_dir: no config.json"),
        ("conv_exists", "convert", "model {root}/hf {root}/exists", None, "exists; pass --force"),
        ("conv_tokenizer_missing", "convert", "model {root}/m.gguf {root}/conv_out --tokenizer {root}/nope", None,
         "--tokenizer {root}/nope: no such directory"),
        ("conv_q_bits", "convert", "model {root}/hf {root}/conv_out -q 3", None, "argument -q/--q-bits: invalid choice"),
        ("conv_drafter_missing", "convert", "drafter {root}/nope {root}/conv_out --target {root}/model", None,
         "{root}/nope: no such directory"),
        ("conv_drafter_target_missing", "convert", "drafter {root}/drafter {root}/conv_out --target {root}/nope",
         None, "--target {root}/nope"),
        ("conv_drafter_mismatch", "convert", "drafter {root}/wide_drafter {root}/conv_out --target {root}/model",
         None, "does not fit --target"),
        ("conv_drafter_config", "convert", "drafter {root}/dcfg_exit_string {root}/conv_out --target {root}/model",
         None, "dcfg_exit_string/config.json: exit_dim must be an integer"),
        ("conv_no_kind", "convert", "", None, "the following arguments are required: kind"),
        # benchmark
        ("bench_missing_model", "benchmark", "--model {root}/nope {D} --prompts {root}/prompts.jsonl", None,
         "--model {root}/nope: no such directory"),
        ("bench_widths", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --widths 1,x", None,
         "--widths must be comma-separated integers"),
        ("bench_tree_nodes_sampled", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --temp 1 --tree-nodes 8",
         None, "a tree of the best nodes is for greedy decoding"),
        ("bench_lengths", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --lengths 1", None,
         "beam length must be in 2..16"),
        ("bench_prompts_missing", "benchmark", f"{M} {D} --prompts {{root}}/nope.jsonl", None,
         "--prompts {root}/nope.jsonl: no such file"),
        ("bench_prompts_binary", "benchmark", f"{M} {D} --prompts {{root}}/prompts_binary.jsonl", None,
         "prompts_binary.jsonl: not UTF-8"),
        ("bench_prompts_nokey", "benchmark", f"{M} {D} --prompts {{root}}/prompts_nokey.jsonl", None,
         "prompts_nokey.jsonl: line 1: expected an object"),
        ("bench_prompts_empty", "benchmark", f"{M} {D} --prompts {{root}}/prompts_empty.jsonl", None,
         "prompts_empty.jsonl: no prompts"),
        ("bench_lookup", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --lookup 2,-1", None,
         "--lookup values must be in 0..4, got 2,-1"),
        ("bench_lookup_long", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --lookup 5", None,
         "--lookup values must be in 0..4, got 5"),
        ("bench_lookup_sampled", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --lookup 2 --temp 1", None,
         "--lookup is for greedy decoding (--temp 0)"),
        ("bench_drafts_greedy", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --sampled-drafts iid", None,
         "--sampled-drafts is for sampling (--temp > 0)"),
        ("bench_top_p_greedy", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --top-p 0.5", None,
         "--top-p is for sampling (--temp > 0)"),
        ("bench_max_tokens", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --max-tokens 0", None,
         "argument --max-tokens"),
        ("bench_temp_inf", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --temp inf", None,
         "argument --temp"),
        ("bench_out_dir_file", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --out-dir {{root}}/out_file",
         None, "--out-dir {root}/out_file: exists and is not a directory"),
        ("bench_vocab_mismatch", "benchmark", f"{M} --drafter {{root}}/vocab_drafter --prompts {{root}}/prompts.jsonl",
         None, "vocab_drafter: does not fit the model"),
        ("bench_width_vocab", "benchmark", f"{M} {D} --prompts {{root}}/prompts.jsonl --widths 17 --lengths 3", None,
         "beam width must be in 1..16"),
        ("bench_window", "benchmark", f"--model {{root}}/small_window {D} --prompts {{root}}/prompts_long.jsonl",
         None, "prompts_long.jsonl: prompt 1: the prompt is 12 tokens"),
        # side by side
        ("sbs_missing_model", "side_by_side", "--model {root}/nope {D}", None, "--model {root}/nope: no such directory"),
        ("sbs_prompt_empty", "side_by_side", f"{M} {D} --prompt ' '", None, "--prompt: the prompt is empty"),
        ("sbs_prompt_surrogate", "side_by_side", f"{M} {D} --prompt \udce9", None, "--prompt: not UTF-8 text"),
        ("sbs_beam_length", "side_by_side", f"{M} {D} --beam-length 1", None, "beam length must be in 2..16"),
        ("sbs_beam_width", "side_by_side", f"{M} {D} --beam-width 0", None, "beam width must be >= 1, got 0"),
        ("sbs_width", "side_by_side", f"{M} {D} --width 5", None, "argument --width: must be >= 20"),
        ("sbs_gif_dir", "side_by_side", f"{M} {D} --gif {{root}}/nope/race.gif", None,
         "--gif {root}/nope/race.gif: no such directory"),
        ("sbs_html_is_dir", "side_by_side", f"{M} {D} --html {{root}}/exists", None, "--html {root}/exists: is a directory"),
        ("sbs_max_tokens", "side_by_side", f"{M} {D} --max-tokens -3", None, "argument --max-tokens"),
        ("sbs_vocab_mismatch", "side_by_side", f"{M} --drafter {{root}}/vocab_drafter", None,
         "vocab_drafter: does not fit the model"),
        ("sbs_window", "side_by_side", f"--model {{root}}/small_window {D} --prompt '{' '.join(['w5'] * 20)}'", None,
         "context window"),
        # server (flags only: nothing loads before they are checked)
        ("server_max_queue", "server", "--max-queue 0", None, "argument --max-queue: must be >= 1, got 0"),
        ("server_draft_vocab_rows", "server", "{M} --drafter {root}/rows_drafter --draft-vocab 4 --port 0", None,
         "--draft-vocab 4: the drafter's head holds only the rows of its 8-token draft vocabulary"),
        ("server_port_text", "server", "--port abc", None, "argument --port: expected an integer"),
        ("server_port_range", "server", "--port 70000", None, "argument --port: must be in 0..65535"),
        ("server_temp_nan", "server", "--temp nan", None, "argument --temp: must be a finite number"),
        ("server_temp_underflow", "server", "--temp 1e-38", None, "--temp must be 0 (greedy) or a finite number >= 0.001"),
        ("server_lookup", "server", "--lookup -1", None, "argument --lookup: must be >= 0"),
        ("server_allow_origin", "server", "--allow-origin '*'", None, "--allow-origin *: expected an origin"),
        ("server_api_key_spaces", "server", "--api-key ' key '", None, "--api-key starts or ends with white space"),
        ("server_host_brackets_public", "server", "--host '[2001:db8::1]'", None,
         "--host 2001:db8::1 is not a loopback address"),
        ("server_timeout", "server", "--request-timeout -1", None,
         "argument --request-timeout: must be a finite number"),
        ("server_beam", "server", "--beam 3", None, "--beam must be 'auto' or WIDTHxLENGTH"),
        # server benchmark
        ("sbench_beam", "server_bench", "--beam 0x3", None, "beam width must be >= 1, got 0"),
        ("sbench_num_prompts", "server_bench", "--num-prompts 0", None, "argument --num-prompts: must be >= 1"),
        ("sbench_missing_model", "server_bench", "--model {root}/nope", None, "--model {root}/nope: no such directory"),
        ("sbench_out_dir", "server_bench", "--out {root}/nope/bench.json", None,
         "--out {root}/nope/bench.json: no such directory"),
    ]
    return table


ROWS = rows()


class Stdin(io.TextIOWrapper):
    """A piped stdin holding `data` (not a terminal)."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="utf-8")

    def isatty(self):
        return False


def run_cli(root: Path, cli: str, argv: str, stdin, monkeypatch):
    """Runs one CLI in-process; returns its exit status."""
    import shlex

    paths = {"root": root, "M": f"--model {root}/model", "D": f"--drafter {root}/drafter"}
    args = shlex.split(argv.replace("{M}", paths["M"]).replace("{D}", paths["D"]).replace("{root}", str(root)))
    monkeypatch.setattr(sys, "stdin", Stdin(stdin or b""))
    monkeypatch.chdir(root / "cwd")
    monkeypatch.setenv("REDRAFTER_CACHE", str(root / "cache"))
    with pytest.raises(SystemExit) as exit_info:
        CLIS[cli](args)
    return exit_info.value.code


def check_one_error_line(stderr: str, fragment: str):
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], (fragment, lines[0])


def test_table_has_sixty_rows_across_all_command_lines():
    assert len(ROWS) >= 60
    assert {row[1] for row in ROWS} == set(CLIS)
    assert len({row[0] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name,cli,argv,stdin,fragment", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input(root, capfd, monkeypatch, name, cli, argv, stdin, fragment):
    before = listing(root)
    capfd.readouterr()
    code = run_cli(root, cli, argv, stdin, monkeypatch)
    out, err = capfd.readouterr()
    assert code == 2, (code, err)
    check_one_error_line(err, fragment.replace("{root}", str(root)))
    assert listing(root) == before, "files left behind: " + str(listing(root) ^ before)


# ------------------------------------------------------------------ generated values

BAD_INTS = st.one_of(st.integers(max_value=0), st.integers(min_value=2 ** 26 + 1, max_value=2 ** 70),
                     st.booleans(), st.text(max_size=5), st.floats(allow_nan=True, allow_infinity=True),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
BAD_NUMBERS = st.one_of(st.floats(max_value=0), st.just(math.nan), st.just(math.inf), st.booleans(), st.text(max_size=5),
                        st.lists(st.floats(), max_size=2))
MODEL_INT_KEYS = ["hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size",
                  "num_key_value_heads", "max_position_embeddings"]


def write_config(directory: Path, raw: dict):
    """config.json as Python's json writes it (NaN and Infinity as JavaScript literals)."""
    (directory / "config.json").write_text(json.dumps(raw))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(MODEL_INT_KEYS + ["rms_norm_eps", "rope_theta"]), data=st.data())
def test_generated_bad_model_config_values(root, capfd, monkeypatch, key, data):
    """Any wrong value of a size or number key: one line naming config.json and the key."""
    value = data.draw(BAD_NUMBERS if key in ("rms_norm_eps", "rope_theta") else BAD_INTS)
    directory = root / "generated_model"
    if not directory.exists():
        shutil.copytree(root / "model", directory)
    raw = json.loads((root / MODEL_CONFIG).read_text())
    raw[key] = value
    write_config(directory, raw)
    capfd.readouterr()
    code = run_cli(root, "generate", f"--model {directory} --drafter {root}/drafter --prompt w3", None, monkeypatch)
    err = capfd.readouterr().err
    assert code == 2, err
    check_one_error_line(err, f"{directory}/config.json: ")
    assert key in err, err


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["hidden_size", "vocab_size", "exit_dim", "num_draft_layers", "draft_vocab_size",
                            "head_rows", "rnn", "context_layers"]), data=st.data())
def test_generated_bad_drafter_config_values(root, capfd, monkeypatch, key, data):
    bad = {"rnn": st.one_of(st.integers(), st.text(max_size=3), st.none()),
           "context_layers": st.one_of(st.text(max_size=3), st.integers(), st.lists(st.integers(max_value=-1),
                                                                                    min_size=1, max_size=2)),
           "num_draft_layers": st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=3)),
           "draft_vocab_size": st.one_of(st.integers(max_value=-1), st.integers(min_value=17), st.floats(),
                                         st.text(max_size=3)),
           "head_rows": st.one_of(st.integers(max_value=-1), st.integers(min_value=17), st.floats())}.get(key, BAD_INTS)
    value = data.draw(bad)
    directory = root / "generated_drafter"
    if not directory.exists():
        shutil.copytree(root / "drafter", directory)
    raw = json.loads((root / "drafter" / "config.json").read_text())
    raw[key] = value
    write_config(directory, raw)
    capfd.readouterr()
    code = run_cli(root, "generate", f"--model {root}/model --drafter {directory} --prompt w3", None, monkeypatch)
    err = capfd.readouterr().err
    assert code == 2, err
    check_one_error_line(err, str(directory))


def not_positive_int(text: str) -> bool:
    try:
        return int(text) < 1
    except ValueError:
        return True


FLAG_VALUES = {
    "--max-tokens": st.one_of(st.integers(max_value=0).map(str), st.text(max_size=4).filter(not_positive_int)),
    "--temp": st.one_of(st.floats(max_value=-1e-9).map(str), st.sampled_from(["nan", "inf", "-inf", "x", ""])),
    "--top-p": st.one_of(st.floats(max_value=0).map(str), st.floats(min_value=1.0001).map(str),
                         st.sampled_from(["nan", "inf", "p"])),
    "--top-k": st.integers(max_value=-1).map(str),
    "--lookup": st.integers(max_value=-1).map(str),
    "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 32)).map(str),
    "--beam": st.one_of(st.text(max_size=6).filter(lambda t: t != "auto" and "x" not in t.lower()),
                        st.tuples(st.integers(-3, 0), st.integers(2, 4)).map(lambda t: f"{t[0]}x{t[1]}"),
                        st.tuples(st.integers(1, 3), st.integers(17, 300)).map(lambda t: f"{t[0]}x{t[1]}")),
}


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(sorted(FLAG_VALUES)), data=st.data())
def test_generated_bad_flag_values(root, capfd, monkeypatch, flag, data):
    """Out-of-range or unparsable flag values: one line naming the flag (or the beam), before
    anything loads (the model directory given does not even exist)."""
    value = data.draw(FLAG_VALUES[flag])
    capfd.readouterr()
    monkeypatch.setattr(sys, "stdin", Stdin(b""))
    monkeypatch.chdir(root / "cwd")
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--model", str(root / "nope"), "--drafter", str(root / "drafter"), "--prompt", "w3",
                       f"{flag}={value}"])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2, err
    check_one_error_line(err, "")
    assert flag in err or "beam" in err, err
