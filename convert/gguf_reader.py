"""Reads a GGUF file into (metadata, weights) with Hugging Face weight names.

Q4_0/Q4_1/Q8_0 tensors stay quantized (MLX reads them natively as affine 4/8-bit,
group 32); files with other types (K-quants, Q5_0 ...) are dequantized with the
`gguf` package. The header's tensor types decide (gguf_header.py): MLX's loader does not
fail on K-quants, it returns wrong values.
"""

import math

import mlx.core as mx
import numpy as np

from redrafter_mlx.errors import UserError
from redrafter_mlx.model.rope import llama3_scaled

from .gguf_header import NATIVE_TYPES, tensor_types

ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
ROPE_FACTORS = "rope_freqs.weight"  # llama.cpp's form of Llama 3's rope scaling: what divides each frequency
LLAMA3_CONTEXT = 8192  # original_max_position_embeddings where the file names none (llama.cpp assumes it too)


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
    if ROPE_FACTORS in weights:  # not a weight: the model's rope scaling (model_config)
        metadata[ROPE_FACTORS] = np.array(weights.pop(ROPE_FACTORS), dtype=np.float64).reshape(-1).tolist()
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
    scaling = rope_scaling(metadata, arch, config, path)
    if scaling:
        config["rope_scaling"] = scaling
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        config["eos_token_id"] = eos
    return config


def rope_scaling(metadata: dict, arch: str, config: dict, path="GGUF"):
    """HF's rope_scaling for the GGUF's, or None: Llama 3's from llama.cpp's per-frequency
    divisors (llama3_from_divisors), else the scaling type and factor of the header (linear;
    ModelConfig refuses the types it does not support)."""
    if ROPE_FACTORS in metadata:
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        old_context = metadata.get(f"{arch}.rope.scaling.original_context_length", LLAMA3_CONTEXT)
        return llama3_from_divisors(metadata[ROPE_FACTORS], config["rope_theta"], head_dim, old_context, path)
    kind = metadata.get(f"{arch}.rope.scaling.type", "none")
    factor = metadata.get(f"{arch}.rope.scaling.factor", metadata.get(f"{arch}.rope.scale_linear", 1.0))
    if kind == "none" and factor != 1.0:  # older files: rope.scale_linear alone
        kind = "linear"
    return None if kind == "none" else {"rope_type": kind, "factor": factor}


def llama3_from_divisors(divisors: list, theta: float, head_dim: int, old_context: int, path="GGUF"):
    """Llama 3's rope_scaling whose frequencies are theta's divided by `divisors` (head_dim / 2):
    the factor is the largest divisor; the frequencies blended between 1 and the factor give
    the two wavelengths that bound the blend (linear in 1 / wavelength), hence the low and high
    frequency factors at old_context. GGUFError unless the result gives the divisors back."""
    divisors = np.array(divisors, dtype=np.float64)
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if divisors.shape != inv_freq.shape or not np.all(divisors >= 1):
        raise GGUFError(f"{path}: {ROPE_FACTORS} holds {divisors.size} divisors, not head_dim / 2 = "
                        f"{inv_freq.size} of at least 1")
    factor = float(divisors.max())
    if factor == 1.0:
        return None
    blend = (1 / divisors - 1 / factor) / (1 - 1 / factor)  # 1 at high frequencies, 0 at low ones
    inside = (blend > 1e-4) & (blend < 1 - 1e-4)
    scaling = None
    if inside.sum() >= 2:  # blend = old_context / wavelength / (high - low) - low / (high - low)
        slope, offset = np.polyfit(old_context * inv_freq[inside] / (2 * math.pi), blend[inside], 1)
        low, high = -offset / slope, (1 - offset) / slope
        scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": round(float(low), 6),
                   "high_freq_factor": round(float(high), 6), "original_max_position_embeddings": old_context}
    if scaling is None or not np.allclose(inv_freq / llama3_scaled(inv_freq, scaling), divisors, rtol=1e-4):
        raise GGUFError(f"{path}: {ROPE_FACTORS} divides the rope frequencies in a way other than Llama 3's "
                        "scaling; not supported")
    return scaling


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
