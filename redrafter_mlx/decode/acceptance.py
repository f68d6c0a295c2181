"""Acceptance: greedy (match the LLM's argmax) and exact speculative sampling over sampled beams."""

from typing import NamedTuple

import mlx.core as mx

from .sampling import SamplingParams, target_log_probs


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


MIN_MASS = 1e-7  # a residual with less mass is taken as empty (float rounding); rejections there are rarer still


def _node(values: mx.array, beam: mx.array, depth: int) -> mx.array:
    """values (B, W, D, V'), beam (B,) -> values[b, beam[b], depth] as (B, V')."""
    return mx.take_along_axis(values[:, :, depth], beam[:, None, None], axis=1)[:, 0]


def _row(values: mx.array, index: mx.array, beam: mx.array, depth: int) -> mx.array:
    """values (B, T, V) at the packed tree tokens, index (B, W, L): each beam token's packed
    position, beam (B,) -> values[b, index[b, beam[b], depth]] as (B, V)."""
    position = mx.take_along_axis(index[:, :, depth], beam[:, None], axis=1)  # (B, 1)
    return mx.take_along_axis(values, position[:, :, None], axis=1)[:, 0]


def _at(values: mx.array, position: mx.array) -> mx.array:
    """values (B, V), position (B,) -> values[b, position[b]] (B,)."""
    return mx.take_along_axis(values, position[:, None], axis=-1)[:, 0]


def speculative_accept(beams: mx.array, draft_log_probs: mx.array, target_logits: mx.array, index: mx.array,
                       sampling: SamplingParams, *, draft_tokens: mx.array = None, draft_positions: mx.array = None,
                       without_replacement: bool = False) -> Accepted:
    """Exact multi-draft speculative sampling over a tree of sampled drafts (batched).

    beams (B, W, L): drafts, first token the LLM's own; draft_log_probs (B, W, L-1, V'): log q
    each drafted token was sampled from, over the draft vocabulary draft_tokens (V',) (None:
    all V tokens); draft_positions (B, W, L-1): each drafted token's position in it (None:
    the tokens themselves); target_logits (B, T, V): the LLM's logits after each packed tree
    token, and index (B, W, L) each beam token's packed position. Returns per sequence the
    beam holding the accepted prefix, the number of accepted drafts and the next token,
    distributed exactly as sampling from p = target_log_probs(logits, sampling) token by
    token (docs/sampling.md).

    Walks down the tree: at each depth the beams still alive share one prefix, so one p and
    one q apply; their tokens are tried in beam order, each accepted with probability
    min(1, r(x)/q(x)) against the residual r (p at first, norm(max(r - q, 0)) after each
    rejection). The first acceptance picks the child; if none, the next token is drawn
    from the final residual and the walk stops.

    iid drafts (without_replacement False): every beam's token is an independent draw from
    q, so each is tried, duplicates too. Drafts drawn without replacement (sampled_drafts
    "rsd-c", "rsd-s"; beams ordered so that a node's children appear in their sampled
    order): each distinct child is tried once, and after a rejection q loses that token
    and is renormalised (recursive rejection sampling, arXiv 2402.14160).

    Cost: p is computed only for the rows the walk visits (one per depth), and a rejection
    changes r only inside the draft vocabulary (q is 0 outside it): the walk keeps r there,
    unnormalised, with the mass outside it, and touches V' entries per candidate, not V. With
    iid drafts every rejection at a node subtracts the same q, so the residual after k
    rejections is max(p - c_k q, 0) for a scale c_k that depends on p and q only: the walk
    computes the W + 1 scales and then tests every candidate at once (_iid_walk)."""
    batch, width, length = beams.shape
    positions = beams[:, :, 1:] if draft_positions is None else draft_positions
    ids = mx.arange(target_logits.shape[-1]) if draft_tokens is None else draft_tokens
    walk = _recursive_walk if without_replacement else _iid_walk
    alive = mx.ones((batch, width), dtype=mx.bool_)
    done = mx.zeros((batch,), dtype=mx.bool_)
    count = mx.zeros((batch,), dtype=mx.int32)
    bonus = None
    for depth in range(1, length):
        lead = mx.argmax(alive, axis=1)  # any alive beam: they share the prefix
        p = mx.exp(target_log_probs(_row(target_logits, index, lead, depth - 1), sampling))  # (B, V)
        inside = p[:, ids]  # (B, V'): p inside the draft vocabulary
        outside = mx.maximum(p.sum(axis=-1) - inside.sum(axis=-1), 0.0)  # (B,): p's mass elsewhere
        q = mx.exp(_node(draft_log_probs, lead, depth - 1))  # (B, V')
        tokens, places = beams[:, :, depth], positions[:, :, depth - 1]
        coins = mx.random.uniform(shape=(batch, width))
        found, chosen, rest = walk(inside, outside, q, tokens, places, alive & ~done[:, None], coins)
        stop = ~done & ~found
        residual = mx.put_along_axis(p, mx.broadcast_to(ids, rest.shape), rest, axis=-1)
        bonus = residual if bonus is None else mx.where(stop[:, None], residual, bonus)
        alive = mx.where(found[:, None], alive & (tokens == chosen[:, None]), alive)
        count, done = count + found.astype(mx.int32), done | stop
    beam = mx.argmax(alive, axis=1)
    last = mx.exp(target_log_probs(_row(target_logits, index, beam, length - 1), sampling))
    bonus = mx.where(done[:, None], bonus, last)
    next_token = mx.random.categorical(mx.log(bonus), axis=-1).astype(mx.int32)
    return Accepted(beam, count, next_token)


