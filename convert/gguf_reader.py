"""Reads a GGUF file into (metadata, weights) with Hugging Face weight names.

Q4_0/Q4_1/Q8_0 tensors stay quantized (MLX reads them natively as affine 4/8-bit,
group 32); files with other types (K-quants, Q5_0 ...) are dequantized with the
`gguf` package. The header's tensor types decide (gguf_header.py): MLX's loader does not
fail on K-quants, it returns wrong values.
"""

import mlx.core as mx
import numpy as np

from redrafter_mlx.errors import UserError

from .gguf_header import NATIVE_TYPES, tensor_types

ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


class GGUFError(UserError, ValueError):
    pass


def hf_name(name: str) -> str:
    """'blk.3.attn_q.scales' -> 'model.layers.3.self_attn.q_proj.scales'."""
    parts = name.split(".")
    if parts[0] == "blk":
        layer, module, leaf = parts[1], parts[2], ".".join(parts[3:])
        if module not in LAYER_NAMES:
            raise GGUFError(f"unknown GGUF tensor {name}")
        return f"model.layers.{layer}.{LAYER_NAMES[module]}.{leaf}"
    if parts[0] not in TOP_NAMES:
        raise GGUFError(f"unknown GGUF tensor {name}")
    return f"{TOP_NAMES[parts[0]]}.{'.'.join(parts[1:])}"


def _value(v):
    if isinstance(v, mx.array):
        return v.item() if v.ndim == 0 else np.array(v).tolist()
    return v


def read_gguf(path: str):
    """Returns (metadata dict of Python values, weights dict of mx arrays, HF names, GGUF layout).
    The header is checked first (gguf_header: every tensor inside the file)."""
    try:
        types = tensor_types(path)
    except (OSError, ValueError) as error:
        raise GGUFError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    others = sorted({t for t in types.values() if t not in NATIVE_TYPES})
    if others:
        metadata, weights = _read_with_gguf_package(path, f"tensor types {others} need dequantizing")
    else:
        try:
            weights, metadata = mx.load(str(path), return_metadata=True)
            metadata = {k: _value(v) for k, v in metadata.items()}
        except Exception as error:
            raise GGUFError(f"{path}: cannot read it ({error})") from None
    try:
        return metadata, {hf_name(k): v for k, v in weights.items()}
    except GGUFError as error:
        raise GGUFError(f"{path}: {error}") from None


def _read_with_gguf_package(path, reason: str):
    try:
        import gguf
    except ImportError:
        raise GGUFError(f"{path}: {reason}; `pip install gguf` to dequantize K-quant/Q5 tensors") from None
    try:
        reader = gguf.GGUFReader(str(path))
        metadata = {name: _plain(field.contents()) for name, field in reader.fields.items()}
        weights = {}
        for tensor in reader.tensors:
            data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            weights[tensor.name] = mx.array(data.reshape(tuple(reversed(tensor.shape.tolist()))).astype(np.float32))
    except Exception as error:  # the gguf package's errors of a corrupt file: ValueError, KeyError, ...
        raise GGUFError(f"{path}: cannot read it ({type(error).__name__}: {error})") from None
    return metadata, weights


def _plain(value):
    """numpy scalars (the gguf package's metadata) as Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def unpermute_rows(weight: mx.array, heads: int) -> mx.array:
    """Undoes llama.cpp's Q/K row permutation (interleaved rotary pairs -> HF half split).

    Works on weights and on quantized scales/biases alike, since it only reorders rows."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def model_config(metadata: dict, path="GGUF") -> dict:
    """HF-style config.json for the GGUF's architecture (its values checked by ModelConfig)."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise GGUFError(f"{path}: unsupported GGUF architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})")

    def get(key, default=None):
        return metadata.get(f"{arch}.{key}", default)

    heads = get("attention.head_count")
    config = {
        "model_type": ARCHITECTURES[arch],
        "hidden_size": get("embedding_length"),
        "num_hidden_layers": get("block_count"),
        "intermediate_size": get("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", heads),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": get("rope.freq_base", 10000.0),
        "max_position_embeddings": get("context_length", 4096),
        "vocab_size": get("vocab_size", len(metadata.get("tokenizer.ggml.tokens", []))),
    }
    if get("rope.dimension_count") and get("rope.dimension_count") != config["hidden_size"] // heads:
        config["head_dim"] = get("rope.dimension_count")
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        config["eos_token_id"] = eos
    return config


def hf_weights(metadata: dict, weights: dict, config: dict, path="GGUF") -> dict:
    """Renamed weights in HF layout: Q/K rows un-permuted for the llama architecture."""
    if metadata.get("general.architecture") == "llama":
        heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
        for name in list(weights):
            for proj, count in heads.items():
                if f".{proj}." in name:  # weight, bias, scales, biases: all rows first
                    try:
                        weights[name] = unpermute_rows(weights[name], count)
                    except ValueError:
                        raise GGUFError(f"{path}: tensor {name} of shape {tuple(weights[name].shape)} does not "
                                        f"fit the header's {count} heads") from None
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    return weights


def quantization_config(weights: dict) -> dict:
    """mlx-lm style quantization config for the tensors that stayed quantized: the most
    common (group_size, bits) as default, other layers listed by name."""
    layers = {}
    for name, scales in weights.items():
        if name.endswith(".scales"):
            prefix = name[: -len(".scales")]
            packed, in_features = weights[prefix + ".weight"].shape[1], scales.shape[1] * 32
            layers[prefix] = {"group_size": 32, "bits": packed * 32 // in_features}
    if not layers:
        return {}
    settings = [tuple(v.items()) for v in layers.values()]
    default = dict(max(set(settings), key=settings.count))
    return {**default, **{name: v for name, v in layers.items() if v != default}}
