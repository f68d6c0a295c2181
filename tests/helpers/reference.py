"""Float64 NumPy references of the target LLM and the drafter, written from the equations."""

import math

import numpy as np
from mlx.utils import tree_flatten


def params64(module) -> dict:
    return {k: np.array(v).astype(np.float64) for k, v in tree_flatten(module.parameters())}


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1 + np.exp(-x))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def linear(p, name, x):
    y = x @ p[name + ".weight"].T
    return y + p[name + ".bias"] if name + ".bias" in p else y


def inverse_frequencies(config):
    """RoPE inverse frequencies, element by element (default, linear and llama3 scaling)."""
    dim, scaling = config.head_dim, config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / config.rope_theta ** (i / dim)
        if kind == "linear":
            freq /= scaling["factor"]
        elif kind == "llama3":
            old = scaling["original_max_position_embeddings"]
            low, high, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
            wavelen = 2 * math.pi / freq
            if wavelen > old / low:
                freq /= factor
            elif wavelen >= old / high:
                smooth = (old / wavelen - low) / (high - low)
                freq = (1 - smooth) * freq / factor + smooth * freq
        out.append(freq)
    return np.array(out)


def rope(x, positions, inv_freq, traditional):
    """x (T, heads, dim)."""
    angles = positions[:, None, None] * inv_freq[None, None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    if traditional:
        a, b = x[..., 0::2], x[..., 1::2]
        return np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)


def llm_forward(model, tokens, taps=()):
    """Full causal forward of the whole sequence: (T,) -> hidden (T, dim), logits (T, V);
    with taps, hidden is followed by those layers' outputs, RMS-normalised (T, dim * (1 + len(taps)))."""
    c, p = model.config, params64(model)
    inv_freq = inverse_frequencies(c)
    count, hd = len(tokens), c.head_dim
    x = p["model.embed_tokens.weight"][np.array(tokens)]
    positions = np.arange(count, dtype=np.float64)
    causal = np.tril(np.ones((count, count), dtype=bool))
    tapped = []
    for i in range(c.num_hidden_layers):
        pre = f"model.layers.{i}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], c.rms_norm_eps)
        q = linear(p, pre + "self_attn.q_proj", h).reshape(count, -1, hd)
        k = linear(p, pre + "self_attn.k_proj", h).reshape(count, -1, hd)
        v = linear(p, pre + "self_attn.v_proj", h).reshape(count, -1, hd)
        q, k = rope(q, positions, inv_freq, c.rope_traditional), rope(k, positions, inv_freq, c.rope_traditional)
        group = c.num_attention_heads // c.num_key_value_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        scores = np.where(causal[None], scores, -np.inf)
        weights = np.exp(log_softmax(scores))
        out = np.einsum("hts,shd->thd", weights, v).reshape(count, -1)
        x = x + linear(p, pre + "self_attn.o_proj", out)
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], c.rms_norm_eps)
        gate, up = linear(p, pre + "mlp.gate_proj", h), linear(p, pre + "mlp.up_proj", h)
        x = x + linear(p, pre + "mlp.down_proj", silu(gate) * up)
        if i in taps:
            tapped.append(rms_norm(x, 1.0, c.rms_norm_eps))
    hidden = rms_norm(x, p["model.norm.weight"], c.rms_norm_eps)
    head = p["model.embed_tokens.weight"] if c.tie_word_embeddings else p["lm_head.weight"]
    return np.concatenate([hidden, *tapped], -1), hidden @ head.T


def drafter_logits(p, config, context, state):
    x = np.concatenate([context, state], -1)
    if "input_proj.weight" in p:
        x = linear(p, "input_proj", x)
    for i in range(config.num_draft_layers):
        x = x + silu(linear(p, f"lm_head.{i}.linear", x))
    return x @ p[f"lm_head.{config.num_draft_layers}.weight"].T


def drafter_state(p, config, state, embedding):
    if config.rnn:
        return silu(embedding @ p["rnn_w.weight"].T + linear(p, "rnn_u", state))
    return state + embedding


def beam_search(drafter, embeddings, context, first_token, width, length):
    """One sequence: context (H,), embeddings (V, H) -> beams (W, L), scores (W,), log-probs (W, L-1, V)."""
    p, config = params64(drafter), drafter.config
    beams = np.full((width, 1), first_token)
    state = np.zeros((width, config.hidden_size))
    scores = np.array([0.0] + [-np.inf] * (width - 1))
    history = np.zeros((width, 0, config.vocab_size))
    for _ in range(length - 1):
        state = drafter_state(p, config, state, embeddings[beams[:, -1]])
        log_probs = log_softmax(drafter_logits(p, config, np.broadcast_to(context, (width, len(context))), state))
        candidates = (scores[:, None] + log_probs).reshape(-1)
        top = np.argsort(-candidates, kind="stable")[:width]
        parent, token = top // config.vocab_size, top % config.vocab_size
        scores = candidates[top]
        history = np.concatenate([history, log_probs[:, None]], 1)[parent]
        beams = np.concatenate([beams[parent], token[:, None]], 1)
        state = state[parent]
    return beams, scores, history
