"""Greedy tokens per step at several beam shapes, replayed on the target's own greedy answers
(teacher forced; nothing is timed, so any device, even a busy one, gives the same counts).

  python -m experiments.tree_acceptance --data DIR [--model NAME|DIR --drafter DIR]
                                        [--shapes 2x5,8x5,16x5,16x5:64] [--lookup 2] [--num-sequences 40]

--data holds answers of the target (`python -m redrafter_mlx.train data`: a prompt, then the
target's greedy answer). One forward of the target over each sequence gives its hidden state
at every answer position, and the drafter's beam search runs from all of them at once (a
batch). Decoding is then replayed: a step that starts after position t accepts the longest
prefix of drafts, over its beams and the lookup beam (lookup.py's rule over the text so far),
that the answer goes on with, and the next step starts after them. Where the target's
argmax is the answer's next token (the answer is its greedy output), these are exactly the
steps greedy ReDrafter decoding takes on the answer (tests/test_experiments.py checks this
against decoding). A GPU step costs about the same whatever its width (docs/perf.md), so
the shapes worth timing there are the ones that accept most here. A shape WxL:N verifies the
drafter's N best nodes (BeamShape.nodes); each shape's line also gives how many distinct
tokens its trees held (the rows a tree packs into)."""

import itertools

import numpy as np

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
import mlx.core as mx
from experiments.common import load, parser
from redrafter_mlx import BeamShape, DecodeOptions
from redrafter_mlx.decode.beam_search import ABSENT, beam_search
from redrafter_mlx.decode.lookup import lookup_beam
from redrafter_mlx.decode.trees import node_rows, tree_rows
from redrafter_mlx.training.data import load_sequences
from redrafter_mlx.training.loss import target_features

CHUNK = 64  # answer positions drafted from per batch


def accepted_drafts(model, drafter, hidden: mx.array, sequence: np.ndarray, prompt_length: int, beam: BeamShape,
                    lookup: int):
    """The drafts a step accepts when it starts after each answer position t (from the last
    prompt token to the second-last token), and the distinct tokens of its tree (the rows it
    packs into), each (N - prompt_length,); hidden (1, N, C): the
    target's features over the sequence (training.loss.target_features). The lookup beam is
    the tree's last beam (a copy of beam 0 where the text has no match), as in decoding."""
    starts = np.arange(prompt_length - 1, len(sequence) - 1)
    follow = beam.length - 1
    padded = np.concatenate([sequence, np.full(follow + 1, -1)])
    truth = np.stack([padded[t + 2:t + 2 + follow] for t in starts])  # (P, L - 1): what the answer goes on with
    counts, distinct = [], []
    for chunk in range(0, len(starts), CHUNK):
        at = starts[chunk:chunk + CHUNK]
        beams = np.array(beam_search(drafter, model.embed, hidden[0, mx.array(at)], mx.array(sequence[at + 1]),
                                     beam).beams)
        if lookup:
            found = [lookup_beam(sequence[:t + 2], beam.length, lookup) for t in at]
            extra = np.stack([b[0] if f is None else f for b, f in zip(beams, found)])
            beams = np.concatenate([beams, extra[:, None]], axis=1)
        _, count = node_rows(mx.array(beams))
        matches = (beams[:, :, 1:] == truth[chunk:chunk + CHUNK, None, :]) & (beams[:, :, 1:] != ABSENT)
        counts.append(np.cumprod(matches, axis=2).sum(axis=2).max(axis=1))
        distinct.append(np.array(count))
    return np.concatenate(counts), np.concatenate(distinct)


def replay_steps(counts: np.ndarray) -> int:
    """Steps to decode the answer: each emits its first token and its accepted drafts."""
    position, steps = 0, 0
    while position < len(counts):
        position += counts[position] + 1
        steps += 1
    return steps


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--data", required=True, help="a `train data` directory of the target's greedy answers")
    args_parser.add_argument("--shapes", default="2x5,8x5,16x5", help="beam shapes WxL, comma separated")
    args_parser.add_argument("--lookup", type=int, default=DecodeOptions().lookup,
                             help="the lookup beam's minimum match (0: off)")
    args_parser.add_argument("--num-sequences", type=int, default=40)
    args = args_parser.parse_args()
    engine = load(args)
    shapes = [BeamShape.parse(s) for s in args.shapes.split(",")]
    answers = list(itertools.islice(load_sequences(args.data), args.num_sequences))
    tokens, steps = 0, {shape: 0 for shape in shapes}
    distinct = {shape: [] for shape in shapes}
    model, drafter = engine.model, engine.drafter
    for sequence, prompt_length in answers:
        tokens += len(sequence) - prompt_length
        hidden, _ = target_features(model, mx.array(sequence)[None], drafter.taps)  # once for every shape
        for shape in shapes:
            counts, rows = accepted_drafts(model, drafter, hidden, np.asarray(sequence), prompt_length, shape,
                                           args.lookup)
            steps[shape] += replay_steps(counts)
            distinct[shape].append(rows)
    print(f"{len(answers)} answers, {tokens} tokens, lookup {args.lookup}:")
    for shape in shapes:
        rows = np.concatenate(distinct[shape])
        full = tree_rows(shape, args.lookup > 0)
        print(f"{str(shape):9s} {tokens / steps[shape]:.3f} tokens per step ({steps[shape]} steps); distinct tree "
              f"tokens of {full}: mean {rows.mean():.1f}, 90th percentile {np.percentile(rows, 90):.0f}, "
              f"max {rows.max()}", flush=True)


if __name__ == "__main__":
    main()
