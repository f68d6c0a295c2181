"""The drafter's training objective (the target LLM frozen).

For every position t with hidden state h_t, drafting step i (0-based, i < K) reads the
embeddings of tokens t+1 .. t+1+i through the RNN and predicts token t+2+i. The loss is
the sum over i (weighted, with step_decay < 1) of the cross-entropy averaged over valid
targets (answer tokens): against the token itself (hard), or, with distillation, blended
with the cross-entropy against the target's own next-token distribution at that position
(soft)."""

import mlx.core as mx
import mlx.nn as nn

from .distributed import total
from ..model.drafter import Drafter
from ..model.llm import Model
from ..decode.sampling import log_softmax


def target_features(model: Model, tokens: mx.array, taps: tuple = ()):
    """tokens (B, T) -> hidden (B, T, H) post-norm (with taps: features (B, T, H * (1 +
    len(taps))), Model.forward) and embeddings (B, T, H), both frozen, float32."""
    positions = mx.broadcast_to(mx.arange(tokens.shape[1])[None], tokens.shape)
    hidden = model(tokens, positions, model.new_cache(tokens.shape[0]), taps=taps)
    return mx.stop_gradient(hidden.astype(mx.float32)), mx.stop_gradient(model.embed(tokens).astype(mx.float32))


def target_next_log_probs(model: Model, hidden: mx.array) -> mx.array:
    """hidden (B, T, H) (or features) -> (B, T, V) float32: the target's log-probabilities of
    the token after each position."""
    return mx.stop_gradient(log_softmax(model.logits(hidden.astype(model.dtype))))


def target_next_probs(model: Model, hidden: mx.array, drafter: Drafter) -> mx.array:
    """hidden (B, T, H) (or features) -> (B, T, V') float32: the target's probabilities of the token after
    each position, over the drafter's vocabulary (V'); the mass on other tokens is dropped."""
    return mx.exp(drafter.from_full_vocab(target_next_log_probs(model, hidden)))


def step_logits(drafter: Drafter, hidden: mx.array, embeddings: mx.array, steps: int):
    """Yields (i, logits (B, T-2-i, V)) for each drafting step i < steps."""
    length = hidden.shape[1]
    state = mx.zeros_like(embeddings[:, :length - 1])
    for i in range(steps):
        if length - 2 - i <= 0:
            return
        state = drafter.next_state(state[:, :length - 1 - i], embeddings[:, 1 + i:])
        yield i, drafter(hidden[:, :length - 2 - i], state[:, :length - 2 - i])


def drafter_loss(drafter: Drafter, hidden, embeddings, tokens, loss_mask, steps: int,
                 next_probs: mx.array = None, distill: float = 0.0, group: mx.distributed.Group = None,
                 step_decay: float = 1.0):
    """Returns (total loss, per-step losses (K,), per-step top-1 accuracies (K,), per-step counts (K,)).

    The total weighs step i's loss by step_decay ** i, rescaled so that the weights sum to K
    (1: the plain sum): a draft is only accepted after the drafts before it, so the early
    steps count for more tokens per step.

    A drafter with a reduced vocabulary is trained on a softmax over its own tokens: targets
    it does not score are left out of the hard loss and count as misses in the accuracy.
    next_probs (B, T, V'), from `target_next_probs`: the soft targets; each step's loss is then
    (1 - distill) * hard + distill * soft.
    group: the processes that each hold some rows of the batch (distributed.rows_of); the
    counts are then those of the whole batch, and each process's losses and accuracies are
    scaled so that their means over the group (and so that of the gradients) are the batch's."""
    hard, soft, correct, counts = [], [], [], []
    positions = drafter.index_of(tokens)  # (B, T): each token's index in the drafter's logits, or -1
    for i, logits in step_logits(drafter, hidden, embeddings, steps):
        targets, mask = positions[:, 2 + i:], loss_mask[:, 2 + i:]
        scored = (mask & (targets >= 0)).astype(mx.float32)
        mask = mask.astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, mx.maximum(targets, 0), reduction="none")
        hard.append((ce * scored).sum())
        if next_probs is not None:
            soft_targets = next_probs[:, 1 + i:1 + i + logits.shape[1]]  # the target's view of token t+2+i
            soft.append((-(soft_targets * log_softmax(logits)).sum(-1) * mask).sum())
        correct.append(((logits.argmax(-1) == targets) * mask).sum())
        counts.append(mx.stack([scored.sum(), mask.sum()]))
    counts = mx.stack(counts)  # (K, 2): the scored targets and the answer targets of each step
    if group is not None:
        counts = total(counts, group)
    size = 1 if group is None else group.size()
    scored_count, count = mx.maximum(counts[:, 0], 1) / size, mx.maximum(counts[:, 1], 1) / size
    losses = mx.stack(hard) / scored_count
    if next_probs is not None:
        losses = (1 - distill) * losses + distill * mx.stack(soft) / count
    weights = step_decay ** mx.arange(len(hard), dtype=mx.float32)
    weights = weights * (len(hard) / weights.sum())
    return (weights * losses).sum(), losses, mx.stack(correct) / count, counts[:, 1]
