"""Sampled drafts for speculative sampling: trees whose every node is a sample of the drafter.

Beam search picks the most likely beams, which are not samples from the drafter, so
rejection sampling over them is biased. Here the drafts are samples of q = the drafter's
distribution under the same temperature / top-k / top-p as the target, all beams starting
at the LLM's own (already sampled) token, in one of three ways (METHODS):

- "iid": W independent ancestral samples. When q is peaked most of them duplicate (the
  tree packs duplicates away, but they add no new candidates).
- "rsd-c" (Recursive Speculative Decoding, arXiv 2402.14160, constant branching): the W
  first drafted tokens drawn without replacement (Gumbel-top-W), each continued by one
  ancestral sample per level.
- "rsd-s" (RSD with stochastic beam search, Kool et al. 2019): the W sequences with the
  largest Gumbel-perturbed log q, found level by level with each child's Gumbel conditioned
  on its parent's; this is a sample of W distinct sequences without replacement, the
  sampled counterpart of greedy beam search. Unlikely prefixes are dropped early, so the
  tree's budget goes to likely branches.

Siblings of the without-replacement trees are ordered by their perturbed value (beams are
sorted by it, so a node's children appear in that order), which is the order in which
recursive rejection sampling (acceptance.speculative_accept) must try them. Beams that
cannot be filled (q has fewer than W tokens of support) become copies of beam 0, which the
tree packs away and the acceptance skips.
"""

import mlx.core as mx

from .beam_search import Draft
from ..model.drafter import Drafter
from .sampling import SamplingParams, target_log_probs

METHODS = ("iid", "rsd-c", "rsd-s")


def _log1mexp(x: mx.array) -> mx.array:
    """log(1 - exp(x)) for x <= 0, accurate at both ends."""
    return mx.where(x > -0.6931, mx.log(-mx.expm1(x)), mx.log1p(-mx.exp(x)))


def conditioned_gumbels(perturbed: mx.array, parent: mx.array) -> mx.array:
    """Gumbels perturbed (..., V) of a node's children, conditioned so that their maximum is
    the parent's perturbed value parent (..., 1) (Kool et al. 2019, appendix: the numerically
    stable form). Children of a dead parent (-inf) stay -inf."""
    top = perturbed.max(axis=-1, keepdims=True)
    v = parent - perturbed + _log1mexp(mx.minimum(perturbed - top, 0.0))
    shifted = parent - mx.maximum(v, 0.0) - mx.log1p(mx.exp(-mx.abs(v)))
    return mx.where(mx.isinf(parent) | mx.isinf(perturbed), -mx.inf, shifted)


def _select(values: mx.array, width: int):
    """The `width` largest of values (B, N), largest first -> (indices, values), each (B, W)."""
    top = mx.argpartition(-values, kth=width - 1, axis=-1)[:, :width]
    top_values = mx.take_along_axis(values, top, axis=-1)
    order = mx.argsort(-top_values, axis=-1)
    return mx.take_along_axis(top, order, axis=-1), mx.take_along_axis(top_values, order, axis=-1)


def _next_tokens(method: str, step: int, log_q: mx.array, values: mx.array, width: int):
    """One level of drafting: log_q (B, W, V') over the beams -> (parent beam, token index in
    V', the children's values), each (B, W). values: the beams' perturbed values (rsd-s),
    or whether they are filled (0 or -inf).

    rsd-s: a child sequence's perturbed value is Gumbel(its log q) conditioned on its
    parent's value being the maximum over the parent's children; conditioning on the
    maximum cancels any shift shared by siblings, so log q of the last token serves as the
    location as well as the sequence's log q would."""
    batch, _, vocab = log_q.shape
    if method == "iid" or (method == "rsd-c" and step > 0):
        parent = mx.broadcast_to(mx.arange(width), (batch, width))
        return parent, mx.random.categorical(log_q, axis=-1), values
    if method == "rsd-c":  # all beams are beam 0 here: its distribution, W tokens without replacement
        top, top_values = _select(log_q[:, 0] + mx.random.gumbel(log_q[:, 0].shape), width)
        return mx.zeros_like(top), top, mx.where(mx.isinf(top_values), -mx.inf, 0.0)
    perturbed = conditioned_gumbels(log_q + mx.random.gumbel(log_q.shape), values[:, :, None])  # (B, W, V')
    top, top_values = _select(perturbed.reshape(batch, -1), width)
    return top // vocab, top % vocab, top_values


def sample_drafts(drafter: Drafter, embed, context: mx.array, first_token: mx.array, width: int, length: int,
                  params: SamplingParams, method: str = "iid") -> Draft:
    """Draws `width` drafts of `length` tokens (first token: the LLM's own) by `method`.

    context: (B, drafter.config.context_size); first_token: (B,). Returns a Draft: beams
    (B, W, L), log_probs (B, W, L-1, V'): log q over the draft vocabulary, the distribution
    each drafted token was drawn from (q is 0 outside it), positions (B, W, L-1): each drafted
    token's place there, and scores (B, W): the beams' perturbed values (without
    replacement) or zeros (iid)."""
    batch, context_size = context.shape
    beams = mx.broadcast_to(first_token[:, None, None], (batch, width, 1)).astype(mx.int32)
    state = mx.zeros((batch, width, drafter.config.hidden_size), dtype=context.dtype)
    context = mx.broadcast_to(context[:, None, :], (batch, width, context_size))
    values = mx.broadcast_to(mx.array([0.0] + [-mx.inf] * (width - 1))[None], (batch, width))
    if method == "iid":
        values = mx.zeros((batch, width))
    history = mx.zeros((batch, width, 0, drafter.draft_vocab_size), dtype=mx.float32)
    positions = mx.zeros((batch, width, 0), dtype=mx.int32)
    for step in range(length - 1):
        state = drafter.next_state(state, embed(beams[:, :, -1]))
        log_q = target_log_probs(drafter(context, state), params)  # (B, W, V')
        parent, index, values = _next_tokens(method, step, log_q, values, width)
        index = index.astype(mx.int32)
        token = drafter.token_of(index).astype(mx.int32)
        log_q = mx.take_along_axis(log_q, parent[:, :, None], axis=1)
        state = mx.take_along_axis(state, parent[:, :, None], axis=1)
        beams = mx.concatenate([mx.take_along_axis(beams, parent[:, :, None], axis=1), token[:, :, None]], axis=-1)
        positions = mx.concatenate([mx.take_along_axis(positions, parent[:, :, None], axis=1), index[:, :, None]],
                                   axis=-1)
        history = mx.concatenate([mx.take_along_axis(history, parent[:, :, None, None], axis=1),
                                  log_q[:, :, None]], axis=2)
    valid = ~mx.isinf(values)[:, :, None]  # beams left unfilled become copies of beam 0
    beams = mx.where(valid, beams, beams[:, :1])
    positions = mx.where(valid, positions, positions[:, :1])
    history = mx.where(valid[..., None], history, history[:, :1])
    return Draft(beams, history, positions, values)
