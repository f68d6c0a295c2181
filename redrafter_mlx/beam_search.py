"""Beam search over the recurrent drafter."""

from typing import NamedTuple

import mlx.core as mx

from .drafter import Drafter
from .sampling import log_softmax

DEAD_BEAM = -1e30  # log-prob of beams 1..W-1 before the first drafted step


class Draft(NamedTuple):
    beams: mx.array  # (B, W, L) int32: beam w's first token is the LLM's own next token
    log_probs: mx.array  # (B, W, L-1, V') float32: drafter log-probs at each drafted position
    #   (V' = drafter.draft_vocab_size in beam search; the full V in sampled drafts)
    scores: mx.array  # (B, W) float32: cumulative log-prob of each beam


def beam_search(drafter: Drafter, embed, context: mx.array, first_token: mx.array,
                width: int, length: int) -> Draft:
    """Drafts `width` beams of `length` tokens.

    context: (B, drafter.config.context_size) LLM hidden state (or features, Model.forward's
    taps) at the last accepted token; first_token: (B,) the LLM's next token; embed: tokens
    (...) -> (..., hidden), the LLM's frozen embeddings.
    """
    batch, context_size = context.shape
    vocab = drafter.draft_vocab_size
    beams = mx.broadcast_to(first_token[:, None, None], (batch, width, 1)).astype(mx.int32)
    state = mx.zeros((batch, width, drafter.config.hidden_size), dtype=context.dtype)
    scores = mx.array([0.0] + [DEAD_BEAM] * (width - 1))[None].astype(mx.float32)
    scores = mx.broadcast_to(scores, (batch, width))
    context = mx.broadcast_to(context[:, None, :], (batch, width, context_size))
    history = mx.zeros((batch, width, 0, vocab), dtype=mx.float32)
    for _ in range(length - 1):
        state = drafter.next_state(state, embed(beams[:, :, -1]))
        log_probs = log_softmax(drafter(context, state))  # (B, W, V)
        candidates = (scores[:, :, None] + log_probs).reshape(batch, width * vocab)
        top = mx.argpartition(-candidates, kth=width - 1, axis=-1)[:, :width]
        top_scores = mx.take_along_axis(candidates, top, axis=-1)
        order = mx.argsort(-top_scores, axis=-1)  # best beam first
        top, scores = mx.take_along_axis(top, order, axis=-1), mx.take_along_axis(top_scores, order, axis=-1)
        parent, token = top // vocab, drafter.token_of(top % vocab).astype(mx.int32)
        state = mx.take_along_axis(state, parent[:, :, None], axis=1)
        beams = mx.take_along_axis(beams, parent[:, :, None], axis=1)
        beams = mx.concatenate([beams, token[:, :, None]], axis=-1)
        history = mx.concatenate([history, log_probs[:, :, None, :]], axis=2)
        history = mx.take_along_axis(history, parent[:, :, None, None], axis=1)
    return Draft(beams, history, scores)
