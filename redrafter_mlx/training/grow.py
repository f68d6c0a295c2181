"""Growing a trained drafter (`fit --init DIR --grow`): more ResBlocks and more target layers
read, every added weight starting at zero, so that the grown drafter drafts exactly as the
one it grew from until training moves the new weights.

- An added ResBlock x + silu(W x + b) with W = 0, b = 0 is the identity (silu(0) = 0).
- An added context layer widens input_proj by a block of zero columns for its features; a
  drafter without input_proj (Apple's layout, exit_dim = context + hidden) gets one that passes
  its old inputs through (identity blocks, zero columns for the new features).
"""

from typing import Sequence

import mlx.core as mx

from ..errors import UsageError
from ..model.config import DrafterConfig
from ..model.drafter import Drafter


def check_growth(init: DrafterConfig, layers: int):
    """UsageError unless `layers` only adds ResBlocks to the init drafter's (context layers always
    add: the grown drafter reads the union)."""
    if layers < init.num_draft_layers:
        raise UsageError(f"--grow adds ResBlocks: --layers {layers} is fewer than the --init drafter's "
                         f"{init.num_draft_layers}")


def grown_config(init: DrafterConfig, layers: int, context_layers: Sequence[int]) -> DrafterConfig:
    """The init drafter's config with `layers` ResBlocks and the union of both context layers."""
    raw = init.to_dict()
    raw.update(num_draft_layers=layers, context_layers=sorted(set(init.context_layers) | set(context_layers)))
    return DrafterConfig.from_dict(raw)


def input_columns(config: DrafterConfig, layers: Sequence[int]) -> list:
    """The input columns of config's input_proj that hold, in order, the last hidden state, the
    features of each of `layers` (a subset of config.context_layers) and the RNN state."""
    dim = config.hidden_size
    blocks = [0] + [1 + config.context_layers.index(i) for i in layers] + [1 + len(config.context_layers)]
    return [block * dim + j for block in blocks for j in range(dim)]


def grown_input_proj(old: Drafter, new_config: DrafterConfig):
    """(weight (exit_dim, new inputs), bias (exit_dim,)): old's input map on the old inputs, zero on the new."""
    config = old.config
    if "input_proj" in old:
        weight, bias = old.input_proj.weight, old.input_proj.bias
    else:  # Apple's layout: the inputs themselves
        weight, bias = mx.eye(config.exit_dim), mx.zeros((config.exit_dim,))
    columns = mx.array(input_columns(new_config, config.context_layers))
    width = new_config.context_size + new_config.hidden_size
    grown = mx.zeros((config.exit_dim, width), dtype=weight.dtype)
    grown[:, columns] = weight
    return grown, bias.astype(weight.dtype)


def grow(old: Drafter, model, *, layers: int, context_layers: Sequence[int]) -> Drafter:
    """A drafter with `layers` ResBlocks reading the union of old's and `context_layers`, whose
    logits equal old's on every input; old must be dense (no quantized layer)."""
    check_growth(old.config, layers)
    config = grown_config(old.config, layers, context_layers)
    new = Drafter(config)
    new.bind_target(model)
    kept = old.config.num_draft_layers
    for block in new.lm_head[kept:layers]:
        block.linear.weight = mx.zeros_like(block.linear.weight)
        block.linear.bias = mx.zeros_like(block.linear.bias)
    for i in range(kept):
        new.lm_head[i].update(old.lm_head[i].parameters())
    if config.head == "own":
        new.lm_head[-1].update(old.lm_head[-1].parameters())
    else:
        new.exit_norm.update(old.exit_norm.parameters())
    if config.rnn:
        new.rnn_u.update(old.rnn_u.parameters())
        new.rnn_w.update(old.rnn_w.parameters())
    if "input_proj" in new:
        new.input_proj.weight, new.input_proj.bias = grown_input_proj(old, config)
    if old.draft_tokens is not None:  # after the head's weights: a subset head copies its rows
        new.restrict_vocab(old.draft_tokens)
    return new
