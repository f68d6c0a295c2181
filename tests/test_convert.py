"""convert/: HF checkpoints (safetensors and .bin) and Apple drafters into MLX directories."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from convert.__main__ import main as convert_main
from redrafter_mlx.decode.beam_search import BeamShape, beam_search
from redrafter_mlx.model.load import load_drafter, load_model
from redrafter_mlx.policy import GPU
from helpers.tiny import tiny_model, write_model_dir


HF_CONFIGS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                  rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128, tie_word_embeddings=False,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "qwen2": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                  rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=128, tie_word_embeddings=True),
}


def hf_model(kind):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    import torch

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**HF_CONFIGS[kind])
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    return model


def hf_logits(model, tokens):
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("safe", [True, False])
def test_hf_checkpoint_logits_match_transformers(tmp_path, kind, safe):
    model = hf_model(kind)
    model.save_pretrained(tmp_path / "hf")
    if not safe:  # a legacy pickle checkpoint (transformers 5 only writes safetensors)
        import torch
        torch.save(model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
        (tmp_path / "hf" / "model.safetensors").unlink()
    args = ["model", str(tmp_path / "hf"), str(tmp_path / "mlx"), "--dtype", "float32"]
    if not safe:
        with pytest.raises(SystemExit):  # pickles need consent
            convert_main(args)
        assert not (tmp_path / "mlx").exists()
        args.append("--allow-pickle")
    convert_main(args)
    ours = load_model(tmp_path / "mlx")
    tokens = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3] * 3
    hidden = ours(mx.array([tokens]), mx.arange(len(tokens))[None], ours.new_cache())
    np.testing.assert_allclose(np.array(ours.logits(hidden[0])), hf_logits(model, tokens), atol=1e-4, rtol=1e-4)


def test_quantized_output_loads_and_runs(tmp_path):
    model = hf_model("llama")
    model.save_pretrained(tmp_path / "hf")
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "q"), "-q", "4", "--q-group-size", "32"])
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    ours = load_model(tmp_path / "q", policy=GPU)
    layer = ours.model.layers[0]  # loaded quantized, then fused (as on GPUs)
    assert hasattr(layer.self_attn.qkv_proj, "scales") and hasattr(layer.mlp.gate_up_proj, "scales")
    tokens = [3, 14, 15, 9, 26]
    logits = np.array(ours.logits(ours(mx.array([tokens]), mx.arange(5)[None], ours.new_cache())[0]))
    reference = hf_logits(model, tokens)
    assert np.isfinite(logits).all()
    assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.9  # 4-bit: close, not equal


def apple_drafter_checkpoint(path, hidden=64, vocab=50, exit_dim=128, layers=2, fmt="safetensors"):
    """A drafter written the way Apple's trainer writes it (fp32, Apple key names)."""
    rng = np.random.default_rng(0)
    weights = {f"lm_head.{i}.linear.weight": rng.normal(0, 0.05, (exit_dim, exit_dim)) for i in range(layers)}
    weights.update({f"lm_head.{i}.linear.bias": rng.normal(0, 0.05, (exit_dim,)) for i in range(layers)})
    weights[f"lm_head.{layers}.weight"] = rng.normal(0, 0.05, (vocab, exit_dim))
    weights.update({"rnn_u.weight": rng.normal(0, 0.05, (hidden, hidden)), "rnn_u.bias": np.zeros(hidden),
                    "rnn_w.weight": rng.normal(0, 0.05, (hidden, hidden)), "emb_norm.weight": np.ones(hidden)})
    if exit_dim != 2 * hidden:
        weights.update({"input_proj.weight": rng.normal(0, 0.05, (exit_dim, 2 * hidden)),
                        "input_proj.bias": np.zeros(exit_dim)})
    path.mkdir(parents=True)
    config = dict(architectures=["Drafter"], model_type="recurrent_drafting_drafter", hidden_size=hidden,
                  vocab_size=vocab, exit_dim=exit_dim, num_draft_layers=layers, rnn=True, emb_norm=True,
                  rms_norm_eps=1e-6, num_lookback_tokens=-1)
    (path / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        mx.save_safetensors(str(path / "model.safetensors"),
                            {k: mx.array(v.astype(np.float32)) for k, v in weights.items()})
    else:
        import torch
        torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in weights.items()}, path / "pytorch_model.bin")
    return path


@pytest.mark.parametrize("exit_dim", [128, 96])
def test_apple_drafter_converts_and_beam_searches(tmp_path, exit_dim):
    model = hf_model("llama")
    model.save_pretrained(tmp_path / "hf")
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "mlx"), "--dtype", "float32"])
    src = apple_drafter_checkpoint(tmp_path / "apple", exit_dim=exit_dim)
    convert_main(["drafter", str(src), str(tmp_path / "drafter"), "--target", str(tmp_path / "mlx"),
                  "--dtype", "float32"])
    target = load_model(tmp_path / "mlx")
    drafter = load_drafter(tmp_path / "drafter", target)
    draft = beam_search(drafter, target.embed, mx.zeros((1, 64)), mx.array([3]), BeamShape(3, 4))
    assert draft.beams.shape == (1, 3, 4) and (np.array(draft.beams[0, :, 0]) == 3).all()


