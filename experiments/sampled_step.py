"""Times the sampling-only parts of a ReDrafter step against the greedy ones: drafting the tree
(beam search vs iid, rsd-c, rsd-s sampled drafts) and judging it (greedy acceptance vs the
rejection walk, i.i.d. or recursive), each evaluated on its own on the same
context and target log-probs, at the target's vocabulary size.

  python -m experiments.sampled_step [--model NAME|DIR --drafter DIR] [--beam 4x4] [--temp 1.0]

A 300-token prompt is prefilled; the target's log-probs after each tree token come from one
forward over the drafted beams (unpacked: W x L tokens). The walk computes p itself, for
the rows it visits; "target log-probs of every tree token" is what computing p for every
tree token would cost."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import load, parser, timed
from redrafter_mlx.acceptance import greedy_accept, speculative_accept
from redrafter_mlx.beam_search import BeamShape, beam_search
from redrafter_mlx.decode import prefill, tree_cache
from redrafter_mlx.sampled_drafts import METHODS, sample_drafts
from redrafter_mlx.sampling import SamplingParams, target_log_probs


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(4, 4), help="WxL (default 4x4)")
    args_parser.add_argument("--temp", type=float, default=1.0)
    args_parser.add_argument("--repeats", type=int, default=30)
    args = args_parser.parse_args()
    beam, sampling = args.beam, SamplingParams(args.temp)
    _, model, drafter = load(args)
    cache = tree_cache(model, beam.width * beam.length, fixed_shapes=True)
    context = prefill(model, cache, list(range(100, 400)))
    token = mx.argmax(model.logits(context), -1)

    def report(name: str, fn):
        print(f"{name:44s} {timed(fn, args.repeats):8.3f} ms", flush=True)

    print(f"vocabulary {model.config.vocab_size}, draft vocabulary {drafter.draft_vocab_size}, beam {beam}")
    report("draft: beam search (greedy)", lambda: beam_search(drafter, model.embed, context, token, beam.width,
                                                              beam.length).beams)
    for method in METHODS:
        report(f"draft: sampled, {method}", lambda method=method: sample_drafts(
            drafter, model.embed, context, token, beam.width, beam.length, sampling, method).beams)
    draft = sample_drafts(drafter, model.embed, context, token, beam.width, beam.length, sampling, "rsd-s")
    beams = draft.beams[0]
    index = mx.arange(beams.size).reshape(beams.shape)  # unpacked: one row per beam token
    hidden = model(beams.reshape(1, -1), mx.arange(300, 300 + beams.size)[None], model.new_cache())
    logits = model.logits(hidden[0])  # (W * L, V)
    mx.eval(logits, draft.log_probs)
    report("judge: greedy acceptance (argmax, match)", lambda: greedy_accept(beams, mx.argmax(logits, -1)[index]).count)
    report("judge: target log-probs of every tree token", lambda: target_log_probs(logits, sampling))
    for without_replacement in (False, True):
        name = "recursive, without replacement" if without_replacement else "i.i.d."
        report(f"judge: rejection walk, {name}", lambda w=without_replacement: speculative_accept(
            beams[None], draft.log_probs, logits[None], index[None], sampling, draft_tokens=drafter.draft_tokens,
            draft_positions=draft.positions, without_replacement=w).count)


if __name__ == "__main__":
    main()
