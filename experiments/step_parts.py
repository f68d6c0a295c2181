"""Where a ReDrafter step's time goes, in both ways decoding runs one (decode/redrafter.py):
the resident step of fixed-shape policies (GPUs: the tree packed, verified, judged and
committed on the device, decode/steps.resident_step over a kv_cache.ResidentCache) and the
packed step of CPUs (the host packs the beams' shared prefixes into a tree, tree_inputs,
then decode/steps.packed_step). Each part is evaluated on its own, greedy, at the given beam
shape, against a one-token forward; what decoding compiles is compiled here too, so GPU times
include the host's launch cost that the pipelined loop would hide. On the CPU it showed where
a 1x3 step went (96.8 ms: attention and few-row products), which decided grouped attention
and 3-row transposed products (84.0 ms after; docs/bench/cpu_step_parts_2026-11-24.txt,
docs/perf.md). Each part's host time (building its graph and handing it to the device,
mx.async_eval) is printed beside its total: on the H100 (Qwen2.5-Coder-1.5B, 2x5 and 8x5) host
time was 81-97% of every part but the target head, and a 37-token forward cost about what a
13-token one did: a GPU step is bound by the host's work per operation dispatched
(docs/bench/h100_qwen15_step_parts_2026-12-06.txt, docs/perf.md).

  python -m experiments.step_parts [--model NAME|DIR --drafter DIR] [--beam 1x3] [--lookup 2]
                                   [--context 300] [--repeats 50]

A --context-token prompt is prefilled; the parts then run on its cache, sized as decoding
sizes it (decode.tree_cache), and nothing is committed, so every call sees the same cache.
--lookup is DecodeOptions.lookup (0: no lookup beam): the resident tree then holds W + 1
beams, T = 1 + (W + 1)(L - 1) rows (1 + W (L - 1) without it; W (L - 1) is N with --beam WxL:N),
and the packed tree adds the lookup beam where the text repeats. Parts: packing the resident
tree on the device (trees.packed_tree), the forward over the resident tree with its mask
(with an additive mask made once, and without a mask), a one-token forward, the target head,
beam search, the whole resident step (verify, judge, commit, next draft), AR tokens (on the
engine's AR form) and resident steps chained, each queued before the previous one's first
output is read (on the H100 this AR chain ran 6.2-7.1 ms per token where generate_ar ran
5.0-5.5: compare chained steps in milliseconds, not as AR tokens), and the packed
step: the host's tree packing alone, the device's step alone (verify, judge, next draft), and
both as the loop runs them."""

import time

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import numpy as np
from experiments.common import context_tokens, load, parser, resident_context, timed_split
from redrafter_mlx import BeamShape, DecodeOptions, SamplingParams
from redrafter_mlx.decode import CompiledSteps, prefill, tree_cache, tree_inputs, verify
from redrafter_mlx.decode.steps import packed_step, resident_step, slot_inputs
from redrafter_mlx.decode.strategy import choose_strategy
from redrafter_mlx.decode.redrafter import packed_tree_size
from redrafter_mlx.decode.trees import node_rows, packed_tree, tree_mask, tree_rows
from redrafter_mlx.model.kv_cache import Slots
from redrafter_mlx.decode.lookup import with_lookup_beam
from redrafter_mlx.decode.tree import build_tree


