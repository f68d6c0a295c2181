"""Acceptance: greedy (match the LLM's argmax) and exact speculative sampling over sampled beams."""

from typing import NamedTuple

import mlx.core as mx


class Accepted(NamedTuple):
    beam: mx.array  # () or (B,) int: the chosen beam
    count: mx.array  # () or (B,) int: drafted tokens accepted on it (0 .. L-1)
    next_token: mx.array  # () or (B,) int: the LLM's token after the accepted prefix (the bonus)


def greedy_accept(beams: mx.array, target: mx.array) -> Accepted:
    """beams (W, L): drafts, first token the LLM's own; target (W, L): LLM argmax after each.

    Beam w accepts its k first drafts when beams[w, 1:k+1] == target[w, :k]; the beam with
    the most accepted tokens wins (ties: lowest index)."""
    matches = (beams[:, 1:] == target[:, :-1]).astype(mx.int32)
    counts = mx.cumprod(matches, axis=1).sum(axis=1)
    beam = mx.argmax(counts)
    count = counts[beam]
    return Accepted(beam, count, target[beam, count])


def _residual(probs: mx.array, draft_probs: mx.array) -> mx.array:
    """norm(max(p - q, 0)) over the last axis; keeps p where that is all zero (p == q)."""
    rest = mx.maximum(probs - draft_probs, 0.0)
    total = rest.sum(axis=-1, keepdims=True)
    return mx.where(total > 0, rest / mx.maximum(total, 1e-30), probs)


def _row(values: mx.array, beam: mx.array, depth: int) -> mx.array:
    """values (B, W, D, V), beam (B,) -> values[b, beam[b], depth] as (B, V)."""
    return mx.take_along_axis(values[:, :, depth], beam[:, None, None], axis=1)[:, 0]


def _at(probs: mx.array, token: mx.array) -> mx.array:
    """probs (B, V), token (B,) -> probs[b, token[b]] (B,)."""
    return mx.take_along_axis(probs, token[:, None], axis=-1)[:, 0]


def _first_occurrences(tokens: mx.array, alive: mx.array) -> mx.array:
    """tokens, alive (B, W) -> (B, W): alive beams whose token no earlier alive beam has."""
    width = tokens.shape[1]
    same = (tokens[:, :, None] == tokens[:, None, :]) & alive[:, None, :]  # [b, w, u]: beam u has w's token
    earlier = mx.tril(mx.ones((width, width), dtype=mx.bool_), k=-1)  # u < w
    return alive & ~(same & earlier).any(axis=-1)


def _without(probs: mx.array, token: mx.array, drop: mx.array) -> mx.array:
    """probs (B, V) with token (B,) removed and renormalised where drop (B,)."""
    removed = mx.put_along_axis(probs, token[:, None], mx.zeros((probs.shape[0], 1), probs.dtype), axis=-1)
    removed = removed / mx.maximum(removed.sum(axis=-1, keepdims=True), 1e-30)
    return mx.where(drop[:, None], removed, probs)


def speculative_accept(beams: mx.array, draft_log_probs: mx.array, target_log_probs: mx.array,
                       without_replacement: bool = False) -> Accepted:
    """Exact multi-draft speculative sampling over a tree of sampled drafts (batched).

    beams (B, W, L): drafts, first token the LLM's own; draft_log_probs (B, W, L-1, V): log q
    each drafted token was sampled from; target_log_probs (B, W, L, V): log p of the LLM
    after each beam token. Returns per sequence the beam holding the accepted prefix, the
    number of accepted drafts and the next token, distributed exactly as sampling from p
    token by token (docs/sampling.md).

    Walks down the tree: at each depth the beams still alive share one prefix, so one p and
    one q apply; their tokens are tried in beam order, each accepted with probability
    min(1, r(x)/q(x)) against the residual r (p at first, norm(max(r - q, 0)) after each
    rejection). The first acceptance picks the child; if none, the next token is drawn
    from the final residual and the walk stops.

    iid drafts (without_replacement False): every beam's token is an independent draw from
    q, so each is tried, duplicates too. Drafts drawn without replacement (sampled_drafts
    "rsd-c", "rsd-s"; beams ordered so that a node's children appear in their sampled
    order): each distinct child is tried once, and after a rejection q loses that token
    and is renormalised (recursive rejection sampling, arXiv 2402.14160)."""
    batch, width, length = beams.shape
    alive = mx.ones((batch, width), dtype=mx.bool_)
    done = mx.zeros((batch,), dtype=mx.bool_)
    count = mx.zeros((batch,), dtype=mx.int32)
    bonus = None
    for depth in range(1, length):
        lead = mx.argmax(alive, axis=1)  # any alive beam: they share the prefix
        residual = mx.exp(_row(target_log_probs, lead, depth - 1))
        draft_probs = mx.exp(_row(draft_log_probs, lead, depth - 1))
        tokens = beams[:, :, depth]
        candidates = _first_occurrences(tokens, alive) if without_replacement else alive
        coins = mx.random.uniform(shape=(batch, width))
        found = mx.zeros((batch,), dtype=mx.bool_)
        chosen = mx.zeros((batch,), dtype=mx.int32)
        for w in range(width):
            token = tokens[:, w]
            tried = candidates[:, w] & ~found & ~done
            accept = tried & (coins[:, w] * _at(draft_probs, token) < _at(residual, token))
            found, chosen = found | accept, mx.where(accept, token, chosen)
            rejected = tried & ~accept
            residual = mx.where(rejected[:, None], _residual(residual, draft_probs), residual)
            if without_replacement:
                draft_probs = _without(draft_probs, token, rejected)
        stop = ~done & ~found
        bonus = residual if bonus is None else mx.where(stop[:, None], residual, bonus)
        alive = mx.where(found[:, None], alive & (tokens == chosen[:, None]), alive)
        count, done = count + found.astype(mx.int32), done | stop
    beam = mx.argmax(alive, axis=1)
    bonus = mx.where(done[:, None], bonus, mx.exp(_row(target_log_probs, beam, length - 1)))
    next_token = mx.random.categorical(mx.log(bonus), axis=-1).astype(mx.int32)
    return Accepted(beam, count, next_token)
