"""Committing an accepted tree path gives the cache that AR would have built."""

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode import prefill, tree_inputs, verify
from redrafter_mlx.model.kv_cache import KVCache
from redrafter_mlx.decode.tree import build_tree
from helpers.tiny import tiny_model


@pytest.mark.parametrize("fixed_shapes", [False, True])
@pytest.mark.parametrize("beam,count", [(0, 0), (1, 2), (3, 3), (2, 1)])
def test_commit_equals_ar_cache(beam, count, fixed_shapes):
    """The kept slots hold AR's keys/values, and the next forward sees what AR's would."""
    model = tiny_model(0, "qwen2", vocab=5)
    prompt = [1, 2, 3, 4, 0, 1]
    beams = np.array([[2, 1, 1, 0], [2, 1, 3, 3], [2, 0, 4, 4], [2, 3, 1, 2]])
    cache = model.new_cache()
    cache.fixed_shapes = fixed_shapes
    cache.step = 8  # small chunks: the tree write crosses a growth boundary
    prefill(model, cache, prompt)
    tree = build_tree(beams)
    inputs = tree_inputs(cache, tree, len(tree.tokens))
    _, cache.keys, cache.values = verify(model, *inputs, cache.keys, cache.values)
    cache.commit(tree.index[beam, :count + 1], len(tree.tokens))
    moved_in_place = fixed_shapes and beam > 0
    assert cache.contiguous != moved_in_place

    reference = model.new_cache()
    prefill(model, reference, prompt + beams[beam, :count + 1].tolist())
    assert cache.length == reference.length
    slots = mx.array(np.flatnonzero(cache.kept[:cache.end]))
    for ours, theirs in zip(cache.keys + cache.values, reference.keys + reference.values):
        np.testing.assert_allclose(np.array(ours[:, :, slots]), np.array(theirs[:, :, :cache.length]), atol=1e-5)
    following = (mx.array([[3, 2]]), mx.array([[cache.length, cache.length + 1]]))
    np.testing.assert_allclose(np.array(model(*following, cache)), np.array(model(*following, reference)),
                               atol=1e-5)


def test_compaction_keeps_the_sequence():
    """Rejected entries left in place are dropped when the cache is full; kept ones keep their order."""
    cache = KVCache(num_layers=1, batch=1, kv_heads=1, head_dim=1, dtype=mx.float32, step=8, fixed_shapes=True)
    for start in (0, 4):  # two trees of 4 slots, keeping offsets 0, 2 then 1, 3
        cache.reserve(4)
        written = mx.arange(start, start + 4).reshape(1, 1, 4, 1).astype(mx.float32)
        cache.update(0, written, -written, view=cache.capacity)
        cache.commit(np.array([0, 2]) + start // 4, 4)
    assert (cache.end, cache.length, cache.capacity) == (8, 4, 8)
    cache.reserve(3)  # 8 + 3 > 8: compacted instead of grown
    assert (cache.end, cache.length, cache.capacity) == (4, 4, 8) and cache.contiguous
    assert cache.keys[0][0, 0, :4, 0].tolist() == [0, 2, 5, 7]
    assert cache.values[0][0, 0, :4, 0].tolist() == [0, -2, -5, -7]


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


@pytest.mark.parametrize("fixed_shapes", [False, True])
@pytest.mark.parametrize("length", [5, 8, 13])
def test_padded_prefill_equals_unpadded(length, fixed_shapes):
    """Prompt chunks padded to a bucket (as on GPUs) leave the last state, the cache and the
    following steps as without padding; also across chunks."""
    model = tiny_model(0, "llama", vocab=11)
    prompt = np.random.default_rng(length).integers(0, 11, size=length).tolist()
    caches, states = [], []
    for bucket in (1, 4):
        cache = model.new_cache()
        cache.fixed_shapes = fixed_shapes
        cache.step = 8
        states.append(np.array(prefill(model, cache, prompt, bucket=bucket, chunk_size=6)))  # across chunks
        caches.append(cache)
    np.testing.assert_allclose(states[1], states[0], atol=1e-5)
    assert caches[1].length == caches[0].length == caches[1].end == length
    for ours, theirs in zip(caches[1].keys + caches[1].values, caches[0].keys + caches[0].values):
        np.testing.assert_allclose(np.array(ours[:, :, :length]), np.array(theirs[:, :, :length]), atol=1e-5)
    following = (mx.array([[3, 2]]), mx.array([[length, length + 1]]))
    np.testing.assert_allclose(np.array(model(*following, caches[1])), np.array(model(*following, caches[0])),
                               atol=1e-5)
