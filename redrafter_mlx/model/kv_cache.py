"""Pre-allocated KV cache that grows in chunks and commits an accepted tree path.

With `fixed_shapes` (DecodePolicy, GPUs) attention reads the whole allocated capacity,
with a mask that hides what is not committed or new: key lengths then change only when
the cache grows (every `step` slots), so GPU kernels specialised on shapes are not
rebuilt at every decoding step. There, rejected tree entries also stay where they were
written, hidden by the mask, until the cache is full and is compacted: moving the
accepted entries at every step costs 4 small kernels per layer, which dominate a step of a
small model on a GPU. On CPUs attention reads only the slots in use plus the new tokens
(13% faster decoding for the default model) and accepted entries are moved at once.
Single-token steps without a mask (auto-regressive decoding) always read exactly the
slots in use plus one: the fused one-query attention kernel handles any key length.
"""

from typing import List, Protocol, Tuple

import mlx.core as mx
import numpy as np


class Cache(Protocol):
    """What a model's layers need of a cache: write the new keys/values, read the keys in view."""

    def update(self, layer: int, keys: mx.array, values: mx.array, view: int) -> Tuple[mx.array, mx.array]:
        """Writes keys/values (B, kv_heads, T, head_dim) of layer `layer` after the slots in
        use; returns its first `view` slots of keys and values (B, kv_heads, view, head_dim)."""


def grown(arrays: list, extra: int, shape: tuple, dtype) -> list:
    """Per-layer arrays (B, kv_heads, capacity, head_dim), or None before the first slots, with
    `extra` zero slots appended; shape (B, kv_heads, _, head_dim) and dtype make the slots. A
    new array for each: keys and values must not alias."""
    slots = (shape[0], shape[1], extra, shape[3])
    return [mx.zeros(slots, dtype) if old is None else mx.concatenate([old, mx.zeros(slots, dtype)], axis=2)
            for old in arrays]


