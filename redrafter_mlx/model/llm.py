"""Target LLM (LLaMA family) with per-token positions and arbitrary attention masks.

One forward takes T new tokens with their positions and a mask over the cached plus new
tokens, so the same code runs prefill, auto-regressive steps and tree verification.
Weight names follow Hugging Face (model.layers.N.self_attn.q_proj ...), as mlx-lm does.
"""

from functools import partial

import mlx.core as mx
import mlx.nn as nn

from .config import ModelConfig
from .kv_cache import Cache, KVCache
from .linear import Linear, fused, padded_head
from .rope import apply_rope, rope_periods


FEW_QUERIES = 4  # with CPU kernels, attention over up to this many new tokens is computed per KV group


@partial(mx.compile, shapeless=True)
def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up as one fused kernel, also where a forward runs uncompiled (AR on GPUs):
    two otherwise (MLX's silu, then the product), per layer and token."""
    return nn.silu(gate) * up


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask, grouped: bool = False) -> mx.array:
    """Scaled dot-product attention: q (B, heads, T, head_dim), k, v (B, kv_heads, S,
    head_dim), mask None, "causal" or bool (B or 1, 1, T, S) -> (B, heads, T, head_dim).

    grouped (CPU kernels), for up to FEW_QUERIES new tokens: the query heads that share a KV
    head are stacked as rows of one product with it, keys never repeated: the fused op's CPU
    fallback is slower there (30 layers over 512 keys: 9.6 -> 6.9 ms for one token, 16.2
    -> 11.7 for three; docs/perf.md)."""
    batch, heads, length, head_dim = q.shape
    if not grouped or isinstance(mask, str) or length > FEW_QUERIES:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    groups = k.shape[1]
    scores = (q * scale).reshape(batch, groups, -1, head_dim) @ k.swapaxes(-1, -2)  # (B, G, heads/G * T, S)
    if mask is not None:
        scores = scores.reshape(batch, groups, heads // groups, length, -1)
        scores = mx.where(mask[:, :, None], scores, -mx.inf).reshape(batch, groups, heads // groups * length, -1)
    weights = mx.softmax(scores, axis=-1, precise=True)
    return (weights @ v).reshape(batch, heads, length, head_dim)


class Attention(nn.Module):
    cpu_kernels = False  # grouped attention for a few new tokens (attention())

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        self.traditional = config.rope_traditional
        dim, qkv_bias = config.hidden_size, config.attention_bias
        self.q_proj = Linear(dim, self.heads * self.head_dim, bias=qkv_bias)
        self.k_proj = Linear(dim, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = Linear(dim, self.kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = Linear(self.heads * self.head_dim, dim, bias=config.model_type != "qwen2" and qkv_bias)

    def fuse(self):
        """Replaces q/k/v_proj by one qkv_proj where they can be joined."""
        qkv = fused([self.q_proj, self.k_proj, self.v_proj])
        if qkv is not None:
            self.qkv_proj = qkv
            del self.q_proj, self.k_proj, self.v_proj

    def projections(self, x):
        """x (N, dim) -> q (N, heads * head_dim), k, v (N, kv_heads * head_dim)."""
        if "qkv_proj" not in self:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return mx.split(self.qkv_proj(x), [q_size, q_size + kv_size], axis=-1)

    def __call__(self, x, positions, batch: int, periods, mask, cache: Cache, layer: int, keys: int):
        """x (N, dim): the rows of `batch` sequences of T = N / batch new tokens each, at
        positions (N,) -> (N, dim), attending over the first `keys` cached positions; mask:
        None, "causal" or bool (B or 1, 1, T, keys)."""
        rows = x.shape[0]

        def heads_first(y, heads):  # (N, heads, ...) -> (B, heads, T, head_dim)
            return y.reshape(batch, rows // batch, heads, self.head_dim).transpose(0, 2, 1, 3)

        def rotated(y, heads):
            return heads_first(apply_rope(y.reshape(rows, heads, 1, self.head_dim), positions, periods,
                                          self.traditional), heads)

        q, k, v = self.projections(x)
        q, k, v = rotated(q, self.heads), rotated(k, self.kv_heads), heads_first(v, self.kv_heads)
        k, v = cache.update(layer, k, v, keys)
        out = attention(q, k, v, self.scale, mask, grouped=self.cpu_kernels)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(rows, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        dim, hidden, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(dim, hidden, bias=bias)
        self.up_proj = Linear(dim, hidden, bias=bias)
        self.down_proj = Linear(hidden, dim, bias=bias)

    def fuse(self):
        """Replaces gate/up_proj by one gate_up_proj where they can be joined."""
        gate_up = fused([self.gate_proj, self.up_proj])
        if gate_up is not None:
            self.gate_up_proj = gate_up
            del self.gate_proj, self.up_proj

    def __call__(self, x):
        if "gate_up_proj" in self:
            gate, up = mx.split(self.gate_up_proj(x), 2, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(swiglu(gate, up))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def __call__(self, x, positions, batch, periods, mask, cache, layer, keys):
        """x (N, dim): rows of `batch` sequences (Attention) -> (N, dim)."""
        x = x + self.self_attn(self.input_layernorm(x), positions, batch, periods, mask, cache, layer, keys)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Block(config) for _ in range(config.num_hidden_layers)]
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Model(nn.Module):
    """Causal LM: `model(tokens, positions, cache)` -> last hidden states (post norm).

    Kernels are plain until `linear.use_cpu_kernels(model, True)` (load_model does it where
    the DecodePolicy says so); `cpu_kernels` here pads few-row vocab heads.

    With `taps` (layer indices, ascending) the forward returns features instead: the final
    hidden state followed by each tapped layer's output, RMS-normalised without a weight
    (B, T, dim * (1 + len(taps))), for drafters that read more than the last layer."""

    cpu_kernels = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._rope_periods = rope_periods(config)

    def __call__(self, tokens: mx.array, positions: mx.array, cache: KVCache, block: mx.array = None,
                 key_valid: mx.array = None, taps: tuple = ()) -> mx.array:
        """tokens, positions (B, T) int; block (T, T) or (B, T, T) bool: which new tokens each
        new token sees (default causal); key_valid (B, capacity) bool hides cached keys.

        Writes the new K/V in the cache's next slots (without committing them); returns hidden
        (B, T, dim), or features (B, T, dim * (1 + len(taps)))."""
        count = tokens.shape[1]
        cache.reserve(count)
        plain = block is None and key_valid is None and cache.contiguous
        if plain and (count == 1 or not cache.fixed_shapes):
            mask = "causal" if count > 1 else None  # the fast fused paths, over exactly the keys in use
            keys = cache.end + count
        else:
            block = mx.tril(mx.ones((count, count), dtype=mx.bool_)) if block is None else block
            mask = cache.mask(block, key_valid)
            keys = cache.key_length(count)
        return self.forward(tokens, positions, mask, cache, keys, taps)

    def forward(self, tokens: mx.array, positions: mx.array, mask, cache, keys: int, taps: tuple = ()) -> mx.array:
        """The layers over prepared inputs: tokens, positions (B, T) int; mask None, "causal" or
        bool (B or 1, 1, T, keys); cache: a Cache (KVCache or Slots), whose update(layer, k, v,
        keys) writes the new K/V and returns the first `keys` slots. Returns hidden (B, T, dim),
        or with taps features (B, T, dim * (1 + len(taps)))."""
        batch, length = tokens.shape
        x = self.model.embed_tokens(tokens.reshape(-1))  # (B * T, dim): one row per token, as products take them
        rows = positions.reshape(-1)
        tapped = []
        for i, layer in enumerate(self.model.layers):
            x = layer(x, rows, batch, self._rope_periods, mask, cache, i, keys)
            if i in taps:
                tapped.append(mx.fast.rms_norm(x, None, self.config.rms_norm_eps))
        out = mx.concatenate([self.model.norm(x), *tapped], axis=-1) if taps else self.model.norm(x)
        return out.reshape(batch, length, -1)

    def fuse_projections(self) -> "Model":
        """Joins each layer's q/k/v and gate/up projections (loading keeps Hugging Face names;
        a fused model is for running, not for saving)."""
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
        return self

    def logits(self, hidden: mx.array) -> mx.array:
        """hidden (..., dim), or features (..., k * dim) whose first dim are the hidden state
        -> logits (..., vocab) in float32."""
        head = self.model.embed_tokens.as_linear if self.config.tie_word_embeddings else self.lm_head
        if hidden.shape[-1] != self.config.hidden_size:
            hidden = hidden[..., :self.config.hidden_size]
        return padded_head(head, hidden, pad=self.cpu_kernels).astype(mx.float32)

    def head_projection(self) -> nn.Module:
        """The layer holding the LM head's (vocab, dim) weights: the tied embedding or lm_head."""
        return self.model.embed_tokens if self.config.tie_word_embeddings else self.lm_head

    def embed(self, tokens: mx.array) -> mx.array:
        """The frozen input embeddings the drafter reads: tokens (...) -> (..., dim)."""
        return self.model.embed_tokens(tokens)

    @property
    def dtype(self):
        """The dtype of activations and of the KV cache (the norms' weights: never quantized)."""
        return self.model.norm.weight.dtype

    def new_cache(self, batch: int = 1, step: int = 256, fixed_shapes: bool = False) -> KVCache:
        c = self.config
        return KVCache(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, self.dtype, step, fixed_shapes)

    def sanitize(self, weights: dict) -> dict:
        """Drops checkpoint entries this model does not hold (rotary buffers, tied heads)."""
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.config.tie_word_embeddings:
            weights = {k: v for k, v in weights.items() if not k.startswith("lm_head.")}
        return weights
