"""convert/ on GGUF files written here with the `gguf` package (llama.cpp layout)."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from convert.__main__ import main as convert_main
from convert.gguf_header import tensor_types
from convert.gguf_reader import LAYER_NAMES, TOP_NAMES
from redrafter_mlx.model.load import load_model, load_tokenizer
from helpers.tiny import tiny_model

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

VOCAB = ["<s>", "</s>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ġa", "ab", "Ġab"]


def permute_rows(weight, heads):
    """llama.cpp's Q/K row order (interleaved rotary pairs) from the HF order."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_name(hf: str) -> str:
    inverse = {v: k for k, v in LAYER_NAMES.items()}
    top = {v: k for k, v in TOP_NAMES.items()}
    parts = hf.split(".")
    if parts[1] == "layers":
        return f"blk.{parts[2]}.{inverse['.'.join(parts[3:-1])]}.{parts[-1]}"
    return f"{top['.'.join(parts[:-1])]}.{parts[-1]}"


def random_q4_k(shape, rng) -> np.ndarray:
    """Raw Q4_K blocks (256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and
    mins, 128 bytes of 4-bit values) with random contents; gguf-py cannot quantize K-quants."""
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows, cols // 256, 144), dtype=np.uint8)
    blocks[..., 0:2] = np.array([2e-4], np.float16).view(np.uint8)  # d
    blocks[..., 2:4] = np.array([1e-4], np.float16).view(np.uint8)  # dmin
    return blocks.reshape(rows, -1)


def quantized_for_file(value, qtype, rng):
    """(raw bytes for the file, the weights they hold)."""
    raw = random_q4_k(value.shape, rng) if qtype == Q.Q4_K else gguf.quants.quantize(value, qtype)
    return raw, gguf.quants.dequantize(raw, qtype).reshape(value.shape)


def write_gguf(path, model, qtype, extra=None):
    """Writes model as GGUF; returns its weights as stored (quantization round trip), HF layout.
    extra(writer): adds keys or tensors of its own."""
    c = model.config
    stored, rng = {}, np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in [("block_count", c.num_hidden_layers), ("embedding_length", c.hidden_size),
                       ("feed_forward_length", c.intermediate_size), ("attention.head_count", c.num_attention_heads),
                       ("attention.head_count_kv", c.num_key_value_heads), ("context_length", 256),
                       ("vocab_size", c.vocab_size)]:
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    writer.add_float32("llama.rope.freq_base", c.rope_theta)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "default")
    writer.add_array("tokenizer.ggml.tokens", VOCAB)
    writer.add_array("tokenizer.ggml.token_type", [3, 3] + [1] * (len(VOCAB) - 2))
    writer.add_array("tokenizer.ggml.merges", ["Ġ a", "a b", "Ġ ab"])
    writer.add_uint32("tokenizer.ggml.eos_token_id", 1)
    if extra:
        extra(writer)
    for name, value in tree_flatten(model.parameters()):
        value = np.array(value).astype(np.float32)
        if "q_proj" in name:
            value = permute_rows(value, c.num_attention_heads)
        elif "k_proj" in name:
            value = permute_rows(value, c.num_key_value_heads)
        stored[name] = np.array(value)
        if value.ndim == 2 and qtype != Q.F32:
            quantized, stored[name] = quantized_for_file(value, qtype, rng)
            writer.add_tensor(gguf_name(name), quantized, raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name(name), value)
        if "q_proj" in name or "k_proj" in name:  # back to HF order
            heads = c.num_attention_heads if "q_proj" in name else c.num_key_value_heads
            rows = stored[name].shape[0]
            stored[name] = stored[name].reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(rows, -1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [(k, mx.array(v)) for k, v in stored.items()]


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0, Q.Q5_0, Q.Q4_K])
def test_gguf_converts_to_the_same_model(tmp_path, qtype):
    """F32 and Q8_0 are read by MLX itself; Q5_0 and the K-quant Q4_K go through the gguf
    package's dequantizer. The reference is the original model with the weights as the GGUF
    stores them (K-quant rows hold 256-weight blocks: hidden and FFN sizes of 256)."""
    size = 256 if qtype == Q.Q4_K else 64
    model = tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=size, intermediate_size=size + 32 * (size == 64),
                       scale=0.1)
    model.load_weights(write_gguf(tmp_path / "m.gguf", model, qtype))
    listed = {t.name: int(t.tensor_type) for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert tensor_types(tmp_path / "m.gguf") == listed and int(qtype) in listed.values()
    convert_main(["model", str(tmp_path / "m.gguf"), str(tmp_path / "mlx"), "--dtype", "float32"])
    ours = load_model(tmp_path / "mlx")
    assert ours.config.tie_word_embeddings and ours.config.eos_ids == [1]
    tokens = [3, 5, 7, 2, 30, 31, 4, 9]
    positions = mx.arange(len(tokens))[None]
    expected = model.logits(model(mx.array([tokens]), positions, model.new_cache())[0])
    got = ours.logits(ours(mx.array([tokens]), positions, ours.new_cache())[0])
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-4, rtol=1e-4)
    tokenizer = load_tokenizer(tmp_path / "mlx")
    ids = tokenizer.encode("ab ab")
    assert [VOCAB[i] for i in ids] == ["ab", "Ġa", "b"]  # merges by rank: "Ġ a" before "a b"
    assert tokenizer.decode(ids) == "ab ab"