class KVCache:
    """Per-layer keys/values (B, kv_heads, capacity, head_dim) in slots; the sequence's
    `length` tokens sit in the first `end` slots (end > length only with fixed_shapes,
    where `kept` marks which slots hold sequence tokens).

    A forward writes its T new tokens at slots [end, end + T) without moving anything:
    auto-regressive steps then call `advance(T)`; a tree verification calls
    `commit(kept, written)` with the offsets of the accepted path."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, dtype, step: int = 256,
                 fixed_shapes: bool = False):
        self.shape = (batch, kv_heads, 0, head_dim)
        self.dtype = dtype
        self.keys = [None] * num_layers
        self.values = [None] * num_layers
        self.length = 0  # tokens in the sequence: the next token's position
        self.end = 0  # slots in use
        self.kept = np.zeros(0, dtype=bool)  # (capacity,) slot holds a sequence token
        self.capacity = 0
        self.step = step
        self.fixed_shapes = fixed_shapes

    @property
    def contiguous(self) -> bool:
        """The sequence fills slots [0, length) with nothing rejected in between."""
        return self.end == self.length

    def key_length(self, count: int) -> int:
        """How many keys attention reads for `count` new tokens."""
        return self.capacity if self.fixed_shapes else self.end + count

    def reserve(self, count: int):
        """Makes room for `count` more slots: compacts rejected entries away first, then grows
        every layer (in chunks of `step`)."""
        if self.end + count > self.capacity and not self.contiguous:
            self._compact()
        needed = self.end + count
        if needed <= self.capacity:
            return
        new_capacity = ((needed + self.step - 1) // self.step) * self.step
        self.keys = grown(self.keys, new_capacity - self.capacity, self.shape, self.dtype)
        self.values = grown(self.values, new_capacity - self.capacity, self.shape, self.dtype)
        self.kept = np.concatenate([self.kept, np.zeros(new_capacity - self.capacity, dtype=bool)])
        self.capacity = new_capacity

    def _move(self, source: np.ndarray, destination: int):
        """Copies the slots `source` (increasing, >= their destinations) to [destination, destination + n)."""
        source_slots = mx.array(source)
        for layer in range(len(self.keys)):
            for store in (self.keys, self.values):
                moved = store[layer][:, :, source_slots, :]
                store[layer][:, :, destination:destination + len(source), :] = moved

    def _compact(self):
        self._move(np.flatnonzero(self.kept[:self.end]), 0)
        self.kept[:] = False
        self.kept[:self.length] = True
        self.end = self.length

    def update(self, layer: int, keys: mx.array, values: mx.array, view: int):
        """Writes keys/values (B, kv_heads, T, head_dim) at slots [end, end + T); returns the
        first `view` slots of keys and values (B, kv_heads, view, head_dim)."""
        stop = self.end + keys.shape[2]
        self.keys[layer][:, :, self.end:stop, :] = keys
        self.values[layer][:, :, self.end:stop, :] = values
        return self.keys[layer][:, :, :view, :], self.values[layer][:, :, :view, :]

    def mask(self, block: mx.array, key_valid: mx.array = None) -> mx.array:
        """Attention mask (B or 1, 1, T, key_length(T)) bool for T new tokens.

        block (T, T) or (B, T, T): which new tokens each new token sees; every token sees
        the sequence's slots (except keys where key_valid (B, capacity) is False), and
        nothing past end + T."""
        count = block.shape[-1]
        lead = block.shape[:-2]
        view = self.key_length(count)
        if self.contiguous:
            before = mx.ones((*lead, count, self.end), dtype=mx.bool_)
        else:
            before = mx.broadcast_to(mx.array(self.kept[:self.end]), (*lead, count, self.end))
        after = mx.zeros((*lead, count, view - self.end - count), dtype=mx.bool_)
        full = mx.concatenate([before, block, after], axis=-1)
        if key_valid is not None:
            full = full & key_valid[:, None, :view]
        return full[:, None] if full.ndim == 3 else full[None, None]

    def advance(self, count: int):
        """Keeps the `count` tokens just written as the sequence's next tokens."""
        self.kept[self.end:self.end + count] = True
        self.end += count
        self.length += count

    def commit(self, kept: np.ndarray, written: int):
        """After a forward that wrote `written` tokens, keeps those at offsets `kept` (n,
        increasing host ints) as the sequence's next n tokens and drops the others."""
        count = len(kept)
        if np.array_equal(kept, np.arange(count)):  # already in place: one beam, or the first
            return self.advance(count)
        if self.fixed_shapes:  # leave them where they are; the mask hides the rest
            self.kept[self.end + kept] = True
            self.end += written
            self.length += count
            return
        self._move(self.end + kept, self.end)
        self.advance(count)

    def state(self):
        """The arrays to evaluate so that pending writes are materialised."""
        return [a for a in self.keys + self.values if a is not None]

    def arrays(self) -> Tuple[List[mx.array], List[mx.array]]:
        """The per-layer keys and values, for a step that writes them outside the cache (Slots)."""
        return self.keys, self.values

    def adopt(self, keys: List[mx.array], values: List[mx.array]):
        """Takes the per-layer arrays such a step returns (same shapes, new slots written) as the
        cache's own; the caller then advances or commits the slots written."""
        self.keys, self.values = list(keys), list(values)


class Slots:
    """A Cache over a KVCache's arrays inside one traced function (decode.steps): the
    new keys/values are written at a device-side slot offset, so that one compiled graph
    serves every step whatever the offset; `keys` and `values` hold the written arrays, which
    the KVCache then adopts.

    The rows are scattered to their slots (put_along_axis), not written as a slice at a
    device offset: on an H100 the slice costs ~8 us of host time and ~11 us in all per write,
    the scatter ~3 and ~6, and a step writes twice per layer (experiments.op_costs,
    docs/perf.md)."""

    def __init__(self, keys: list, values: list, offset: mx.array):
        self.keys, self.values, self.offset = list(keys), list(values), offset
        self.slots = None  # (B, kv_heads, T, head_dim): the slot of each new entry, made at the first write

    def update(self, layer: int, keys: mx.array, values: mx.array, view: int):
        """Writes keys/values (B, kv_heads, T, head_dim) at slots [offset, offset + T); returns
        the first `view` slots of keys and values (B, kv_heads, view, head_dim)."""
        if self.slots is None:
            rows = self.offset + mx.arange(keys.shape[2])
            self.slots = mx.broadcast_to(rows[None, None, :, None], keys.shape)
        self.keys[layer] = mx.put_along_axis(self.keys[layer], self.slots, keys, axis=2)
        self.values[layer] = mx.put_along_axis(self.values[layer], self.slots, values, axis=2)
        return self.keys[layer][:, :, :view, :], self.values[layer][:, :, :view, :]


