"""Committing an accepted tree path gives the cache that AR would have built."""

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode import prefill, verify
from redrafter_mlx.kv_cache import KVCache
from redrafter_mlx.tree import build_tree
from tiny import tiny_model


@pytest.mark.parametrize("fixed_shapes", [False, True])
@pytest.mark.parametrize("beam,count", [(0, 0), (1, 2), (3, 3), (2, 1)])
def test_commit_equals_ar_cache(beam, count, fixed_shapes):
    model = tiny_model(0, "qwen2", vocab=5)
    prompt = [1, 2, 3, 4, 0, 1]
    beams = np.array([[2, 1, 1, 0], [2, 1, 3, 3], [2, 0, 4, 4], [2, 3, 1, 2]])
    cache = model.new_cache()
    cache.fixed_shapes = fixed_shapes
    cache.step = 8  # small chunks: the tree write crosses a growth boundary
    prefill(model, cache, prompt)
    tree = build_tree(beams)
    verify(model, cache, tree)
    cache.commit(mx.array(tree.index[beam]))
    cache.advance(count + 1)

    reference = model.new_cache()
    prefill(model, reference, prompt + beams[beam, :count + 1].tolist())
    assert cache.length == reference.length
    for ours, theirs in zip(cache.keys + cache.values, reference.keys + reference.values):
        np.testing.assert_allclose(np.array(ours[:, :, :cache.length]), np.array(theirs[:, :, :cache.length]),
                                   atol=1e-5)


def test_growth_keeps_contents():
    cache = KVCache(num_layers=1, batch=1, kv_heads=2, head_dim=3, dtype=mx.float32, step=4, fixed_shapes=True)
    first = mx.arange(2 * 3 * 3).reshape(1, 2, 3, 3).astype(mx.float32)
    cache.reserve(3)
    cache.update(0, first, first, view=3)
    cache.advance(3)
    second = -mx.ones((1, 2, 5, 3))
    cache.reserve(5)
    keys, values = cache.update(0, second, second, view=cache.key_length(5))
    cache.advance(5)
    assert cache.capacity == 8 and keys.shape == (1, 2, 8, 3)
    np.testing.assert_array_equal(np.array(keys[:, :, :3]), np.array(first))
    np.testing.assert_array_equal(np.array(values[:, :, 3:]), np.array(second))
