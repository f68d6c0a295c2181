"""Rotary position embeddings at explicit per-token positions.

A scalar rope offset is not enough for tree verification, where each token sits at
committed length + its tree depth.
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
        inv_freq = llama3_scaled(inv_freq, scaling)
    else:
        raise ConfigError(f"unsupported rope_scaling type {kind!r} (supported: linear, llama3)")
    return mx.array(inv_freq.astype(np.float32))


def llama3_scaled(inv_freq: np.ndarray, scaling: dict) -> np.ndarray:
    """inv_freq under Llama 3's rope_scaling (factor, low/high_freq_factor,
    original_max_position_embeddings)."""
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old_context / low, inv_freq / factor, blended)
    return np.where(wavelen < old_context / high, inv_freq, out)


def rope_periods(config: ModelConfig) -> mx.array:
    """What mx.fast.rope takes as `freqs`: 1 / inv_freq (head_dim // 2,) float32, made once per
    model (not a division per layer and step), in memory already (a model may run on another
    thread than the one that built it)."""
    return mx.array(1.0 / np.array(inverse_frequencies(config)))


def apply_rope(rows: mx.array, positions: mx.array, periods: mx.array, traditional: bool) -> mx.array:
    """Rotates rows (N, heads, 1, head_dim), each a token at positions (N,); periods:
    rope_periods; traditional = interleaved pairs.

    Each token is its own batch row, so mx.fast.rope's per-row offset gives every token its
    own position in one fused kernel."""
    return mx.fast.rope(rows, rows.shape[-1], traditional=traditional, base=None, scale=1.0, offset=positions,
                        freqs=periods)
