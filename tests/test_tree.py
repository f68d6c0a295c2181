"""Dynamic tree attention: packing, mask, positions, and equality with uncompressed verification."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from redrafter_mlx.decode.acceptance import greedy_accept
from redrafter_mlx.decode import prefill, tree_inputs, verify
from redrafter_mlx.decode.beam_search import ABSENT
from redrafter_mlx.decode.trees import node_rows, packed_tree
from redrafter_mlx.decode.tree import build_tree
from helpers.tiny import tiny_model


def test_hand_made_beams():
    beams = np.array([[5, 1, 2], [5, 1, 3], [5, 4, 2], [5, 1, 2]])
    tree = build_tree(beams)
    assert tree.tokens.tolist() == [5, 1, 2, 3, 4, 2]
    assert tree.depths.tolist() == [0, 1, 2, 2, 1, 2]
    assert tree.index.tolist() == [[0, 1, 2], [0, 1, 3], [0, 4, 5], [0, 1, 2]]
    visible = [{0}, {0, 1}, {0, 1, 2}, {0, 1, 3}, {0, 4}, {0, 4, 5}]
    expected = np.zeros((6, 6), dtype=bool)
    for row, cols in enumerate(visible):
        expected[row, sorted(cols)] = True
    np.testing.assert_array_equal(tree.mask, expected)


def test_no_sharing_but_first_token():
    beams = np.array([[7, 1, 2, 3], [7, 2, 2, 3]])
    tree = build_tree(beams)
    assert len(tree.tokens) == 7
    assert tree.index.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6]]


@pytest.mark.parametrize("seed", range(20))
def test_count_equals_distinct_prefixes(seed):
    rng = np.random.default_rng(seed)
    width, length = rng.integers(1, 9), rng.integers(1, 7)
    beams = rng.integers(0, 3, size=(width, length))
    beams[:, 0] = 1
    tree = build_tree(beams)
    prefixes = {tuple(beams[w, :d + 1]) for w in range(width) for d in range(length)}
    assert len(tree.tokens) == len(prefixes)
    for w in range(width):  # each beam's path spells the beam and only sees its ancestors
        path = tree.index[w]
        assert (np.diff(path) > 0).all()
        np.testing.assert_array_equal(tree.tokens[path], beams[w])
        np.testing.assert_array_equal(tree.depths[path], np.arange(length))
        for d in range(length):
            assert set(np.nonzero(tree.mask[path[d]])[0]) == set(path[:d + 1])


def uncompressed_logits(model, prompt, beams):
    """Verifies each beam alone, causally, after the prompt: (W, L, V)."""
    out = []
    for beam in beams:
        cache = model.new_cache()
        prefill(model, cache, prompt)
        positions = mx.arange(len(prompt), len(prompt) + len(beam))[None]
        out.append(model.logits(model(mx.array(beam)[None], positions, cache)[0]))
    return mx.stack(out)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("seed", range(3))
def test_tree_verify_equals_uncompressed(kind, seed):
    model = tiny_model(seed, kind, vocab=6)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, 6, size=5 + 10 * seed).tolist()
    beams = rng.integers(0, 3, size=(6, 5))
    beams[:, 0] = 2
    tree = build_tree(beams)
    assert len(tree.tokens) < beams.size  # the random beams do share prefixes
    cache = model.new_cache()
    prefill(model, cache, prompt)
    hidden, _, _ = verify(model, *tree_inputs(cache, tree, len(tree.tokens)), cache.keys, cache.values)
    packed = model.logits(hidden)
    tree_logits = packed[mx.array(tree.index)]
    reference = uncompressed_logits(model, prompt, beams)
    np.testing.assert_allclose(np.array(tree_logits), np.array(reference), atol=1e-4, rtol=1e-4)
    ours = greedy_accept(mx.array(beams), mx.argmax(tree_logits, axis=-1))
    theirs = greedy_accept(mx.array(beams), mx.argmax(reference, axis=-1))
    assert [a.item() for a in ours] == [a.item() for a in theirs]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 7), st.integers(2, 5), st.integers(0, 6), st.integers(2, 4), st.booleans(),
       st.integers(0, 2 ** 31 - 1))
def test_device_packing_is_the_host_packing(beams, length, spare, tokens_drawn, node_paths, seed):
    """The resident step's tree (decode.trees.packed_tree) holds what the host packs
    (tree.build_tree): the same tokens, depths, masks and index, ABSENT tokens (paths to
    best nodes, cut at random depths) left out (index 0), and rows past the tree see only
    themselves."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, tokens_drawn, (beams, length))  # few distinct tokens: beams share prefixes
    tokens[:, 0] = 7
    if node_paths:
        tokens[np.arange(length) > rng.integers(1, length, (beams, 1))] = ABSENT
    host = build_tree(tokens)
    count = len(host.tokens)
    size = count + spare
    ours = packed_tree(mx.array(tokens), size)
    assert count == node_rows(mx.array(tokens))[1].item()
    assert (np.array(ours.tokens)[:count] == host.tokens).all()
    assert (np.array(ours.depths)[:count] == host.depths).all()
    assert (np.array(ours.index) == host.index).all() and (np.array(ours.present) == host.present).all()
    block = np.array(ours.block)
    assert (block[:count, :count] == host.mask).all() and not block[:count, count:].any()
    assert (block[count:] == np.eye(size, dtype=bool)[count:]).all()
    for w, d in zip(*np.nonzero(host.present)):  # a token in the tree has its prefix in it
        assert host.present[w, :d].all()
