"""Decode loops: auto-regressive baseline and ReDrafter (draft, tree-verify, accept, commit).

Each step ends in exactly one `mx.eval`, which also computes the next step's draft, so
the host learns the accepted tokens and the next beams in the same sync.
"""

import time
from typing import Iterator, List

import mlx.core as mx
import numpy as np

from .acceptance import Accepted, greedy_accept, speculative_accept
from .beam_search import beam_search
from .device import on_gpu
from .drafter import Drafter
from .kv_cache import KVCache
from .llm import Model
from .sampled_drafts import sample_drafts
from .sampling import SamplingParams, sample, target_log_probs
from .stats import Stats
from .tree import build_tree

PREFILL_CHUNK = 512


def prefill(model: Model, cache: KVCache, prompt: List[int]) -> mx.array:
    """Runs the prompt through the model in chunks; returns the last hidden state (1, dim)."""
    for start in range(0, len(prompt), PREFILL_CHUNK):
        chunk = prompt[start:start + PREFILL_CHUNK]
        positions = mx.arange(cache.length, cache.length + len(chunk))[None]
        hidden = model(mx.array(chunk)[None], positions, cache)
        cache.advance(len(chunk))
        mx.eval(hidden, *cache.state())
    return hidden[:, -1]


def _finish(tokens: List[int], produced: int, max_tokens: int, eos_ids) -> List[int]:
    """Cuts a chunk at max_tokens and just after the first EOS."""
    tokens = tokens[:max_tokens - produced]
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i + 1]
    return tokens


def _check_prompt(prompt: List[int], max_tokens: int):
    if not prompt:
        raise ValueError("the prompt is empty")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")


def generate_ar(model: Model, prompt: List[int], max_tokens: int, params: SamplingParams = SamplingParams(),
                eos_ids=(), stats: Stats = None) -> Iterator[List[int]]:
    """Auto-regressive decoding; yields one token per step (as a one-element list).

    Pipelined like mlx-lm: step n+1 is queued (`mx.async_eval`) before token n is read, so
    building the next graph overlaps the device's work."""
    _check_prompt(prompt, max_tokens)
    stats = stats or Stats()
    cache = model.new_cache()
    start = time.perf_counter()
    token = sample(model.logits(prefill(model, cache, prompt)), params)
    mx.eval(token)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start

    def following(token):
        hidden = model(token[None], mx.array([[cache.length]]), cache)
        cache.advance(1)
        return sample(model.logits(hidden[:, -1]), params)

    start = time.perf_counter()
    while True:
        queued = following(token) if stats.generated_tokens + 1 < max_tokens else None
        if queued is not None:
            mx.async_eval(queued)
        chunk = _finish(token.tolist(), stats.generated_tokens, max_tokens, eos_ids)
        stats.generated_tokens += len(chunk)
        stats.steps += 1
        stats.generation_time = time.perf_counter() - start
        yield chunk
        if stats.generated_tokens >= max_tokens or chunk[-1] in eos_ids:
            return
        token = queued


def check_beam_shape(width: int, length: int, vocab_size: int):
    if not 1 <= width <= vocab_size:
        raise ValueError(f"beam width must be in 1..{vocab_size}, got {width}")
    if length < 2:
        raise ValueError(f"beam length must be >= 2 (the LLM's token plus >= 1 draft), got {length}")


def verify(model: Model, cache: KVCache, tree, size: int) -> mx.array:
    """One forward over the packed tree after the committed prefix; returns hidden (P, dim).

    size > P appends dummy tokens that see only themselves, keeping shapes fixed."""
    count = len(tree.tokens)
    block = np.eye(size, dtype=bool)
    block[:count, :count] = tree.mask
    tokens = np.zeros(size, dtype=np.int32)
    tokens[:count] = tree.tokens
    depths = np.zeros(size, dtype=np.int32)
    depths[:count] = tree.depths
    positions = mx.array(cache.length + depths)[None]
    return model(mx.array(tokens)[None], positions, cache, mx.array(block))[0, :count]


def draft_fn(params: SamplingParams):
    """Beam search for greedy decoding; independent sampled drafts for sampling."""
    if params.greedy:
        return beam_search
    return lambda *args: sample_drafts(*args, params)


def accept(model: Model, hidden: mx.array, index: mx.array, beams: np.ndarray, draft,
           params: SamplingParams) -> Accepted:
    """Judges the drafts against the LLM outputs at the packed tree tokens hidden (P, dim);
    index (W, L): the packed position of each beam token."""
    if params.greedy:
        target = mx.argmax(model.logits(hidden), axis=-1)[index]  # (W, L)
        return greedy_accept(mx.array(beams), target)
    log_p = target_log_probs(model.logits(hidden), params)[index]  # (W, L, V)
    accepted = speculative_accept(mx.array(beams)[None], draft.log_probs, log_p[None])
    return Accepted(*(a[0] for a in accepted))


def generate_redrafter(model: Model, drafter: Drafter, prompt: List[int], max_tokens: int,
                       beam_width: int, beam_length: int, eos_ids=(), stats: Stats = None,
                       pad_tree: bool = None, params: SamplingParams = SamplingParams()) -> Iterator[List[int]]:
    """ReDrafter decoding; yields the tokens accepted at each step (1..beam_length).

    Greedy (params.temp == 0): beam search, output identical to greedy AR. Sampling: W
    sampled drafts and exact multi-draft rejection sampling (docs/sampling.md).
    pad_tree: verify a fixed W*L tokens (default on GPUs, where shape changes cost more
    than the padding; off on CPUs, where each verified token costs time)."""
    _check_prompt(prompt, max_tokens)
    check_beam_shape(beam_width, beam_length, drafter.draft_vocab_size)
    stats = stats or Stats()
    stats.draft_length = beam_length - 1
    if pad_tree is None:
        pad_tree = on_gpu()
    pad_to = beam_width * beam_length if pad_tree else 0
    draft_beams = draft_fn(params)
    cache = model.new_cache(step=max(256, 4 * pad_to))  # room for ~4 trees: GPU attention reads it all
    start = time.perf_counter()
    context = prefill(model, cache, prompt)
    token = sample(model.logits(context), params)
    draft = draft_beams(drafter, model.embed, context, token, beam_width, beam_length)
    mx.eval(draft.beams)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start
    start = time.perf_counter()
    while True:
        stats.start_phase()
        beams = np.array(draft.beams[0])
        tree = build_tree(beams)
        written = max(pad_to, len(tree.tokens))
        hidden = verify(model, cache, tree, written)
        stats.end_phase("verify", hidden)
        index = mx.array(tree.index)
        accepted = accept(model, hidden, index, beams, draft, params)
        stats.end_phase("accept", accepted)
        context = hidden[index[accepted.beam, accepted.count]][None]
        draft = draft_beams(drafter, model.embed, context, accepted.next_token[None], beam_width, beam_length)
        mx.eval(accepted.beam, accepted.count, draft.beams, *cache.state())
        stats.end_phase("draft")
        best, count = accepted.beam.item(), accepted.count.item()
        cache.commit(tree.index[best, :count + 1], written)  # its copies, if any, run in the next step
        stats.end_phase("commit", *cache.state())
        chunk = _finish(beams[best, :count + 1].tolist(), stats.generated_tokens, max_tokens, eos_ids)
        stats.steps += 1
        stats.accepted_histogram[count] += 1
        stats.generated_tokens += len(chunk)
        stats.generation_time = time.perf_counter() - start
        yield chunk
        if stats.generated_tokens >= max_tokens or chunk[-1] in eos_ids:
            return