def test_requantizing_a_natively_quantized_gguf_keeps_its_layers_loadable(tmp_path):
    """-q 4 over a GGUF whose layers MLX reads quantized (Q8_0: 8 bits, group 32): those keep
    their own settings in config.json (the default group of -q must not overwrite them)."""
    model = tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=64, intermediate_size=96, scale=0.1)
    model.load_weights(write_gguf(tmp_path / "m.gguf", model, Q.Q8_0))
    convert_main(["model", str(tmp_path / "m.gguf"), str(tmp_path / "dense"), "--dtype", "float32"])
    convert_main(["model", str(tmp_path / "m.gguf"), str(tmp_path / "q4"), "--dtype", "float32", "-q", "4"])
    tokens = [3, 5, 7, 2, 30, 31, 4, 9]
    positions = mx.arange(len(tokens))[None]
    logits = []
    for name in ("dense", "q4"):
        ours = load_model(tmp_path / name)
        logits.append(np.array(ours.logits(ours(mx.array([tokens]), positions, ours.new_cache())[0])))
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-4, rtol=1e-4)


def llama_cpp_divisors(theta: float, head_dim: int, factor: float, low: float, high: float, old: int):
    """Llama 3's rope scaling as llama.cpp's converter stores it (rope_freqs): what divides each frequency."""
    divisors = []
    for freq in 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim):
        wavelen = 2 * np.pi / freq
        if wavelen < old / high:
            divisors.append(1.0)
        elif wavelen > old / low:
            divisors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, dtype=np.float32)


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 2048}


@pytest.mark.parametrize("scaling", ["llama3", "linear", "linear_old_key"])
def test_gguf_rope_scaling_converts_to_the_same_model(tmp_path, scaling):
    """Llama 3.x files hold their rope scaling as a rope_freqs tensor of per-frequency divisors
    (here 3 of the 16 between 1 and the factor), older ones as a scaling type and factor."""
    hf_scaling = LLAMA3 if scaling == "llama3" else {"rope_type": "linear", "factor": 4.0}
    model = tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=64, intermediate_size=96, num_attention_heads=2,
                       num_key_value_heads=2, scale=0.1, rope_scaling=hf_scaling)

    def extra(writer):
        if scaling == "llama3":
            writer.add_tensor("rope_freqs.weight", llama_cpp_divisors(10000.0, 32, 8.0, 1.0, 4.0, 2048))
        elif scaling == "linear":
            writer.add_string("llama.rope.scaling.type", "linear")
            writer.add_float32("llama.rope.scaling.factor", 4.0)
        else:
            writer.add_float32("llama.rope.scale_linear", 4.0)

    model.load_weights(write_gguf(tmp_path / "m.gguf", model, Q.F32, extra))
    convert_main(["model", str(tmp_path / "m.gguf"), str(tmp_path / "mlx"), "--dtype", "float32"])
    ours = load_model(tmp_path / "mlx")
    assert ours.config.rope_scaling["rope_type"] == hf_scaling["rope_type"]
    tokens = [3, 5, 7, 2, 30, 31, 4, 9] * 8
    positions = mx.arange(len(tokens))[None]
    expected = model.logits(model(mx.array([tokens]), positions, model.new_cache())[0])
    got = ours.logits(ours(mx.array([tokens]), positions, ours.new_cache())[0])
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("extra, fragment", [
    (lambda w: (w.add_string("llama.rope.scaling.type", "yarn"), w.add_float32("llama.rope.scaling.factor", 4.0)),
     "unsupported rope_scaling type 'yarn'"),
    (lambda w: w.add_tensor("rope_freqs.weight", np.linspace(1, 3, 16, dtype=np.float32)),
     "rope_freqs.weight divides the rope frequencies in a way other than Llama 3's scaling"),
    (lambda w: w.add_tensor("rope_freqs.weight", np.ones(5, dtype=np.float32)),
     "rope_freqs.weight holds 5 divisors, not head_dim / 2 = 16"),
])
def test_gguf_rope_scaling_we_cannot_run_is_refused_in_one_line(tmp_path, capfd, extra, fragment):
    model = tiny_model(0, "llama", vocab=len(VOCAB), hidden_size=64, intermediate_size=96, num_attention_heads=2,
                       num_key_value_heads=2, scale=0.1)
    write_gguf(tmp_path / "m.gguf", model, Q.F32, extra)
    with pytest.raises(SystemExit) as refused:
        convert_main(["model", str(tmp_path / "m.gguf"), str(tmp_path / "mlx")])
    err = capfd.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "mlx").exists()
