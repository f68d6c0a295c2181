"""Times the parts of one ReDrafter step at its fixed shapes against a one-token forward.
Each part is compiled and evaluated on its own, so GPU times include the host's launch
cost that a pipelined loop would hide. On the CPU it showed where a 1x3 step went (96.8 ms:
attention and few-row products), which decided grouped attention and 3-row transposed
products (84.0 ms after; docs/bench/cpu_step_parts_2026-11-24.txt, docs/perf.md).

  python -m experiments.step_parts [--model NAME|DIR --drafter DIR] [--beam 1x3] [--repeats 50]

A 300-token prompt is prefilled; the parts then run on its cache (nothing committed). The
cache is sized as decoding sizes it (decode.tree_cache)."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
import numpy as np
from experiments.common import load, parser, timed
from redrafter_mlx.beam_search import BeamShape, beam_search
from redrafter_mlx.decode import prefill, redrafter_step, slot_inputs, tree_cache, tree_inputs, verify
from redrafter_mlx.kv_cache import Slots
from redrafter_mlx.sampling import SamplingParams
from redrafter_mlx.tree import build_tree


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(), help="WxL (default 1x3)")
    args_parser.add_argument("--repeats", type=int, default=50)
    args = args_parser.parse_args()
    beam, repeats = args.beam, args.repeats
    _, model, drafter = load(args)

    def report(name: str, fn):
        print(f"{name:40s} {timed(fn, repeats):7.3f} ms", flush=True)

    size = beam.width * beam.length
    cache = tree_cache(model, size, fixed_shapes=True)
    context = prefill(model, cache, list(range(100, 400)))
    token = mx.argmax(model.logits(context), -1)
    draft = beam_search(drafter, model.embed, context, token, beam.width, beam.length)
    beams = np.array(draft.beams[0])
    tree = build_tree(beams)
    inputs = tree_inputs(cache, tree, size)
    one = slot_inputs(cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
    keys, values = cache.keys, cache.values
    print(f"tree: {len(tree.tokens)} distinct tokens of {size}; attention over {inputs[2].shape[-1]} slots")

    forward = mx.compile(lambda *arrays: verify(model, *arrays)[0])
    unmasked = mx.compile(lambda tokens, positions, offset, k, v: model.forward(
        tokens, positions, None, Slots(k, v, offset), inputs[2].shape[-1]))
    report(f"forward of {size} tokens, tree mask", lambda: forward(*inputs, keys, values))
    report(f"forward of {size} tokens, no mask", lambda: unmasked(inputs[0], inputs[1], inputs[3], keys, values))
    report("forward of 1 token, mask", lambda: forward(token[None], *one, keys, values))
    hidden = forward(*inputs, keys, values)
    report(f"target head + argmax, {size} rows", lambda: mx.argmax(model.logits(hidden), -1))
    report("target head + argmax, 1 row", lambda: mx.argmax(model.logits(hidden[:1]), -1))
    search = mx.compile(lambda c, t: beam_search(drafter, model.embed, c, t, beam.width, beam.length).beams)
    report(f"beam search {beam}", lambda: search(context, token))
    step = redrafter_step(model, drafter, beam, SamplingParams(), compiled=True)
    index, beam_tokens = mx.array(tree.index), mx.array(beams)
    report(f"whole step {beam} (verify, accept, draft)",
           lambda: step(*inputs, index, beam_tokens, draft.log_probs[0], keys, values)[1].beams)
    report("host: tree packing and inputs", lambda: tree_inputs(cache, build_tree(np.array(draft.beams[0])), size)[0])


if __name__ == "__main__":
    main()
