"""Decode loops: auto-regressive baseline and ReDrafter (draft, tree-verify, accept, commit).

Each ReDrafter step packs the beams (greedy: plus the lookup beam, lookup.py) into a tree
on the host, then runs one function of arrays (`redrafter_step`: verify, accept, next
draft; compiled where shapes are fixed) and ends in exactly one `mx.eval`, so the host
learns the accepted tokens and the next beams in the same sync.
"""

import time
from typing import Callable, Iterator, List

import mlx.core as mx
import numpy as np

from .acceptance import Accepted, greedy_accept, speculative_accept
from .beam_search import BeamShape, Draft, beam_search
from .drafter import Drafter
from .errors import UsageError
from .kv_cache import KVCache, Slots
from .llm import Model
from .lookup import with_lookup_beam
from .policy import DecodePolicy
from .sampled_drafts import METHODS, sample_drafts
from .sampling import SamplingParams, sample
from .stats import Stats
from .tree import build_tree

PREFILL_CHUNK = 512
MAX_COMPILED_STEPS = 8  # per model
CACHE_STEP = 256  # the cache grows by multiples of this: on GPUs each capacity compiles its own kernels
LOOKUP_MIN_MATCH = 2  # lookup.py; best measured on CPUs and GPUs (docs/perf.md)
SAMPLED_DRAFTS = "rsd-s"  # sampled_drafts.py: how drafts are drawn when sampling


def prefill(model: Model, cache: KVCache, prompt: List[int], *, bucket: int = 1, taps: tuple = (),
            progress: Callable[[int, int], None] = None, chunk_size: int = None) -> mx.array:
    """Runs the prompt through the model in chunks; returns the last hidden state (1, dim),
    or with taps the last features (1, dim * (1 + len(taps))), Model.forward.

    progress(done, total): called after each chunk with the prompt tokens processed so far;
    an exception it raises stops the prefill (a server cancels a request this way). chunk_size:
    prompt tokens per chunk (DecodePolicy.prefill_chunk; None: PREFILL_CHUNK; smaller: progress
    called more often).

    bucket: pad each chunk at its end to a multiple of this many tokens (DecodePolicy: on a
    GPU every new prompt length compiles kernels, ~80 ms for a length seen first, ~10 ms
    again; padded chunks come in a few lengths). Causal attention keeps the padding out of
    the prompt's states, and the cache commits only the prompt (the padding's slots are
    written over)."""
    chunk_size = chunk_size or PREFILL_CHUNK
    for start in range(0, len(prompt), chunk_size):
        chunk = prompt[start:start + chunk_size]
        padded = -(-len(chunk) // bucket) * bucket
        positions = mx.arange(cache.length, cache.length + padded)[None]
        hidden = model(mx.array(chunk + [0] * (padded - len(chunk)))[None], positions, cache, taps=taps)
        cache.advance(len(chunk))
        mx.eval(hidden, *cache.state())
        if progress is not None:
            progress(start + len(chunk), len(prompt))
    return hidden[:, len(chunk) - 1]


def _finish(tokens: List[int], produced: int, max_tokens: int, eos_ids) -> List[int]:
    """Cuts a chunk at max_tokens and just after the first EOS."""
    tokens = tokens[:max_tokens - produced]
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i + 1]
    return tokens


def max_tokens_in_window(prompt_length: int, max_tokens: int, window: int) -> int:
    """max_tokens cut to the room that a prompt of prompt_length tokens leaves in a context
    window of `window` positions (the model's max_position_embeddings); UsageError when the
    prompt leaves none. Checked once per request, before the prompt is run."""
    if prompt_length >= window:
        raise UsageError(f"the prompt is {prompt_length} tokens and the model's context window "
                         f"(max_position_embeddings) {window}: no room to generate; shorten the prompt")
    return min(max_tokens, window - prompt_length)


def _check_prompt(model: Model, prompt: List[int], max_tokens: int) -> int:
    """Checks a request once; returns max_tokens cut to the context window."""
    if not prompt:
        raise UsageError("the prompt is empty")
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be >= 1, got {max_tokens}")
    return max_tokens_in_window(len(prompt), max_tokens, model.config.max_position_embeddings)


