"""Times the sampling-only parts of a ReDrafter step against the greedy ones, each evaluated
on its own on the same context, through the decode package's strategies (decode/strategy.py,
what a step calls): drafting the tree (the greedy strategy's beam search vs sampled drafts:
iid, rsd-c, rsd-s) and judging it (the greedy strategy's head, argmax and match vs the
rejection walk, i.i.d. for iid or recursive without replacement for rsd-c and rsd-s).

  python -m experiments.sampled_step [--model NAME|DIR --drafter DIR] [--beam 4x4] [--temp 1.0]
                                     [--context 300] [--repeats 30]

A --context-token prompt is prefilled; the judges read the hidden states of one forward over
rsd-s drafts packed as a resident step packs them (decode/trees.py: T = 1 + W (L - 1)
rows; CPUs verify the packed tree without its padding). Each judge includes the target head over
the T rows ("target head" alone); the walk computes p only for the rows it visits (one per
depth), and "target log-probs of every tree token" is what computing p for every row costs."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import context_tokens, load, parser, resident_context, timed
from redrafter_mlx import BeamShape, SamplingParams
from redrafter_mlx.decode.beam_search import Draft
from redrafter_mlx.decode.steps import verify
from redrafter_mlx.decode.strategy import choose_strategy
from redrafter_mlx.decode.trees import packed_tree, tree_mask, tree_rows
from redrafter_mlx.decode.sampled_drafts import METHODS
from redrafter_mlx.decode.sampling import target_log_probs


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=BeamShape.parse, default=BeamShape(4, 4), help="WxL (default 4x4)")
    args_parser.add_argument("--temp", type=float, default=1.0)
    args_parser.add_argument("--context", type=int, default=300, help="prompt tokens prefilled")
    args_parser.add_argument("--repeats", type=int, default=30)
    args = args_parser.parse_args()
    beam, sampling = args.beam, SamplingParams(args.temp)
    engine = load(args)
    model, drafter = engine.model, engine.drafter
    rows = tree_rows(beam, lookup=False)
    prompt = context_tokens(engine, args.context)
    resident, context, token = resident_context(engine, prompt, rows, beam.length)
    greedy = choose_strategy(SamplingParams(), "rsd-s")
    sampled = {method: choose_strategy(sampling, method) for method in METHODS}

    def report(name: str, fn):
        print(f"{name:54s} {timed(fn, args.repeats):8.3f} ms", flush=True)

    def drafting(strategy):
        return lambda: strategy.draft(drafter, model.embed, context, token, beam).beams

    print(f"vocabulary {model.config.vocab_size}, draft vocabulary {drafter.draft_vocab_size}, beam {beam}, "
          f"tree of {rows} rows")
    report("draft: beam search (greedy)", drafting(greedy))
    for method, strategy in sampled.items():
        report(f"draft: sampled, {method}", drafting(strategy))
    draft = sampled["rsd-s"].draft(drafter, model.embed, context, token, beam)
    beams = draft.beams[0]
    tree = packed_tree(beams, rows)
    mask = tree_mask(resident.kept, tree.block, resident.end)
    hidden, _, _ = verify(model, tree.tokens[None], (resident.length + tree.depths)[None], mask,
                          resident.end, resident.keys, resident.values, drafter.taps)
    drafted = Draft(beams, draft.log_probs[0], draft.positions[0], None)
    mx.eval(hidden, drafted)
    report(f"target head, {rows} rows", lambda: model.logits(hidden))
    report("target log-probs of every tree token", lambda: target_log_probs(model.logits(hidden), sampling))
    report("judge: greedy (head, argmax, match)",
           lambda: greedy.judge(model, drafter, hidden, tree.index, beams, drafted).count)
    for name, method in (("i.i.d.", "iid"), ("recursive, without replacement", "rsd-s")):
        report(f"judge: rejection walk, {name}",
               lambda method=method: sampled[method].judge(model, drafter, hidden, tree.index, beams, drafted).count)


if __name__ == "__main__":
    main()
