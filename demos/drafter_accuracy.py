"""Teacher-forced drafter accuracy on the target's own greedy answers to a prompt set.

  python -m demos.drafter_accuracy [--model NAME|DIR --drafter DIR] [--prompts mtbench]
                                   [--num-prompts 80] [--max-tokens 40] [--steps 3]

The target answers each prompt greedily; then, at every answer position t, the drafter
reads h_t and the true tokens t+1.. and we count its consecutive correct predictions of
t+2, t+3, ... (its chain). P(chain >= k) is the chance that one beam gets k drafts accepted
when a decoding step starts at t, so 1 + E[min(chain, L-1)] predicts tokens per step at
beam width 1 and length L (docs/perf.md compares it with decoding).

--lookup also counts, for each minimum match m = 1..4, the chain of the lookup beam
(redrafter_mlx/decode/lookup.py) at every position and predicts tokens per step at 1xL with it
(the longer of the two chains)."""

import argparse

import mlx.core as mx
import numpy as np

from redrafter_mlx import DecodeOptions, Engine, models
from redrafter_mlx.model.draft_vocab import FILE as DRAFT_VOCAB_FILE, read_ranked
from redrafter_mlx.training.loss import step_logits, target_features
from redrafter_mlx.errors import ArgumentParser, UsageError, int_at_least, run_cli
from redrafter_mlx.decode.lookup import MAX_MATCH, lookup_beam

from .prompts import load_prompts


def chains(model, drafter, sequence: list, prompt_length: int, steps: int) -> np.ndarray:
    """Chain length (0..steps) at each answer position t (from the last prompt token on)."""
    tokens = mx.array(sequence)[None]
    hidden, embeddings = target_features(model, tokens, drafter.taps)
    targets = np.array(drafter.index_of(tokens))[0]
    hits = np.zeros((steps, len(sequence)), dtype=bool)  # hits[i, t]: step i from t is right
    for i, logits in step_logits(drafter, hidden, embeddings, steps):
        predicted = np.array(logits.argmax(-1))[0]
        hits[i, :len(predicted)] = predicted == targets[2 + i:]
    runs = np.cumprod(hits, axis=0).sum(axis=0)  # consecutive hits from step 0
    return runs[prompt_length - 1:len(sequence) - 2]


def lookup_chains(sequence: list, prompt_length: int, steps: int, min_match: int) -> np.ndarray:
    """The lookup beam's chain length (0..steps) at each answer position t, as `chains`
    (-1 where it proposes nothing): it reads the text up to token t+1."""
    text = np.array(sequence)
    found = []
    for t in range(prompt_length - 1, len(sequence) - 2):
        beam = lookup_beam(text[:t + 2], steps + 1, min_match)
        if beam is None:
            found.append(-1)
            continue
        truth = text[t + 2:t + 2 + steps]  # shorter at the end of the answer, as in `chains`
        found.append(int(np.cumprod(beam[1:1 + len(truth)] == truth).sum()))
    return np.array(found)


def report_outside(answers: np.ndarray, drafter, ranked: list):
    """The share of answer tokens outside the draft vocabulary, and outside larger ones of
    the same ranking (draft_vocab.json; none for a drafter without the file)."""
    print(f"answer tokens outside the draft vocabulary ({drafter.draft_vocab_size}): "
          f"{(np.array(drafter.index_of(mx.array(answers))) < 0).mean():.3f}", end="")
    for size in (8192, 16384):
        if size <= len(ranked):
            print(f"; outside the {size} most frequent: {(~np.isin(answers, ranked[:size])).mean():.3f}", end="")
    print()


def share(hits: np.ndarray) -> str:
    """The share of True in hits, or "-" where there are none to count."""
    return f"{hits.mean():.3f}" if hits.size else "-"


def report_lookup(runs: np.ndarray, lookups: dict, steps: int):
    for min_match, found in lookups.items():
        proposed = found >= 0
        either = np.maximum(runs, found)
        predicted = " ".join(f"{1 + np.minimum(either, length - 1).mean():.3f}" for length in range(2, steps + 2))
        print(f"lookup, min match {min_match}: proposes at {proposed.mean():.3f} of positions, right first there "
              f"{share(found[proposed] >= 1)} (drafter {share(runs[proposed] >= 1)}); "
              f"P(either chain >= 1) {(either >= 1).mean():.3f}; predicted tokens/step at 1x2..1x{steps + 1}: "
              f"{predicted}")


def main(argv=None):
    p = ArgumentParser(prog="python -m demos.drafter_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"a model name or an MLX model directory (default: {models.DEFAULT})")
    p.add_argument("--drafter", help="drafter directory (default: the named model's shipped drafter)")
    p.add_argument("--prompts", default="mtbench")
    p.add_argument("--num-prompts", type=int_at_least(1), default=80)
    p.add_argument("--max-tokens", type=int_at_least(1), default=40)
    p.add_argument("--steps", type=int_at_least(1, 15), default=3, help="drafting steps counted (L - 1)")
    p.add_argument("--lookup", action="store_true", help="also the lookup beam's chains")
    args = p.parse_args(argv)
    run_cli(lambda: report(args))


def report(args):
    engine = Engine.load(args.model, args.drafter)
    model, drafter = engine.model, engine.drafter
    found, outside, lookups = [], [], {m: [] for m in range(1, MAX_MATCH + 1)}
    for question in load_prompts(args.prompts)[:args.num_prompts]:
        prompt = engine.encode(question)
        answer = sum(engine.generate(prompt, max_tokens=args.max_tokens, options=DecodeOptions(mode="ar")), [])
        found.append(chains(model, drafter, prompt + answer, len(prompt), args.steps))
        outside.append(answer)
        for min_match in lookups if args.lookup else ():
            lookups[min_match].append(lookup_chains(prompt + answer, len(prompt), args.steps, min_match))
    runs = np.concatenate(found)
    if not len(runs):
        raise UsageError(f"no answer position to score: every answer was shorter than 2 tokens (--max-tokens "
                         f"{args.max_tokens})")
    at_least = [f"{(runs >= k).mean():.3f}" for k in range(1, args.steps + 1)]
    print(f"{len(runs)} positions; P(chain >= 1..{args.steps}): {' '.join(at_least)}")
    has_ranking = (engine.files.drafter_dir / DRAFT_VOCAB_FILE).is_file()  # a converted drafter of all tokens: none
    report_outside(np.concatenate(outside), drafter, read_ranked(engine.files.drafter_dir) if has_ranking else [])
    for length in range(2, args.steps + 2):
        print(f"predicted tokens/step at 1x{length}: {1 + np.minimum(runs, length - 1).mean():.3f}")
    if args.lookup:
        report_lookup(runs, {m: np.concatenate(c) for m, c in lookups.items()}, args.steps)


if __name__ == "__main__":
    main()
