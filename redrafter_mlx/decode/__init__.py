"""Decoding: the auto-regressive baseline and ReDrafter (draft, verify a tree, accept, commit).

  options.py         what a request asks for (DecodeOptions) and the one check of a request
  prefill.py         the prompt through the model in chunks
  strategy.py        greedy or sampled: how drafts are drawn and judged, chosen once
  beam_search.py     greedy drafts: beam search over the drafter
  sampled_drafts.py  sampled drafts (iid, rsd-c, rsd-s)
  acceptance.py      judging: greedy, and exact multi-draft rejection sampling
  sampling.py        the target distribution every sampler shares
  tree.py            trees packed on the host (CPUs)
  trees.py           trees at a fixed size on the device, and the lookup search there (GPUs)
  lookup.py          the lookup beam (prompt lookup), on the host
  steps.py           one step as a function of arrays, compiled where shapes are fixed
  ar.py              the auto-regressive loop
  redrafter.py       the ReDrafter loop
  stats.py           what a generation reports
"""

from .ar import generate_ar
from .options import LOOKUP_MIN_MATCH, MODES, SAMPLED_DRAFTS, DecodeOptions, check_request, max_tokens_in_window
from .prefill import PREFILL_CHUNK, prefill
from .redrafter import CACHE_STEP, generate_redrafter, tree_cache
from .steps import CompiledSteps, tree_inputs, verify

__all__ = ["CACHE_STEP", "LOOKUP_MIN_MATCH", "MODES", "PREFILL_CHUNK", "SAMPLED_DRAFTS", "CompiledSteps",
           "DecodeOptions", "check_request", "generate_ar", "generate_redrafter", "max_tokens_in_window", "prefill",
           "tree_cache", "tree_inputs", "verify"]