def _iid_walk(inside, outside, q, tokens, places, alive, coins):
    """One node of the walk over iid candidates, all tested at once.

    inside (B, V'): p over the draft vocabulary; outside (B,): p's mass elsewhere; q (B, V');
    tokens, places (B, W): the beams' tokens at this depth and their places in V'; alive (B,
    W): the beams that take part; coins (B, W) uniform. Returns found (B,): a candidate was
    accepted, chosen (B,): its token, and the residual inside the draft vocabulary after the
    walk, unnormalised (B, V'): what the next token is drawn from when nothing was accepted.

    Before the first acceptance every tried candidate was rejected, so candidate w is tested
    against the residual after k(w) rejections, k(w) = the alive beams before w."""
    scales, masses = _residual_scales(inside, outside, q, tokens.shape[1])
    rejections = mx.cumsum(alive.astype(mx.int32), axis=1) - alive.astype(mx.int32)  # (B, W): k(w)
    scale = mx.take_along_axis(scales, rejections, axis=1)
    mass = mx.take_along_axis(masses, rejections, axis=1)
    at_p, at_q = mx.take_along_axis(inside, places, axis=1), mx.take_along_axis(q, places, axis=1)
    accept = alive & (coins * at_q * mass < mx.maximum(at_p - scale * at_q, 0.0))
    found = accept.any(axis=1)
    first = mx.argmax(accept, axis=1)[:, None]
    chosen = mx.take_along_axis(tokens, first, axis=1)[:, 0]
    last = mx.take_along_axis(scales, alive.sum(axis=1, keepdims=True), axis=1)  # (B, 1): all rejected
    return found, chosen, mx.maximum(inside - last * q, 0.0)


def _residual_scales(inside, outside, q, tries: int):
    """The residual after k rejections, k = 0..tries, as max(p - c_k q, 0) inside the draft
    vocabulary (p outside it) of mass m_k: returns c and m, each (B, tries + 1).

    A rejection moves r = max(p - c q, 0) of mass m to max(r - m q, 0) = max(p - (c + m) q,
    0), so c_{k+1} = c_k + m_k from c_0 = 0, m_0 = 1. A residual of mass at most MIN_MASS
    (r == q up to rounding) is not taken: r stays, and so it stays at every later rejection.
    The recurrence runs unchecked and each k then takes the last residual before the first
    one that was not taken (fewer operations per try than checking at each)."""
    outside = outside[:, None]
    scale, mass = mx.zeros(outside.shape), mx.ones(outside.shape)
    scales, masses = [scale], [mass]
    for _ in range(tries):
        scale = scale + mass
        mass = outside + mx.maximum(inside - scale * q, 0.0).sum(axis=-1, keepdims=True)  # (B, 1)
        scales.append(scale)
        masses.append(mass)
    scales, masses = mx.concatenate(scales, axis=1), mx.concatenate(masses, axis=1)
    taken = mx.cumprod((masses > MIN_MASS).astype(mx.int32), axis=1).sum(axis=1, keepdims=True)  # (B, 1)
    last_taken = mx.minimum(mx.arange(tries + 1)[None], taken - 1)  # (B, tries + 1)
    return mx.take_along_axis(scales, last_taken, axis=1), mx.take_along_axis(masses, last_taken, axis=1)


def _recursive_walk(inside, outside, q, tokens, places, alive, coins):
    """One node of the walk over children drawn without replacement (_iid_walk's arguments
    and results): each distinct child in beam order, q losing each rejected one."""
    batch, width = tokens.shape
    mass = mx.ones((batch,))
    candidates = _first_occurrences(tokens, alive)
    found = mx.zeros((batch,), dtype=mx.bool_)
    chosen = mx.zeros((batch,), dtype=mx.int32)
    for w in range(width):
        token, place = tokens[:, w], places[:, w]
        tried = candidates[:, w] & ~found
        accept = tried & (coins[:, w] * _at(q, place) * mass < _at(inside, place))
        found, chosen = found | accept, mx.where(accept, token, chosen)
        rejected = tried & ~accept
        rest = mx.maximum(inside - q * mass[:, None], 0.0)  # norm(max(r - q, 0)), unnormalised
        rest_mass = outside + rest.sum(axis=-1)
        moved = rejected & (rest_mass > MIN_MASS)  # r == q leaves nothing: r is kept
        inside, mass = mx.where(moved[:, None], rest, inside), mx.where(moved, rest_mass, mass)
        q = _without(q, place, rejected)
    return found, chosen, inside


def _without(q: mx.array, position: mx.array, drop: mx.array) -> mx.array:
    """q (B, V') with position (B,) removed and renormalised where drop (B,)."""
    removed = mx.put_along_axis(q, position[:, None], mx.zeros((q.shape[0], 1), q.dtype), axis=-1)
    removed = removed / mx.maximum(removed.sum(axis=-1, keepdims=True), 1e-30)
    return mx.where(drop[:, None], removed, q)


def _first_occurrences(tokens: mx.array, alive: mx.array) -> mx.array:
    """tokens, alive (B, W) -> (B, W): alive beams whose token no earlier alive beam has."""
    width = tokens.shape[1]
    same = (tokens[:, :, None] == tokens[:, None, :]) & alive[:, None, :]  # [b, w, u]: beam u has w's token
    earlier = mx.tril(mx.ones((width, width), dtype=mx.bool_), k=-1)  # u < w
    return alive & ~(same & earlier).any(axis=-1)
