"""Decoding: the auto-regressive baseline and ReDrafter (draft, verify a tree, accept, commit).

  options.py    what a request asks for (DecodeOptions) and the one check of a request
  prefill.py    the prompt through the model in chunks
  strategy.py   greedy or sampled: how drafts are drawn and judged, chosen once
  trees.py      draft trees at a fixed size on the device (and the lookup beam there)
  steps.py      one step as a function of arrays, compiled where shapes are fixed
  ar.py         the auto-regressive loop
  redrafter.py  the ReDrafter loop
"""

from .ar import generate_ar
from .options import LOOKUP_MIN_MATCH, MODES, SAMPLED_DRAFTS, DecodeOptions, check_request, max_tokens_in_window
from .prefill import PREFILL_CHUNK, prefill
from .redrafter import CACHE_STEP, generate_redrafter, tree_cache
from .steps import CompiledSteps, tree_inputs, verify

__all__ = ["CACHE_STEP", "LOOKUP_MIN_MATCH", "MODES", "PREFILL_CHUNK", "SAMPLED_DRAFTS", "CompiledSteps",
           "DecodeOptions", "check_request", "generate_ar", "generate_redrafter", "max_tokens_in_window", "prefill",
           "tree_cache", "tree_inputs", "verify"]
