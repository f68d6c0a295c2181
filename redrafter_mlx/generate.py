"""Command line: `python -m redrafter_mlx.generate --model DIR --drafter DIR --prompt TEXT`."""

import argparse
import sys

import mlx.core as mx

from . import models
from .beam_search import BeamShape
from .calibrate import auto_beam
from .decode import LOOKUP_MIN_MATCH, SAMPLED_DRAFTS, generate_ar, generate_redrafter
from .errors import run_cli
from .load import DTYPES, load_drafter, load_model, load_tokenizer
from .policy import DecodePolicy
from .sampled_drafts import METHODS
from .sampling import SamplingParams
from .stats import Stats
from .text import detokenize, encode_messages, encode_prompt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.generate", description=__doc__)
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}: fetched and converted on first "
                   f"use, with its shipped drafter) or an MLX model directory (see `python -m convert`); "
                   f"default: {models.DEFAULT}")
    p.add_argument("--drafter", help="MLX drafter directory (default: the named model's shipped drafter)")
    p.add_argument("--prompt", help="prompt text; '-' reads stdin; omitted: stdin if piped, else chat")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--beam", help="'auto': time a few beam shapes on this device once (cached) and use the "
                   "fastest; or WxL, e.g. 2x4 (overrides --beam-width/--beam-length)")
    p.add_argument("--beam-width", type=int, default=1, help="beams (default: best measured on CPU, docs/perf.md)")
    p.add_argument("--beam-length", type=int, default=3, help="tokens per beam: the LLM's own + L-1 drafts")
    p.add_argument("--lookup", type=int, default=LOOKUP_MIN_MATCH,
                   help="greedy only: also verify a beam copied from earlier in the text where its last N or more "
                        f"tokens occur before (0: off; default: {LOOKUP_MIN_MATCH})")
    p.add_argument("--sampled-drafts", choices=METHODS, default=SAMPLED_DRAFTS,
                   help="sampling only: how the draft tree is drawn from the drafter: iid (independent beams), "
                        "rsd-c (distinct first tokens), rsd-s (stochastic beam search; without replacement, "
                        f"verified by recursive rejection sampling); default: {SAMPLED_DRAFTS}")
    p.add_argument("--draft-vocab", type=int, help="draft only the N most frequent tokens (0: all; "
                   "default: the drafter's config)")
    p.add_argument("--mode", choices=("redrafter", "ar"), default="redrafter")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap the prompt in the tokenizer's chat template (default on when it has one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast float weights (default: as stored)")
    p.add_argument("--profile", action="store_true",
                   help="time tree packing, the step (verify, accept, draft) and the commit (adds device syncs)")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True, help="print statistics")
    return p


def stream(args, model, drafter, tokenizer, prompt_tokens) -> str:
    """Generates, printing text as it is accepted; returns the text."""
    stats = Stats(profile=args.profile)
    eos = set(tokenizer.eos_token_ids)
    options = dict(max_tokens=args.max_tokens, sampling=args.sampling, eos_ids=eos, policy=args.policy, stats=stats)
    if args.mode == "ar":
        chunks = generate_ar(model, prompt_tokens, **options)
    else:
        chunks = generate_redrafter(model, drafter, prompt_tokens, beam=args.beam_shape, lookup=args.lookup,
                                    sampled_drafts=args.sampled_drafts, **options)
    detokenizer = tokenizer.detokenizer
    for _ in detokenize(chunks, detokenizer, eos):
        print(detokenizer.last_segment, end="", flush=True)
    print(detokenizer.last_segment, flush=True)
    if args.verbose:
        print("=" * 10, file=sys.stderr)
        print(stats.summary(), file=sys.stderr)
    return detokenizer.text


def chat(args, model, drafter, tokenizer):
    messages = []
    print("Chat: type a message, an empty line or Ctrl-D to quit.", file=sys.stderr)
    while True:
        try:
            text = input(">> ")
        except EOFError:
            return
        if not text.strip():
            return
        messages.append({"role": "user", "content": text})
        reply = stream(args, model, drafter, tokenizer, encode_messages(tokenizer, messages, args.chat_template))
        messages.append({"role": "assistant", "content": reply})


def run(args):
    args.sampling = SamplingParams(args.temp, args.top_k, args.top_p)
    args.policy = DecodePolicy.for_device()
    redrafter = args.mode == "redrafter"
    if args.beam and args.beam != "auto":
        args.beam_shape = BeamShape.parse(args.beam)
    else:
        args.beam_shape = BeamShape(args.beam_width, args.beam_length)
    model_dir, drafter_dir = models.resolve(args.model, args.drafter, need_drafter=redrafter)
    mx.random.seed(args.seed)
    dtype = DTYPES[args.dtype] if args.dtype else None
    model = load_model(model_dir, dtype, policy=args.policy)
    drafter = load_drafter(drafter_dir, model, dtype, args.draft_vocab, policy=args.policy) if redrafter else None
    tokenizer = load_tokenizer(model_dir, model.config.eos_ids)
    if args.beam == "auto" and drafter is not None:
        args.beam_shape = auto_beam(model, drafter, lambda text: encode_prompt(tokenizer, text, args.chat_template),
                                    model_dir, drafter_dir, policy=args.policy, sampling=args.sampling)
    prompt = args.prompt
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = sys.stdin.read()
    if prompt is None:
        return chat(args, model, drafter, tokenizer)
    stream(args, model, drafter, tokenizer, encode_prompt(tokenizer, prompt, args.chat_template))


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
