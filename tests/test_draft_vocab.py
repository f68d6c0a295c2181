"""Reduced draft vocabulary: same logits on the kept tokens, greedy output still equals AR."""

import json

import mlx.core as mx
import mlx.nn as nn
import pytest

from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.model.load import LoadError, load_drafter
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir

KEPT = mx.array([1, 4, 5, 9, 11, 17, 23])


@pytest.mark.parametrize("head", ["target", "own"])
@pytest.mark.parametrize("quantized", [False, True])
def test_subset_logits_equal_full_logits_at_kept_tokens(head, quantized):
    model = tiny_model(4, vocab=24, hidden_size=64, intermediate_size=64)
    if quantized:
        nn.quantize(model, group_size=32, bits=8)
    drafter = tiny_drafter(model, 5, head=head)
    context, state = mx.random.normal((3, 64)), mx.random.normal((3, 64))
    full = drafter(context, state)
    drafter.restrict_vocab(KEPT)
    assert drafter.draft_vocab_size == 7
    assert mx.allclose(drafter(context, state), full[:, KEPT], atol=1e-4).item()
    assert drafter.token_of(mx.array([0, 6])).tolist() == [1, 23]
    spread = drafter.to_full_vocab(mx.arange(7).astype(mx.float32)[None], -1.0)
    assert spread[0, KEPT].tolist() == list(range(7)) and spread[0, 0].item() == -1.0


@pytest.mark.parametrize("head", ["target", "own"])
@pytest.mark.parametrize("width,length", [(1, 4), (3, 3)])
def test_greedy_parity_with_reduced_vocab(head, width, length):
    model = tiny_model(6, vocab=24)
    drafter = tiny_drafter(model, 7, head=head)
    prompt = [3, 1, 4, 1, 5]
    ar = sum(generate_ar(model, prompt, max_tokens=30), [])
    drafter.restrict_vocab(mx.array(sorted(set(ar[:6]) | {0, 2})))  # some of the AR tokens missing
    assert sum(generate_redrafter(model, drafter, prompt, max_tokens=30, beam=BeamShape(width, length)), []) == ar


def test_load_with_draft_vocab(tmp_path):
    model = tiny_model(6, vocab=24)
    path = write_drafter_dir(tmp_path / "drafter", tiny_drafter(model, 7, head="target"))
    with pytest.raises(LoadError, match="no token frequency list"):
        load_drafter(path, model, draft_vocab=8)
    (path / "draft_vocab.json").write_text(json.dumps({"token_ids": [5, 3, 9, 1, 2, 7, 8, 4, 6, 10]}))
    with pytest.raises(LoadError, match="--draft-vocab must be in 1..10"):
        load_drafter(path, model, draft_vocab=11)
    drafter = load_drafter(path, model, draft_vocab=4)
    eos = model.config.eos_ids
    assert drafter.draft_vocab_size == 4
    assert set(drafter.token_of(mx.arange(4)).tolist()) == set(list(dict.fromkeys([*eos, 5, 3, 9, 1]))[:4])
    assert load_drafter(path, model).draft_vocab_size == 24  # config default: all tokens


def test_drafter_computes_in_the_model_dtype(tmp_path):
    """A float16 drafter loaded for a float32 model is cast once at load, not at every draft step."""
    from mlx.utils import tree_flatten

    from helpers.tiny import cast

    model = tiny_model(6, vocab=24)
    path = write_drafter_dir(tmp_path / "drafter", cast(tiny_drafter(model, 7, head="own"), mx.float16))
    assert {p.dtype for _, p in tree_flatten(load_drafter(path, model).parameters())} == {mx.float32}
    assert {p.dtype for _, p in tree_flatten(load_drafter(path, model, mx.float16).parameters())} == {mx.float16}


def test_recorded_rows_are_read_as_they_are_and_checked(tmp_path):
    from redrafter_mlx.model.config import ConfigError
    from redrafter_mlx.model.draft_vocab import read_token_ids

    def write(rows):
        (tmp_path / "draft_vocab.json").write_text(json.dumps({"token_ids": [5, 6, 7, 8, 9], "rows": rows}))

    write([2, 6, 9])
    assert read_token_ids(tmp_path, 3, always=[1]).tolist() == [2, 6, 9]  # the rows, not EOS + the most frequent
    for bad in ([9, 6, 2], [2, 2, 9], [2, 6, 99], [2, 6], "2,6,9"):
        write(bad)
        with pytest.raises(ConfigError, match="rows must be a sorted list of 3 distinct token ids"):
            read_token_ids(tmp_path, 3, vocab_size=24)
    (tmp_path / "draft_vocab.json").write_text(json.dumps({"token_ids": [5, 6, 7, 8, 9]}))  # saved before rows were
    assert read_token_ids(tmp_path, 2, always=[1]).tolist() == [1, 5]
