"""Sampled drafts for speculative sampling: W independent draws from the drafter.

Beam search picks the most likely beams, which are not samples from the drafter, so
rejection sampling over them is biased. Here every beam is an ancestral sample from
q = the drafter's distribution under the same temperature / top-k / top-p as the
target, all beams starting at the LLM's own (already sampled) token. Beams that draw
the same prefix are merged later by the tree, so duplicates cost nothing to verify.
"""

import mlx.core as mx

from .beam_search import Draft
from .drafter import Drafter
from .sampling import SamplingParams, target_log_probs


def sample_drafts(drafter: Drafter, embed, context: mx.array, first_token: mx.array,
                  width: int, length: int, params: SamplingParams) -> Draft:
    """Draws `width` independent drafts of `length` tokens (first token: the LLM's own).

    context: (B, drafter.config.context_size); first_token: (B,). Returns beams (B, W, L) and log_probs
    (B, W, L-1, V): log q, the distribution each drafted token was drawn from; scores
    (B, W): the log q of each draft."""
    batch, context_size = context.shape
    beams = mx.broadcast_to(first_token[:, None, None], (batch, width, 1)).astype(mx.int32)
    state = mx.zeros((batch, width, drafter.config.hidden_size), dtype=context.dtype)
    context = mx.broadcast_to(context[:, None, :], (batch, width, context_size))
    history, scores = [], mx.zeros((batch, width), dtype=mx.float32)
    for _ in range(length - 1):
        state = drafter.next_state(state, embed(beams[:, :, -1]))
        log_q = target_log_probs(drafter(context, state), params)  # (B, W, V')
        token = drafter.token_of(mx.random.categorical(log_q, axis=-1)).astype(mx.int32)
        log_q = drafter.to_full_vocab(log_q, -mx.inf)  # (B, W, V): q is 0 at tokens never drafted
        scores = scores + mx.take_along_axis(log_q, token[:, :, None], axis=-1)[..., 0]
        beams = mx.concatenate([beams, token[:, :, None]], axis=-1)
        history.append(log_q)
    return Draft(beams, mx.stack(history, axis=2), scores)
