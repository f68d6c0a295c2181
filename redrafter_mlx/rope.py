"""Rotary position embeddings at explicit per-token positions.

mlx-lm's rope takes one scalar offset per call; tree verification needs a position per
token (committed length + tree depth), so cos/sin are computed from a positions array.
"""

import math

import mlx.core as mx
import numpy as np

from .config import ConfigError, ModelConfig


def inverse_frequencies(config: ModelConfig) -> mx.array:
    """Returns inv_freq (head_dim // 2,) float32, with linear or llama3 scaling applied."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        pass
    elif kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_scaled(inv_freq, scaling)
    else:
        raise ConfigError(f"unsupported rope_scaling type {kind!r} (supported: linear, llama3)")
    return mx.array(inv_freq.astype(np.float32))


def _llama3_scaled(inv_freq: np.ndarray, scaling: dict) -> np.ndarray:
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old_context / low, inv_freq / factor, blended)
    return np.where(wavelen < old_context / high, inv_freq, out)


def rope_angles(positions: mx.array, inv_freq: mx.array):
    """positions (B, T) int -> (cos, sin), each (B, 1, T, head_dim // 2) float32."""
    angles = positions[:, None, :, None].astype(mx.float32) * inv_freq
    return mx.cos(angles), mx.sin(angles)


def apply_rope(x: mx.array, cos: mx.array, sin: mx.array, traditional: bool) -> mx.array:
    """Rotates x (B, heads, T, head_dim); traditional = interleaved pairs (GGUF layout)."""
    dtype = x.dtype
    x = x.astype(mx.float32)
    if traditional:
        a, b = x[..., 0::2], x[..., 1::2]
        out = mx.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        out = mx.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return out.astype(dtype)
