"""How many operations one decoding step hands to `mx.eval`, as GPUs build it: the AR step
(uncompiled, as GPUs run it, and compiled) and the resident ReDrafter step (compiled:
verify, judge, commit, draft) with its beam search alone. Counted from the graph of each
step's outputs (mx.export_to_dot), fused elementwise kernels counted once, views (reshape,
transpose, broadcast, slice) included: each is a node the device's dispatch walks. The model
is loaded under the GPU policy's graph (fixed shapes, joined projections) with dense weights,
so this runs on any device.

  python -m experiments.step_ops [--model NAME|DIR --drafter DIR] [--beam 2x4] [--lookup 2]
                                 [--context 64] [--top 12] [--temp 0.7 --top-p 0.9 --sampled-drafts iid]

With --temp > 0 the resident step is the sampled one (sampled drafts, exact acceptance; no
lookup beam, as decoding runs it) and the drafting counted is the sampled drafts'.

The count depends on the device: on CPUs MLX builds its fused operations (attention, RMS
norm, rotary embedding) from their parts. On the H100 (Qwen2.5-Coder-1.5B, 2x5 with the lookup
beam, 2026-12-06) the AR step held 1,781 operations uncompiled and 1,477 compiled, the resident
step 2,090 (its beam search 214), a count that then included the first draft's graph (the
step's inputs are now evaluated first: on the CPU, SmolLM2 2x4, 2,779 -> 2,555). There a step's
time goes with the host's work per operation dispatched (experiments.step_parts, docs/perf.md)."""

import collections
import io
import re
from dataclasses import replace

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import numpy as np
from experiments.common import context_tokens, parser, resident_context
from redrafter_mlx import BeamShape, DecodeOptions, Engine, SamplingParams
from redrafter_mlx.decode import CompiledSteps, prefill
from redrafter_mlx.decode.sampled_drafts import METHODS
from redrafter_mlx.decode.steps import ar_step, draft_arrays, resident_step, slot_inputs
from redrafter_mlx.decode.strategy import choose_strategy
from redrafter_mlx.decode.trees import tree_rows
from redrafter_mlx.policy import GPU


def operations(*arrays) -> collections.Counter:
    """Operations (graph nodes) by primitive name in the graph that computes `arrays`."""
    dot = io.StringIO()
    mx.export_to_dot(dot, *arrays)
    return collections.Counter(re.findall(r'label\s*=\s*"?([A-Za-z]+)', dot.getvalue()))


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(2, 4), help="WxL (default 2x4)")
    args_parser.add_argument("--lookup", type=int, default=DecodeOptions().lookup,
                             help="the lookup beam's minimum match (0: off)")
    args_parser.add_argument("--context", type=int, default=64, help="prompt tokens prefilled")
    args_parser.add_argument("--top", type=int, default=12, help="operation kinds listed per step")
    args_parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    args_parser.add_argument("--top-p", type=float, default=1.0)
    args_parser.add_argument("--sampled-drafts", default=DecodeOptions().sampled_drafts, choices=METHODS)
    args = args_parser.parse_args()
    beam = args.beam
    engine = Engine.load(args.model, args.drafter, policy=replace(GPU, dense_weights=True, float_dtype="float32"))
    model, drafter = engine.model, engine.drafter
    sampling = SamplingParams(args.temp, top_p=args.top_p)
    strategy = choose_strategy(sampling, args.sampled_drafts)
    lookup = DecodeOptions(sampling=sampling, lookup=args.lookup).lookup_match  # greedy only
    sampled = not sampling.greedy
    prompt = context_tokens(engine, args.context)

    def report(name: str, counted: collections.Counter):
        top = ", ".join(f"{kind} {n}" for kind, n in counted.most_common(args.top))
        print(f"{name}: {sum(counted.values())} operations ({top})", flush=True)

    cache = model.new_cache(fixed_shapes=True)
    prefill(model, cache, prompt, bucket=GPU.prefill_bucket)
    mx.eval(cache.state())  # the prefill's graph is not the step's
    one = slot_inputs(cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
    inputs = (mx.array([[prompt[-1]]]), *one, *cache.arrays())
    for name, step in (("AR step, uncompiled (as GPUs run it)", ar_step(model, SamplingParams())),
                       ("AR step, compiled", mx.compile(ar_step(model, SamplingParams())))):
        token, keys, values = step(*inputs)
        report(name, operations(token, *keys, *values))

    rows = tree_rows(beam, lookup > 0)
    resident, context, token = resident_context(engine, prompt, rows, beam.length, bucket=GPU.prefill_bucket)
    draft = draft_arrays(strategy.draft(drafter, model.embed, context, token, beam), sampled)
    mx.eval(draft, context, token, resident.state())  # the step's inputs: not counted
    step = CompiledSteps().get("resident", lambda: resident_step(model, drafter, strategy, beam, lookup, sampled))
    out, drafts, state = step(draft, resident.state())
    kind = "greedy" if sampling.greedy else f"sampled ({sampling}, {args.sampled_drafts} drafts)"
    report(f"resident step {beam}, {kind}, compiled ({rows} tree rows)",
           operations(out, *drafts, *state[0], *state[1], *state[2:]))
    search = mx.compile(lambda c, t: draft_arrays(strategy.draft(drafter, model.embed, c, t, beam),
                                                  sampled))
    report(f"of which drafting {beam}, compiled", operations(*search(context, token)))


if __name__ == "__main__":
    main()
