"""Times the parts of one ReDrafter step at its fixed shapes against a one-token forward
(docs/perf.md, session 10). Each part is compiled and evaluated on its own, so GPU times
include the host's launch cost that a pipelined loop would hide.

  python scripts/step_parts.py MODEL DRAFTER WxL [REPEATS]

A 300-token prompt is prefilled; the parts then run on its cache (nothing committed)."""

import sys
import time

from redrafter_mlx.beam_search import beam_search
from redrafter_mlx.decode import prefill, redrafter_step, slot_inputs, tree_cache, tree_inputs, verify
from redrafter_mlx.kv_cache import Slots
from redrafter_mlx.load import load_drafter, load_model
from redrafter_mlx.sampling import SamplingParams
from redrafter_mlx.tree import build_tree

import mlx.core as mx  # after redrafter_mlx, which loads OpenBLAS first on Linux CPUs
import numpy as np


def timed(name: str, fn, repeats: int):
    for _ in range(5):
        mx.eval(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    print(f"{name:40s} {(time.perf_counter() - start) / repeats * 1e3:7.3f} ms", flush=True)


def main(model_dir, drafter_dir, shape, repeats="50"):
    repeats = int(repeats)
    width, length = map(int, shape.split("x"))
    model = load_model(model_dir)
    drafter = load_drafter(drafter_dir, model)
    cache = tree_cache(model, width * length, fixed_shapes=True)
    context = prefill(model, cache, list(range(100, 400)))
    token = mx.argmax(model.logits(context), -1)
    draft = beam_search(drafter, model.embed, context, token, width, length)
    beams = np.array(draft.beams[0])
    tree = build_tree(beams)
    size = width * length
    inputs = tree_inputs(cache, tree, size)
    one = slot_inputs(cache, np.ones((1, 1), dtype=bool), np.zeros(1, dtype=np.int32))
    keys, values = cache.keys, cache.values
    print(f"tree: {len(tree.tokens)} distinct tokens of {size}; attention over {inputs[2].shape[-1]} slots")

    forward = mx.compile(lambda *args: verify(model, *args)[0])
    unmasked = mx.compile(lambda tokens, positions, offset, k, v: model.forward(
        tokens, positions, None, Slots(k, v, offset), inputs[2].shape[-1]))
    timed(f"forward of {size} tokens, tree mask", lambda: forward(*inputs, keys, values), repeats)
    timed(f"forward of {size} tokens, no mask", lambda: unmasked(inputs[0], inputs[1], inputs[3], keys, values),
          repeats)
    timed("forward of 1 token, mask", lambda: forward(token[None], *one, keys, values), repeats)
    hidden = forward(*inputs, keys, values)
    timed(f"target head + argmax, {size} rows", lambda: mx.argmax(model.logits(hidden), -1), repeats)
    timed("target head + argmax, 1 row", lambda: mx.argmax(model.logits(hidden[:1]), -1), repeats)
    search = mx.compile(lambda c, t: beam_search(drafter, model.embed, c, t, width, length).beams)
    timed(f"beam search {shape}", lambda: search(context, token), repeats)
    step = redrafter_step(model, drafter, width, length, SamplingParams(), compiled=True)
    index, beams = mx.array(tree.index), mx.array(beams)
    timed(f"whole step {shape} (verify, accept, draft)",
          lambda: step(*inputs, index, beams, draft.log_probs[0], keys, values)[1].beams, repeats)
    timed("host: tree packing and inputs", lambda: tree_inputs(cache, build_tree(np.array(draft.beams[0])), size)[0],
          repeats)


if __name__ == "__main__":
    main(*sys.argv[1:])
