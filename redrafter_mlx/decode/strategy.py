"""Greedy or sampled decoding, chosen once per request: how drafts are drawn and how they are judged.

Greedy: beam search over the drafter, and the longest run of drafts equal to the LLM's
argmax (output identical to greedy AR). Sampling: a tree of drafts sampled from the
drafter (sampled_drafts.py) and exact multi-draft rejection sampling (acceptance.py,
docs/sampling.md).
"""

from typing import Callable, NamedTuple

import mlx.core as mx

from .acceptance import Accepted, greedy_accept, speculative_accept
from .beam_search import Draft, beam_search
from ..model.drafter import Drafter
from ..model.llm import Model
from .sampled_drafts import sample_drafts
from .sampling import SamplingParams


class Strategy(NamedTuple):
    draft: Callable  # (drafter, embed, context (1, C), first_token (1,), BeamShape) -> Draft
    judge: Callable  # (model, drafter, hidden (T, dim), index (W, L), beams (W, L), Draft) -> Accepted


def choose_strategy(sampling: SamplingParams, sampled_drafts: str) -> Strategy:
    """The strategy for these sampling settings (sampled_drafts: sampled_drafts.METHODS)."""
    if sampling.greedy:
        return Strategy(beam_search, _greedy_judge)

    def draft(drafter, embed, context, first_token, beam):
        return sample_drafts(drafter, embed, context, first_token, beam.width, beam.length, sampling, sampled_drafts)

    def judge(model, drafter, hidden, index, beams, drafted):
        accepted = speculative_accept(beams[None], drafted.log_probs[None], model.logits(hidden)[None], index[None],
                                      sampling, draft_tokens=drafter.draft_tokens,
                                      draft_positions=drafted.positions[None],
                                      without_replacement=sampled_drafts != "iid")
        return Accepted(*(a[0] for a in accepted))

    return Strategy(draft, judge)


def _greedy_judge(model: Model, drafter: Drafter, hidden: mx.array, index: mx.array, beams: mx.array,
                  drafted: Draft) -> Accepted:
    """The LLM's argmax after each beam token (hidden (T, dim) at the tree tokens, index
    (W, L) each beam token's row there) against the beams (W, L)."""
    return greedy_accept(beams, mx.argmax(model.logits(hidden), axis=-1)[index])
