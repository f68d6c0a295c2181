"""Reduced draft vocabulary: the drafter scores only the K most frequent tokens.

The vocab projection is the drafter's largest cost (SmolLM2: 576 x 49,152 weights read
per draft step). Restricting it to K frequent tokens reads K rows instead; drafts can then
only propose those tokens, which costs a little acceptance and never correctness (the
target verifies every token; sampled drafts have q = 0 outside the K tokens).
The token list lives in the drafter directory as draft_vocab.json, most frequent first.
"""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .errors import UsageError

FILE = "draft_vocab.json"


def read_ranked(drafter_dir) -> list:
    """drafter_dir/draft_vocab.json's token ids, most frequent first."""
    path = Path(drafter_dir) / FILE
    if not path.is_file():
        raise UsageError(f"{path}: no token frequency list for --draft-vocab")
    return json.loads(path.read_text())["token_ids"]


def read_token_ids(drafter_dir, size: int, always=()) -> mx.array:
    """The `size` most frequent token ids from drafter_dir/draft_vocab.json, plus `always` (EOS)."""
    return choose_token_ids(read_ranked(drafter_dir), size, always)


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
