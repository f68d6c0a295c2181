"""The ReDrafter loop: draft, verify the tree in one forward, accept, commit, repeat.

Two ways to run a step, chosen once by the policy:
- resident (fixed shapes: GPUs): the tree is packed, verified, judged and committed on
  the device (trees.py, steps.resident_step); step n + 1 is queued before the host reads
  step n's accepted tokens, so the device never waits for the host. The loop stops one
  step late at EOS or max_tokens and emits nothing of the extra step.
- packed (CPUs): the host reads the beams, packs their shared prefixes into one tree
  (tree.py) and commits the accepted path (CPUs pay for every verified token and build
  graphs cheaply; exact-length attention).
"""

import time
from typing import Callable, Iterator, List

import mlx.core as mx
import numpy as np

from .beam_search import BeamShape
from ..model.drafter import Drafter
from ..model.kv_cache import KVCache, ResidentCache
from ..model.llm import Model
from .lookup import with_lookup_beam
from ..policy import DecodePolicy
from .sampling import SamplingParams, sample
from .stats import Stats
from .tree import build_tree
from .ar import finish
from .options import LOOKUP_MIN_MATCH, SAMPLED_DRAFTS, DecodeOptions, check_request
from .prefill import prefill
from .steps import CompiledSteps, draft_arrays, packed_step, resident_step, tree_inputs
from .trees import tree_rows
from .strategy import choose_strategy

CACHE_STEP = 256  # the cache grows by multiples of this: on GPUs each capacity compiles its own kernels


