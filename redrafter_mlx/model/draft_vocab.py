"""Reduced draft vocabulary: the drafter scores only the K most frequent tokens.

The vocab projection is the drafter's largest cost (SmolLM2: 576 x 49,152 weights read
per draft step). Restricting it to K frequent tokens reads K rows instead; drafts can then
only propose those tokens, which costs a little acceptance and never correctness (the
target verifies every token; sampled drafts have q = 0 outside the K tokens).
The token list lives in the drafter directory as draft_vocab.json, most frequent first.
"""

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .config import ConfigError, is_int
from ..errors import UsageError, read_json

FILE = "draft_vocab.json"


def read_ranked(drafter_dir, vocab_size: int = None) -> list:
    """drafter_dir/draft_vocab.json's token ids, most frequent first (checked: a non-empty
    list of ids in 0..vocab_size-1)."""
    path = Path(drafter_dir) / FILE
    if not path.is_file():
        raise UsageError(f"{path}: no token frequency list for --draft-vocab")
    raw = read_json(path, ConfigError)
    if not isinstance(raw, dict) or "token_ids" not in raw:
        raise ConfigError(f"{path}: must hold a JSON object with token_ids (a list of token ids)")
    ids = raw["token_ids"]
    if not isinstance(ids, list) or not ids:
        raise ConfigError(f"{path}: token_ids must be a non-empty list of token ids, got {ids!r:.50}")
    limit = vocab_size or float("inf")
    for position, token in enumerate(ids):
        if not (is_int(token) and 0 <= token < limit):
            within = f" in 0..{vocab_size - 1}" if vocab_size else " >= 0"
            raise ConfigError(f"{path}: token_ids[{position}] must be a token id{within}, got {token!r}")
    return ids


def read_token_ids(drafter_dir, size: int, always=(), vocab_size: int = None) -> mx.array:
    """The `size` most frequent token ids from drafter_dir/draft_vocab.json, plus `always` (EOS);
    a head of `size` rows: the tokens of its rows where the file records them (ROWS: they were
    chosen with the EOS ids of the model it was trained on, which another form of that model
    may list otherwise)."""
    rows = read_rows(drafter_dir, size, vocab_size)
    return rows if rows is not None else choose_token_ids(read_ranked(drafter_dir, vocab_size), size, always)


ROWS = "rows"  # draft_vocab.json's key for the token ids of an own head's rows, sorted


def read_rows(drafter_dir, size: int, vocab_size: int = None):
    """(size,) the sorted token ids that draft_vocab.json records for a head of `size` rows
    (load_drafter refuses other sizes for such a head), or None where it records none
    (drafters saved before it did)."""
    path = Path(drafter_dir) / FILE
    raw = read_json(path, ConfigError) if path.is_file() else {}
    rows = raw.get(ROWS) if isinstance(raw, dict) else None
    if rows is None:
        return None
    limit = vocab_size or float("inf")
    if not (isinstance(rows, list) and all(is_int(t) and 0 <= t < limit for t in rows) and rows == sorted(set(rows))
            and len(rows) == size):
        raise ConfigError(f"{path}: {ROWS} must be a sorted list of {size} distinct token ids, got {rows!r:.50}")
    return mx.array(rows, dtype=mx.int32)


def choose_token_ids(ranked: list, size: int, always=()) -> mx.array:
    """The first `size` of `always` then `ranked` (token ids, most frequent first), sorted (K,)."""
    if not 0 < size <= len(ranked):
        raise UsageError(f"--draft-vocab must be in 1..{len(ranked)}, got {size}")
    chosen = list(dict.fromkeys([*always, *ranked]))[:size]
    return mx.array(sorted(chosen), dtype=mx.int32)


class SubsetHead(nn.Module):
    """The rows `token_ids` of a vocab projection (Linear, Embedding or their quantized forms)."""

    def __init__(self, layer: nn.Module, token_ids: mx.array):
        super().__init__()
        self.weight = layer.weight[token_ids]
        self.quantized = hasattr(layer, "scales")
        if self.quantized:
            self.scales = layer.scales[token_ids]
            self.biases = layer.biases[token_ids]
            self.group_size, self.bits, self.mode = layer.group_size, layer.bits, layer.mode
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        """x (..., dim) -> logits (..., K) float32 over token_ids."""
        if self.quantized:
            out = mx.quantized_matmul(x, self.weight, self.scales, self.biases, transpose=True,
                                      group_size=self.group_size, bits=self.bits, mode=self.mode)
        else:
            out = x @ self.weight.T
        return out.astype(mx.float32)