class ResidentCache:
    """The cache of the device-resident ReDrafter loop (DecodePolicy.fixed_shapes): per-layer
    keys/values (1, kv_heads, capacity, head_dim) and, on the device, which slots hold
    sequence tokens (kept (capacity,)), the first free slot (end (1,)), the sequence length
    (length (1,)) and its tokens (text (capacity,), for the lookup beam). A step reads and
    writes all of them (decode.steps.resident_step); the host keeps only upper bounds of end
    and length, enough to compact or grow the cache before a step needs the room, so it
    never waits for a step to finish. The bounds are tight: the length is known up to the steps
    queued and not yet read (one, in the pipelined loop), so the cache grows only as the
    accepted text does (each new capacity compiles kernels on GPUs)."""

    def __init__(self, cache: KVCache, prompt: List[int]):
        """From a cache holding the prompt (prefilled)."""
        self.keys, self.values, self.capacity, self.step = list(cache.keys), list(cache.values), cache.capacity, cache.step
        self.shape, self.dtype = cache.shape, cache.dtype
        self.kept = mx.arange(self.capacity) < cache.length
        self.end, self.length = mx.array([cache.end]), mx.array([cache.length])
        self.text = mx.array(list(prompt) + [0] * (self.capacity - len(prompt)), dtype=mx.int32)
        self.end_bound = cache.end  # >= end
        self.length_read, self.unread = cache.length, 0  # the length as of the steps read; steps queued since

    def make_room(self, tree_size: int, beam_length: int):
        """Before a step that writes tree_size slots (after steps that add at most beam_length
        tokens each and have not been read): compacts the kept slots to the front when the
        step would not fit, then grows."""
        if self.end_bound + tree_size > self.capacity:
            self._compact(self.length_read + beam_length * self.unread)
        if self.end_bound + tree_size > self.capacity:
            self._grow(self.end_bound + tree_size)
        self.end_bound += tree_size
        self.unread += 1

    def read(self, tokens: int):
        """The host read a step's result: it added `tokens` to the sequence."""
        self.length_read += tokens
        self.unread -= 1

    def _compact(self, length_bound: int):
        """Moves the kept slots to the front; the sequence's length is at most length_bound."""
        slots = mx.arange(self.capacity)
        order = mx.argsort(mx.where(self.kept, slots, slots + self.capacity))  # kept slots first, in order
        self.keys = [k[:, :, order] for k in self.keys]
        self.values = [v[:, :, order] for v in self.values]
        self.kept = slots < self.length
        self.end = self.length
        self.end_bound = length_bound

    def _grow(self, needed: int):
        extra = -(-needed // self.step) * self.step - self.capacity
        self.keys = grown(self.keys, extra, self.shape, self.dtype)
        self.values = grown(self.values, extra, self.shape, self.dtype)
        self.kept = mx.concatenate([self.kept, mx.zeros((extra,), mx.bool_)])
        self.text = mx.concatenate([self.text, mx.zeros((extra,), mx.int32)])
        self.capacity += extra

    def state(self) -> tuple:
        """The arrays a step takes and returns: (keys, values, kept, end, length, text)."""
        return self.keys, self.values, self.kept, self.end, self.length, self.text

    def adopt(self, keys, values, kept, end, length, text):
        """Takes a step's returned state (same shapes) as the cache's own."""
        self.keys, self.values, self.kept, self.end, self.length, self.text = list(keys), list(values), kept, end, length, text