def chained(step, repeats: int, warmup: int = 5) -> float:
    """Milliseconds per step of chained steps (step(previous outputs or None) -> outputs),
    each queued before the previous one's first output is read, as the decoding loops queue
    them: the host builds step n + 1 while the device runs step n."""
    outputs = step(None)
    mx.async_eval(outputs)
    for count in (warmup, repeats):
        start = time.perf_counter()
        for _ in range(count):
            following = step(outputs)
            mx.async_eval(following)
            outputs[0].tolist()
            outputs = following
        mx.eval(outputs)
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(), help="WxL (default 1x3)")
    args_parser.add_argument("--lookup", type=int, default=DecodeOptions().lookup,
                             help="the lookup beam's minimum match (0: off)")
    args_parser.add_argument("--context", type=int, default=300, help="prompt tokens prefilled")
    args_parser.add_argument("--repeats", type=int, default=50)
    args = args_parser.parse_args()
    beam, lookup = args.beam, args.lookup
    engine = load(args)
    model, drafter, policy = engine.model, engine.drafter, engine.policy
    greedy, compiled = choose_strategy(SamplingParams(), DecodeOptions().sampled_drafts), CompiledSteps()

    def report(name: str, fn):
        host, total = timed_split(fn, args.repeats)
        print(f"{name:58s} {total:8.3f} ms (host {host:7.3f} ms)", flush=True)

    # The resident step's tree, cache and inputs.
    resident_fn = compiled.get("resident", lambda: resident_step(model, drafter, greedy, beam, lookup, sampled=False))
    rows = tree_rows(beam, lookup > 0)
    prompt = context_tokens(engine, args.context)
    resident, context, token = resident_context(engine, prompt, rows, beam.length, bucket=policy.prefill_bucket)
    draft = greedy.draft(drafter, model.embed, context, token, beam)
    beams = draft.beams[0]
    if lookup:
        beams = mx.concatenate([beams, beams[:1]])  # the lookup beam's place (a copy where nothing matches)
    device_tree = packed_tree(beams, rows)
    tree = (device_tree.tokens[None], (resident.length + device_tree.depths)[None],
            tree_mask(resident.kept, device_tree.block, resident.end), resident.end)
    distinct = node_rows(beams)[1].item()
    print(f"resident tree: {rows} rows ({beams.shape[0]} beams, {distinct} distinct tokens), "
          f"attention over {resident.capacity} slots")

    # The packed step's cache and inputs, sized as decode.redrafter.Steps sizes them.
    fixed = policy.fixed_tree(beam.width)
    packed_size = packed_tree_size(beam, policy)
    packed_cache = tree_cache(model, packed_size, fixed)
    prefill(model, packed_cache, prompt, bucket=policy.prefill_bucket, taps=drafter.taps)
    make_packed = lambda: packed_step(model, drafter, greedy, beam)  # noqa: E731
    packed_fn = compiled.get("packed", make_packed) if fixed else make_packed()

    def pack():
        """The host's part of a packed step: read the beams, add the lookup beam, pack the tree."""
        host_beams = np.array(draft.beams[0])
        if lookup:
            host_beams = with_lookup_beam(host_beams, prompt, lookup)
        packed = build_tree(host_beams)
        inputs = tree_inputs(packed_cache, packed, max(packed_size, len(packed.tokens)))
        return inputs, mx.array(packed.index), mx.array(host_beams)

    def packed_call(inputs, index, host_beams):
        accepted, following, keys, values = packed_fn(*inputs, index, host_beams, *packed_cache.arrays())
        packed_cache.adopt(keys, values)  # the same slots are written again by the next call
        return [accepted.beam, accepted.count, following.beams, *packed_cache.state()]

    packed = pack()
    print(f"packed tree: {packed[0][0].shape[1]} rows, attention over {packed[0][2].shape[-1]} slots")

    forward = mx.compile(lambda *arrays: verify(model, *arrays, drafter.taps)[0])
    unmasked = mx.compile(lambda tokens, positions, offset, keys, values: model.forward(
        tokens, positions, None, Slots(keys, values, offset), resident.capacity, drafter.taps))
    report(f"resident: packing the tree on the device, {rows} rows", lambda: list(packed_tree(beams, rows)))
    report(f"resident: forward of {rows} rows, tree mask", lambda: forward(*tree, resident.keys, resident.values))
    additive = mx.where(tree[2], 0.0, -mx.inf).astype(model.dtype)  # made once, as a step could make it
    mx.eval(additive)
    report(f"resident: forward of {rows} rows, additive mask",
           lambda: forward(tree[0], tree[1], additive, tree[3], resident.keys, resident.values))
    report(f"resident: forward of {rows} rows, no mask",
           lambda: unmasked(tree[0], tree[1], tree[3], resident.keys, resident.values))
    one = slot_inputs(packed_cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
    report("forward of 1 token, mask", lambda: forward(token[None], *one, *packed_cache.arrays()))
    hidden = forward(*tree, resident.keys, resident.values)
    report(f"target head + argmax, {rows} rows", lambda: mx.argmax(model.logits(hidden), -1))
    report("target head + argmax, 1 row", lambda: mx.argmax(model.logits(hidden[:1]), -1))
    search = mx.compile(lambda c, t: greedy.draft(drafter, model.embed, c, t, beam).beams)
    report(f"beam search {beam}", lambda: search(context, token))

    def resident_call():
        out, following, state = resident_fn((draft.beams,), resident.state())
        resident.keys, resident.values = state[0], state[1]  # nothing committed: the same slots are written again
        return [out, following, *state[0], *state[1]]

    report(f"resident: whole step {beam} (verify, judge, commit, draft)", resident_call)

    def resident_chained(previous):
        """A resident step on the drafts of the one before (the first: on draft's)."""
        out, following, state = resident_fn(previous[1] if previous else (draft.beams,), resident.state())
        resident.keys, resident.values = state[0], state[1]
        return [out, following]

    ar_model = engine.ar_model or model
    ar_cache = ar_model.new_cache(fixed_shapes=True)
    prefill(ar_model, ar_cache, prompt, bucket=policy.prefill_bucket)

    def ar_chained(previous):
        """generate_ar's step on GPUs: a plain forward of the last token, written at the same slot."""
        last = previous[0] if previous else token
        hidden = ar_model(last[None], mx.array([[ar_cache.length]]), ar_cache)
        return [mx.argmax(ar_model.logits(hidden[:, -1]), -1), *ar_cache.state()]

    form = "4-bit" if engine.ar_model is not None else "as verified"
    for name, step in ((f"chained: AR token ({form})", ar_chained),
                       (f"chained: resident step {beam}", resident_chained)):
        print(f"{name:58s} {chained(step, args.repeats):8.3f} ms", flush=True)
    report("packed: host tree packing and inputs", lambda: pack()[0])
    report(f"packed: step {beam} alone (verify, judge, draft)", lambda: packed_call(*packed))
    report(f"packed: whole step {beam} (host packing, then the step)", lambda: packed_call(*pack()))


if __name__ == "__main__":
    main()
