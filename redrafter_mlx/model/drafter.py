"""Recurrent drafter (ReDrafter): an RNN over draft tokens plus a ResBlock vocab head.

Parameter names follow Apple's checkpoints: input_proj (only when exit_dim != context + hidden),
lm_head.{0..N-1}.linear (ResBlocks), lm_head.{N} (vocab projection, no bias),
rnn_u (with bias) and rnn_w (no bias).

The compact variant (config.head == "target") stores no vocab projection: it ends with
the ResBlocks at exit_dim == hidden, an RMSNorm (`exit_norm`: the LLM's head expects
normalised inputs) and the target LLM's frozen LM head, bound with `bind_target` (not a
parameter: neither trained nor saved).

Context layers (ours, config.context_layers): besides the LLM's last hidden state the
drafter reads the outputs of some earlier layers, RMS-normalised (Model.forward's taps),
through input_proj; Apple's drafters read none.

`restrict_vocab` makes either variant score only a subset of tokens (draft_vocab.py). An
own head trained on such a subset holds only those rows (config.head_rows = K): its
logits are over the K tokens of its draft vocabulary, and it ships at K/V of the size.
"""

import mlx.core as mx
import mlx.nn as nn

from .config import DrafterConfig
from .draft_vocab import SubsetHead
from .linear import Linear


class ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = Linear(dim, dim)

    def __call__(self, x):
        return x + nn.silu(self.linear(x))


class Drafter(nn.Module):
    def __init__(self, config: DrafterConfig):
        super().__init__()
        self.config = config
        dim, exit_dim = config.hidden_size, config.exit_dim
        if exit_dim != config.context_size + dim:
            self.input_proj = Linear(config.context_size + dim, exit_dim)
        self.lm_head = [ResBlock(exit_dim) for _ in range(config.num_draft_layers)]
        if config.head == "own":
            self.lm_head.append(Linear(exit_dim, config.head_rows or config.vocab_size, bias=False))
        else:
            self.exit_norm = nn.RMSNorm(exit_dim, eps=config.rms_norm_eps)
        self._target = None  # the target Model, for head == "target" (not a parameter)
        self._token_ids = None  # (K,) the token scored by each logit, when the draft vocabulary is reduced
        self._subset_head = None  # SubsetHead: those rows of a full-vocabulary projection
        if config.rnn:
            self.rnn_u = Linear(dim, dim)
            self.rnn_w = Linear(dim, dim, bias=False)

    def bind_target(self, model):
        """Gives a head == "target" drafter the LLM's LM head (hidden -> float32 logits)."""
        self._target = model

    def restrict_vocab(self, token_ids: mx.array):
        """From now on score only token_ids (K,) sorted: logits (..., K), index i is token_ids[i].

        For an own head of K rows (config.head_rows), token_ids names what its rows are."""
        if self.config.head_rows:
            if token_ids.shape[0] != self.config.head_rows:
                raise ValueError(f"this drafter's head scores exactly its {self.config.head_rows}-token draft "
                                 f"vocabulary, not {token_ids.shape[0]} tokens")
        else:
            projection = self._target.head_projection() if self.config.head == "target" else self.lm_head[-1]
            self._subset_head = SubsetHead(projection, token_ids)
        self._token_ids = token_ids

    @property
    def taps(self) -> tuple:
        """The target layers whose outputs this drafter reads besides the last (Model.forward's taps)."""
        return tuple(self.config.context_layers)

    @property
    def draft_tokens(self):
        """(K,) the token scored by each logit, sorted, or None when all tokens are."""
        return self._token_ids

    @property
    def draft_vocab_size(self) -> int:
        return self.config.vocab_size if self._token_ids is None else self._token_ids.shape[0]

    def token_of(self, index: mx.array) -> mx.array:
        """Positions in the drafter's logits -> token ids."""
        return index if self._token_ids is None else self._token_ids[index]

    def index_of(self, tokens: mx.array) -> mx.array:
        """Token ids -> positions in the drafter's logits, -1 for tokens it does not score."""
        if self._token_ids is None:
            return tokens
        lookup = mx.full((self.config.vocab_size,), -1, dtype=mx.int32)
        lookup[self._token_ids] = mx.arange(self._token_ids.shape[0], dtype=mx.int32)
        return lookup[tokens]

    def from_full_vocab(self, values: mx.array) -> mx.array:
        """values (..., vocab_size) -> (..., draft_vocab_size): the drafted tokens' entries."""
        return values if self._token_ids is None else values[..., self._token_ids]

    def to_full_vocab(self, values: mx.array, fill: float) -> mx.array:
        """values (..., draft_vocab_size) -> (..., vocab_size), `fill` at tokens not drafted."""
        if self._token_ids is None:
            return values
        ids = mx.broadcast_to(self._token_ids, values.shape)
        full = mx.full((*values.shape[:-1], self.config.vocab_size), fill, dtype=values.dtype)
        return mx.put_along_axis(full, ids, values, axis=-1)

    def next_state(self, state: mx.array, token_embedding: mx.array) -> mx.array:
        """state, token_embedding (..., hidden) -> the state after reading that token."""
        if self.config.rnn:
            return nn.silu(self.rnn_w(token_embedding) + self.rnn_u(state))
        return state + token_embedding

    def __call__(self, context: mx.array, state: mx.array) -> mx.array:
        """context h (..., context_size), state s (..., hidden) -> logits (..., draft_vocab_size) float32."""
        x = mx.concatenate([context, state], axis=-1)
        if "input_proj" in self:
            x = self.input_proj(x)
        for block in self.lm_head[:self.config.num_draft_layers]:
            x = block(x)
        if self.config.head == "target":
            if self._target is None:
                raise RuntimeError("this drafter uses the target's LM head: call bind_target(model) first")
            x = self.exit_norm(x)
        if self.config.head_rows and self._token_ids is None:
            raise RuntimeError("this drafter's head covers its draft vocabulary only: call restrict_vocab first")
        if self._subset_head is not None:
            return self._subset_head(x)
        if self.config.head == "target":
            return self._target.logits(x)
        return self.lm_head[-1](x).astype(mx.float32)

    def sanitize(self, weights: dict) -> dict:
        """Drops emb_norm (kept in checkpoints for compatibility, never applied)."""
        return {k: v for k, v in weights.items() if not k.startswith("emb_norm.")}
