"""Dynamic tree attention: packing, mask, positions, and equality with uncompressed verification."""

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.decode.acceptance import greedy_accept
from redrafter_mlx.decode import prefill, tree_inputs, verify
from redrafter_mlx.decode.trees import tree_layout, tree_tokens
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


@pytest.mark.parametrize("beams,length", [(1, 2), (1, 5), (3, 4), (6, 3)])
def test_fixed_layout_rows_see_exactly_their_beam_prefix(beams, length):
    """The resident step's layout (decode.trees): every beam token's row holds that token, and
    a row sees exactly the rows of its beam's tokens up to its own depth (row 0, the shared
    first token, for every beam)."""
    rng = np.random.default_rng(beams * 10 + length)
    tokens = rng.integers(0, 50, (beams, length))
    tokens[:, 0] = 7
    layout = tree_layout(beams, length)
    index, block, depths = np.array(layout.index), np.array(layout.block), np.array(layout.depths)
    rows = np.array(tree_tokens(mx.array(tokens)))
    assert len(rows) == 1 + beams * (length - 1) == block.shape[0]
    assert (rows[index] == tokens).all() and (depths[index] == np.arange(length)).all()
    for w in range(beams):
        for d in range(length):
            seen = set(np.flatnonzero(block[index[w, d]]))
            assert seen == set(index[w, :d + 1].tolist()), (w, d)