def tree_cache(model: Model, tree_size: int, fixed_shapes: bool) -> KVCache:
    """A KV cache for trees of `tree_size` tokens: it grows by room for ~4 trees, in whole
    multiples of CACHE_STEP slots, so its capacities are ones other shapes use too."""
    return model.new_cache(step=CACHE_STEP * max(1, -(-4 * tree_size // CACHE_STEP)), fixed_shapes=fixed_shapes)


def generate_redrafter(model: Model, drafter: Drafter, prompt: List[int], *, max_tokens: int,
                       beam: BeamShape = BeamShape(), sampling: SamplingParams = SamplingParams(),
                       lookup: int = LOOKUP_MIN_MATCH, sampled_drafts: str = SAMPLED_DRAFTS, eos_ids=(),
                       policy: DecodePolicy = None, stats: Stats = None, progress: Callable[[int, int], None] = None,
                       compiled: CompiledSteps = None) -> Iterator[List[int]]:
    """ReDrafter decoding; yields the tokens accepted at each step (1..beam.length).

    Greedy (sampling.temp == 0): output identical to greedy AR; sampling: exactly
    distributed as AR sampling (decode/strategy.py). lookup: greedy only, also verify a
    beam copied from earlier in the text where its last `lookup` or more tokens occur before
    (lookup.py; 0: never). policy (default: this device's): resident or packed steps (see
    above). max_tokens is cut to the room that the prompt leaves in the model's context
    window; progress: prefill's; compiled: where compiled steps are kept (an Engine's)."""
    options = DecodeOptions(beam=beam, sampling=sampling, lookup=lookup, sampled_drafts=sampled_drafts)
    max_tokens = check_request(prompt, max_tokens, model.config.context_window)
    beam.check(drafter.draft_vocab_size)
    policy = policy or DecodePolicy.for_device()
    stats = stats or Stats()
    stats.draft_length = beam.length - 1
    strategy = choose_strategy(sampling, sampled_drafts)
    steps = Steps(model, drafter, strategy, options, policy, compiled or CompiledSteps())
    cache = tree_cache(model, steps.tree_size, policy.fixed_tree(beam.width))
    start = time.perf_counter()
    context = prefill(model, cache, prompt, bucket=policy.prefill_bucket, taps=drafter.taps, progress=progress,
                      chunk_size=policy.prefill_chunk)
    draft = strategy.draft(drafter, model.embed, context, sample(model.logits(context), sampling), beam)
    mx.eval(draft.beams)
    stats.prompt_tokens, stats.prompt_time = len(prompt), time.perf_counter() - start
    start = time.perf_counter()
    run = steps.resident if policy.fixed_shapes else steps.packed
    for path, count, best in run(cache, draft, prompt, max_tokens, stats):
        chunk = finish(path, stats.generated_tokens, max_tokens, eos_ids)
        stats.steps += 1
        stats.accepted_histogram[count] += 1
        stats.lookup_steps += best == beam.paths  # the lookup beam (after the drafts) was accepted furthest
        stats.generated_tokens += len(chunk)
        stats.generation_time = time.perf_counter() - start
        yield chunk
        if stats.generated_tokens >= max_tokens or chunk[-1] in eos_ids:
            return


def packed_tree_size(beam: BeamShape, policy: DecodePolicy) -> int:
    """Rows a packed tree is padded to where its step is compiled at a fixed size
    (DecodePolicy.fixed_tree): the drafter's tree's (trees.tree_rows; a lookup beam adds rows
    only where it differs), else 0: verified as packed."""
    return tree_rows(beam, lookup=False) if policy.fixed_tree(beam.width) else 0


class Steps:
    """The steps of one generation; resident() and packed() yield, per step, the accepted
    tokens, the number of accepted drafts and the winning beam."""

    def __init__(self, model: Model, drafter: Drafter, strategy, options: DecodeOptions, policy: DecodePolicy,
                 compiled: CompiledSteps):
        self.model, self.drafter, self.strategy, self.options, self.policy = model, drafter, strategy, options, policy
        self.compiled, self.beam, self.lookup = compiled, options.beam, options.lookup_match
        self.sampled = not options.sampling.greedy
        if policy.fixed_shapes:  # resident: room for the lookup beam in every tree
            self.tree_size = tree_rows(self.beam, self.lookup > 0)
        else:
            self.tree_size = packed_tree_size(self.beam, policy)

    def _key(self, kind: str):
        o = self.options
        return (kind, id(self.model), id(self.drafter), o.beam, o.sampling, o.sampled_drafts, self.lookup)

    def resident(self, cache: KVCache, draft, prompt: List[int], max_tokens: int, stats: Stats):
        """Resident steps, step n + 1 queued before step n is read; the last one queued is
        the step after which max_tokens must have been reached."""
        beam = self.beam
        step = self.compiled.get(self._key("resident"), lambda: resident_step(
            self.model, self.drafter, self.strategy, beam, self.lookup, self.sampled))
        resident = ResidentCache(cache, prompt)

        def queue(drafts):
            resident.make_room(self.tree_size, beam.length)
            out, drafts, state = step(drafts, resident.state())
            resident.adopt(*state)
            mx.async_eval(out, drafts, state)
            return out, drafts

        queued = queue(draft_arrays(draft, self.sampled))
        while queued is not None:
            following = queue(queued[1]) if stats.generated_tokens + 1 < max_tokens else None
            count, best, *path = queued[0].tolist()
            resident.read(count + 1)
            yield path[:count + 1], count, best
            queued = following

    def packed(self, cache: KVCache, draft, prompt: List[int], max_tokens: int, stats: Stats):
        """Steps over trees packed on the host, each read before the next is built."""
        fixed = self.policy.fixed_tree(self.beam.width)
        make = lambda: packed_step(self.model, self.drafter, self.strategy, self.beam)  # noqa: E731
        step = self.compiled.get(self._key("packed"), make) if fixed else make()
        text = list(prompt)  # what the lookup beam searches
        while True:
            stats.start_phase()
            beams = np.array(draft.beams[0])
            if self.lookup:
                beams = with_lookup_beam(beams, text, self.lookup)
            tree = build_tree(beams)
            written = max(self.tree_size, len(tree.tokens))
            inputs = tree_inputs(cache, tree, written)
            stats.end_phase("tree", *inputs)
            drafted = (draft.log_probs[0], draft.positions[0]) if self.sampled else ()
            accepted, draft, keys, values = step(*inputs, mx.array(tree.index), mx.array(beams), *cache.arrays(),
                                                 *drafted)
            cache.adopt(keys, values)
            mx.eval(accepted.beam, accepted.count, draft.beams, *cache.state())
            stats.end_phase("step")
            best, count = accepted.beam.item(), accepted.count.item()
            cache.commit(tree.index[best, :count + 1], written)  # its copies, if any, run in the next step
            stats.end_phase("commit", *cache.state())
            path = beams[best, :count + 1].tolist()
            text += path
            yield path, count, best
