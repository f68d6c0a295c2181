"""The prompt through the model, in chunks."""

from typing import Callable, List

import mlx.core as mx

from ..model.kv_cache import KVCache
from ..model.llm import Model

PREFILL_CHUNK = 512


def prefill(model: Model, cache: KVCache, prompt: List[int], *, bucket: int = 1, taps: tuple = (),
            progress: Callable[[int, int], None] = None, chunk_size: int = None) -> mx.array:
    """Runs the prompt through the model in chunks; returns the last hidden state (1, dim),
    or with taps the last features (1, dim * (1 + len(taps))), Model.forward.

    bucket: pad each chunk at its end to a multiple of this many tokens (DecodePolicy: on a
    GPU every new prompt length compiles kernels, ~80 ms for a length seen first, ~10 ms
    again; padded chunks come in a few lengths). Causal attention keeps the padding out of
    the prompt's states, and the cache commits only the prompt (the padding's slots are
    written over).

    progress(done, total): called after each chunk with the prompt tokens processed so far;
    an exception it raises stops the prefill (a server cancels a request this way). chunk_size:
    prompt tokens per chunk (DecodePolicy.prefill_chunk; None: PREFILL_CHUNK; smaller: progress
    called more often)."""
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