def generate_ar(model: Model, prompt: List[int], *, max_tokens: int, sampling: SamplingParams = SamplingParams(),
                eos_ids=(), policy: DecodePolicy = None, stats: Stats = None,
                progress: Callable[[int, int], None] = None) -> Iterator[List[int]]:
    """Auto-regressive decoding; yields one token per step (as a one-element list).

    Pipelined like mlx-lm: step n+1 is queued (`mx.async_eval`) before token n is read, so
    building the next graph overlaps the device's work. policy.compile_ar: each step is one
    compiled function over the cache's whole capacity (CPUs, where building the graph in
    Python costs ~9% of a step; on GPUs the plain step, whose fused one-query attention
    reads exactly the keys in use, was as fast: docs/perf.md). max_tokens is cut to the room
    that the prompt leaves in the model's context window (max_tokens_in_window); progress: prefill's."""
    max_tokens = _check_prompt(model, prompt, max_tokens)
    policy = policy or DecodePolicy.for_device()
    stats = stats or Stats()
    cache = model.new_cache(fixed_shapes=policy.compile_ar or policy.fixed_shapes)
    step = ar_step(model, sampling) if policy.compile_ar else None
    start = time.perf_counter()
    token = sample(model.logits(prefill(model, cache, prompt, bucket=policy.prefill_bucket, progress=progress,
                                         chunk_size=policy.prefill_chunk)),
                   sampling)
    mx.eval(token)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start

    def following(token):
        if step is None:
            hidden = model(token[None], mx.array([[cache.length]]), cache)
            following_token = sample(model.logits(hidden[:, -1]), sampling)
        else:
            inputs = slot_inputs(cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
            following_token, keys, values = step(token[None], *inputs, *cache.arrays())
            cache.adopt(keys, values)
        cache.advance(1)
        return following_token

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


def tree_inputs(cache: KVCache, tree, size: int):
    """The packed tree after the committed prefix as a step's inputs: tokens, positions
    (1, size), mask (1, 1, size, keys) and offset (1,), the first slot written.

    size > P appends dummy tokens that see only themselves, keeping shapes fixed."""
    count = len(tree.tokens)
    block = np.eye(size, dtype=bool)
    block[:count, :count] = tree.mask
    tokens = np.zeros(size, dtype=np.int32)
    tokens[:count] = tree.tokens
    depths = np.zeros(size, dtype=np.int32)
    depths[:count] = tree.depths
    return (mx.array(tokens)[None], *slot_inputs(cache, block, depths))


def slot_inputs(cache: KVCache, block: np.ndarray, depths: np.ndarray):
    """Makes room for T new tokens at `depths` (T,) after the committed prefix, seeing each
    other per `block` (T, T); returns a step's positions (1, T), mask (1, 1, T, keys) and
    offset (1,), the first slot written."""
    cache.reserve(len(depths))
    return mx.array(cache.length + depths)[None], cache.mask(mx.array(block)), mx.array([cache.end])


def verify(model: Model, tokens, positions, mask, offset, keys: list, values: list, taps: tuple = ()):
    """One forward over the packed tree (tree_inputs) with the cache's arrays per layer;
    returns hidden (T, dim) (with taps: features, Model.forward) and the arrays with the
    tree's keys/values written."""
    slots = Slots(keys, values, offset)
    hidden = model.forward(tokens, positions, mask, slots, mask.shape[-1], taps)
    return hidden[0], slots.keys, slots.values


def draft_fn(sampling: SamplingParams, sampled_drafts: str):
    """Beam search for greedy decoding; sampled drafts (sampled_drafts.METHODS) for sampling."""
    if sampling.greedy:
        return beam_search
    return lambda *args: sample_drafts(*args, sampling, sampled_drafts)


def accept(model: Model, drafter: Drafter, hidden: mx.array, index: mx.array, beams: mx.array, draft: Draft,
           sampling: SamplingParams, sampled_drafts: str) -> Accepted:
    """Judges the drafts beams (W, L) against the LLM outputs at the packed tree tokens
    hidden (T, dim); index (W, L): the packed position of each beam token; draft: the
    drafts' log q (W, L-1, V') and positions (W, L-1) in the draft vocabulary (sampling only)."""
    if sampling.greedy:
        target = mx.argmax(model.logits(hidden), axis=-1)[index]  # (W, L)
        return greedy_accept(beams, target)
    accepted = speculative_accept(beams[None], draft.log_probs[None], model.logits(hidden)[None], index[None],
                                  sampling, draft_tokens=drafter.draft_tokens, draft_positions=draft.positions[None],
                                  without_replacement=sampled_drafts != "iid")
    return Accepted(*(a[0] for a in accepted))


def redrafter_step(model: Model, drafter: Drafter, beam: BeamShape, sampling: SamplingParams, sampled_drafts: str,
                   compiled: bool):
    """A ReDrafter step after the tree is packed, as one function of arrays: verify the tree,
    accept, draft the next beams. Compiled where shapes are fixed (GPUs): traced once per
    cache capacity, its elementwise operations fused, instead of a graph of ~1,000 operations
    built in Python at every step (16x4 on an H100: 14.4 -> 9.7 ms per step, docs/perf.md).

    step(tokens, positions, mask, offset, index, beams, draft_log_probs, draft_positions, keys, values) ->
    (Accepted, next Draft, keys, values): tree_inputs, then the beams' packed index and
    tokens (W, L), their drafts' log q (W, L-1, V') and positions (W, L-1) in the draft
    vocabulary, and the cache's arrays per layer, which come back written."""
    draft_beams = draft_fn(sampling, sampled_drafts)

    def step(tokens, positions, mask, offset, index, beams, draft_log_probs, draft_positions, keys, values):
        hidden, keys, values = verify(model, tokens, positions, mask, offset, keys, values, drafter.taps)
        drafted = Draft(beams, draft_log_probs, draft_positions, None)
        accepted = accept(model, drafter, hidden, index, beams, drafted, sampling, sampled_drafts)
        context = hidden[index[accepted.beam, accepted.count]][None]
        draft = draft_beams(drafter, model.embed, context, accepted.next_token[None], beam.width, beam.length)
        return accepted, draft, keys, values

    return compile_once(model, step, (id(drafter), beam, sampling, sampled_drafts)) if compiled else step


def ar_step(model: Model, sampling: SamplingParams):
    """An AR step as one compiled function of arrays (generate_ar): (token (1, 1), positions
    (1, 1), mask (1, 1, 1, capacity), offset (1,), keys, values) -> (next token (1,), keys, values)."""
    def step(tokens, positions, mask, offset, keys, values):
        hidden, keys, values = verify(model, tokens, positions, mask, offset, keys, values)
        return sample(model.logits(hidden), sampling), keys, values

    return compile_once(model, step, ("ar", sampling))


def compile_once(model: Model, step, key):
    """mx.compile(step), the random state threaded through, kept with the model under `key`
    (tracing costs a step's graph); a model keeps its last MAX_COMPILED_STEPS."""
    steps = vars(model).setdefault("_compiled_steps", {})  # a plain attribute, not a parameter of the Module
    if key not in steps:
        if len(steps) >= MAX_COMPILED_STEPS:
            steps.pop(next(iter(steps)))
        steps[key] = mx.compile(step, inputs=mx.random.state, outputs=mx.random.state)
    return steps[key]


def tree_cache(model: Model, pad_to: int, fixed_shapes: bool) -> KVCache:
    """A KV cache for trees padded to `pad_to` tokens: it grows by room for ~4 trees, in whole
    multiples of CACHE_STEP slots, so its capacities are ones other shapes use too."""
    return model.new_cache(step=CACHE_STEP * max(1, -(-4 * pad_to // CACHE_STEP)), fixed_shapes=fixed_shapes)


def generate_redrafter(model: Model, drafter: Drafter, prompt: List[int], *, max_tokens: int,
                       beam: BeamShape = BeamShape(), sampling: SamplingParams = SamplingParams(),
                       lookup: int = LOOKUP_MIN_MATCH, sampled_drafts: str = SAMPLED_DRAFTS, eos_ids=(),
                       policy: DecodePolicy = None, stats: Stats = None,
                       progress: Callable[[int, int], None] = None) -> Iterator[List[int]]:
    """ReDrafter decoding; yields the tokens accepted at each step (1..beam.length).

    Greedy (sampling.temp == 0): beam search, output identical to greedy AR. Sampling: a
    tree of W drafts sampled from the drafter (sampled_drafts: "iid", "rsd-c" or "rsd-s",
    sampled_drafts.py) and exact multi-draft rejection sampling (docs/sampling.md). lookup:
    greedy only, add a beam copied from earlier in the text where its last `lookup` or more
    tokens occur before (lookup.py; 0: never). policy (default: this device's): whether the
    tree is verified at a fixed size W x L over the cache's whole capacity in one compiled
    step, and whether the lookup beam pads it. max_tokens is cut to the room that the prompt
    leaves in the model's context window (max_tokens_in_window); progress: prefill's."""
    max_tokens = _check_prompt(model, prompt, max_tokens)
    beam.check(drafter.draft_vocab_size)
    if lookup < 0:
        raise UsageError(f"lookup (the lookup beam's minimum match) must be >= 0, got {lookup}")
    if sampled_drafts not in METHODS:
        raise UsageError(f"sampled drafts must be one of {', '.join(METHODS)}, got {sampled_drafts!r}")
    policy = policy or DecodePolicy.for_device()
    stats = stats or Stats()
    stats.draft_length = beam.length - 1
    lookup = lookup if sampling.greedy else 0
    fixed = policy.fixed_tree(beam.width)
    padded_beams = beam.width + (lookup > 0 and policy.pad_lookup)
    pad_to = padded_beams * beam.length if fixed else 0
    cache = tree_cache(model, pad_to, fixed)
    step = redrafter_step(model, drafter, beam, sampling, sampled_drafts, compiled=fixed)
    start = time.perf_counter()
    context = prefill(model, cache, prompt, bucket=policy.prefill_bucket, taps=drafter.taps, progress=progress,
                      chunk_size=policy.prefill_chunk)
    token = sample(model.logits(context), sampling)
    draft = draft_fn(sampling, sampled_drafts)(drafter, model.embed, context, token, beam.width, beam.length)
    mx.eval(draft.beams)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start
    text = list(prompt)  # what the lookup beam searches
    start = time.perf_counter()
    while True:
        stats.start_phase()
        beams = np.array(draft.beams[0])
        if lookup:
            beams = with_lookup_beam(beams, text, lookup)
        tree = build_tree(beams)
        written = max(pad_to, len(tree.tokens))
        inputs = tree_inputs(cache, tree, written)
        stats.end_phase("tree", *inputs)
        accepted, draft, keys, values = step(*inputs, mx.array(tree.index), mx.array(beams), draft.log_probs[0],
                                             draft.positions[0], *cache.arrays())
        cache.adopt(keys, values)
        mx.eval(accepted.beam, accepted.count, draft.beams, *cache.state())
        stats.end_phase("step")
        best, count = accepted.beam.item(), accepted.count.item()
        cache.commit(tree.index[best, :count + 1], written)  # its copies, if any, run in the next step
        stats.end_phase("commit", *cache.state())
        accepted_tokens = beams[best, :count + 1].tolist()
        text += accepted_tokens
        chunk = _finish(accepted_tokens, stats.generated_tokens, max_tokens, eos_ids)
        stats.steps += 1
        stats.accepted_histogram[count] += 1
        stats.lookup_steps += best == beam.width  # the lookup beam was accepted furthest
        stats.generated_tokens += len(chunk)
        stats.generation_time = time.perf_counter() - start
        yield chunk
        if stats.generated_tokens >= max_tokens or chunk[-1] in eos_ids:
            return
