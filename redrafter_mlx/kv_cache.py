"""Pre-allocated KV cache that grows in chunks and commits an accepted tree path in place."""

import mlx.core as mx


class KVCache:
    """Per-layer keys/values (B, kv_heads, capacity, head_dim); `length` tokens are committed.

    A forward writes its new tokens at [length, length + T) without moving `length`:
    auto-regressive steps then call `advance(T)`; a tree verification calls
    `commit(path)` to move the accepted path's entries to the front of that region and,
    once the accepted count is known on the host, `advance(count)`.
    """

    def __init__(self, num_layers: int, step: int = 256):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers
        self.length = 0
        self.step = step

    @property
    def capacity(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def _grow(self, layer: int, like: mx.array, needed: int):
        batch, heads, _, dim = like.shape
        new_capacity = ((needed + self.step - 1) // self.step) * self.step
        old_k, old_v = self.keys[layer], self.values[layer]
        extra = new_capacity - (0 if old_k is None else old_k.shape[2])

        def grown(old):  # a new array each time: keys and values must not alias
            pad = mx.zeros((batch, heads, extra, dim), like.dtype)
            return pad if old is None else mx.concatenate([old, pad], axis=2)

        self.keys[layer], self.values[layer] = grown(old_k), grown(old_v)

    def update(self, layer: int, keys: mx.array, values: mx.array):
        """Writes keys/values (B, kv_heads, T, head_dim) after the committed prefix.

        Returns views of all keys/values up to length + T."""
        end = self.length + keys.shape[2]
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self._grow(layer, keys, end)
        self.keys[layer][:, :, self.length:end, :] = keys
        self.values[layer][:, :, self.length:end, :] = values
        return self.keys[layer][:, :, :end, :], self.values[layer][:, :, :end, :]

    def advance(self, count: int):
        """Marks `count` more written tokens as committed."""
        self.length += count

    def commit(self, path: mx.array):
        """Moves the entries at length + path (path: (n,) int, increasing) to [length, length + n).

        Only n entries per layer move; `advance` sets how many of them count."""
        n = path.shape[0]
        source = self.length + path
        for layer in range(len(self.keys)):
            for store in (self.keys, self.values):
                moved = store[layer][:, :, source, :]
                store[layer][:, :, self.length:self.length + n, :] = moved

    def state(self):
        """The arrays to evaluate so that pending writes are materialised."""
        return [a for a in self.keys + self.values if a is not None]