def test_drafter_checks_against_target(tmp_path, capsys):
    model = hf_model("qwen2")
    model.save_pretrained(tmp_path / "hf")
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "mlx")])
    src = apple_drafter_checkpoint(tmp_path / "apple", hidden=32, exit_dim=64)
    with pytest.raises(SystemExit):
        convert_main(["drafter", str(src), str(tmp_path / "drafter"), "--target", str(tmp_path / "mlx")])
    assert "hidden_size 32 != model hidden_size 64" in capsys.readouterr().err
    assert not (tmp_path / "drafter").exists()


def test_bad_sources_give_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = {
        "missing": (tmp_path / "nope", "not a checkpoint directory"),
        "no_config": (tmp_path / "empty", "no config.json"),
    }
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps(HF_CONFIGS["llama"]))
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    (corrupt / "tokenizer.json").write_text("{}")  # checked before the weights
    cases["corrupt"] = (corrupt, "cannot read safetensors")
    for name, (src, message) in cases.items():
        with pytest.raises(SystemExit):
            convert_main(["model", str(src), str(tmp_path / f"out-{name}")])
        assert message in capsys.readouterr().err, name
        assert not (tmp_path / f"out-{name}").exists()


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    model = hf_model("qwen2")
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit):
        convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "out")])
    assert "--force" in capsys.readouterr().err
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "out"), "--force"])
    assert (tmp_path / "out" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp leftovers


def test_mlx_lm_converted_checkpoint_loads(tmp_path):
    """A directory written by mlx-lm's own converter (4-bit) loads and matches mlx-lm's logits."""
    from mlx_lm import convert as mlx_lm_convert
    from mlx_lm import load as mlx_lm_load

    model = hf_model("qwen2")
    model.save_pretrained(tmp_path / "hf")
    mlx_lm_convert(str(tmp_path / "hf"), mlx_path=str(tmp_path / "lm"), quantize=True, q_group_size=32, q_bits=4)
    ours = load_model(tmp_path / "lm")
    theirs, _ = mlx_lm_load(str(tmp_path / "lm"))
    tokens = [3, 14, 15, 9, 26, 5]
    logits = ours.logits(ours(mx.array([tokens]), mx.arange(6)[None], ours.new_cache())[0])
    np.testing.assert_allclose(np.array(logits), np.array(theirs(mx.array([tokens]))[0].astype(mx.float32)),
                               atol=2e-2, rtol=2e-2)


def test_large_outputs_are_sharded_and_load_back(tmp_path, monkeypatch):
    """Above the shard size the weights go to model-0000i-of-0000n files plus an index."""
    import convert.output

    model = hf_model("llama")
    model.save_pretrained(tmp_path / "hf")
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "whole"), "--dtype", "float32"])
    monkeypatch.setattr(convert.output, "SHARD_BYTES", 40_000)
    convert_main(["model", str(tmp_path / "hf"), str(tmp_path / "sharded"), "--dtype", "float32"])
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    whole = mx.load(str(tmp_path / "whole" / "model.safetensors"))
    assert set(index.values()) == set(shards) and set(index) == set(whole)
    tokens = [3, 14, 15, 9, 26]
    logits = []
    for name in ("whole", "sharded"):
        ours = load_model(tmp_path / name)
        logits.append(np.array(ours.logits(ours(mx.array([tokens]), mx.arange(5)[None], ours.new_cache())[0])))
    np.testing.assert_array_equal(logits[0], logits[1])


@pytest.mark.parametrize("indexed", [True, False])
def test_mistral_layout_with_consolidated_weights_converts(tmp_path, indexed):
    """Mistral's repositories hold every weight twice: in the Hugging Face files and in
    consolidated.safetensors under Mistral's names. The latter is skipped (the index names
    only the former, where there is one), by the converter and by the loader."""
    model = tiny_model(0, "mistral", vocab=16)
    source = write_model_dir(tmp_path / "hf", model)
    weights = mx.load(str(source / "model.safetensors"))
    mx.save_safetensors(str(source / "consolidated.safetensors"),
                        {name.replace("model.layers", "layers").replace("self_attn.q_proj", "attention.wq"): value
                         for name, value in weights.items()})
    if indexed:
        (source / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {name: "model.safetensors" for name in weights}}))
    convert_main(["model", str(source), str(tmp_path / "mlx"), "--dtype", "float32"])
    shutil.copy(source / "consolidated.safetensors", tmp_path / "mlx")
    tokens = mx.array([[3, 14, 15, 9, 2, 5]])
    expected = model.logits(model(tokens, mx.arange(6)[None], model.new_cache()))
    for directory in (source, tmp_path / "mlx"):
        loaded = load_model(directory)
        logits = loaded.logits(loaded(tokens, mx.arange(6)[None], loaded.new_cache()))
        np.testing.assert_allclose(np.array(logits), np.array(expected), atol=1e-5, rtol=1e-5)


def test_a_source_without_tokenizer_files_is_refused_before_its_weights_are_read(tmp_path, monkeypatch):
    import convert.convert as conversion

    source = write_model_dir(tmp_path / "hf", tiny_model(0, vocab=16))
    for name in conversion.TOKENIZER_FILES:
        (source / name).unlink(missing_ok=True)

    def read_weights(*args):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(conversion, "read_weights", read_weights)
    with pytest.raises(conversion.CheckpointError, match="hf: no tokenizer files"):
        conversion.convert_target(source, tmp_path / "mlx")
    assert not (tmp_path / "mlx").exists()
