"""Flag groups shared by the command lines (generate, server, the demos) and their parsing,
once, into frozen settings: library errors name parameters; these name flags."""

import argparse
from typing import Optional

from . import models
from .beam_search import BeamShape
from .decode import LOOKUP_MIN_MATCH, MODES, SAMPLED_DRAFTS, DecodeOptions
from .errors import UsageError, finite_float, int_at_least
from .load import DTYPES
from .policy import DecodePolicy
from .sampled_drafts import METHODS
from .sampling import SamplingParams


def add_model_flags(p: argparse.ArgumentParser):
    """--model, --drafter, --dtype, --draft-vocab."""
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}: fetched and converted on first "
                   f"use, with its shipped drafter) or an MLX model directory (see `python -m convert`); "
                   f"default: {models.DEFAULT}")
    p.add_argument("--drafter", help="MLX drafter directory (default: the named model's shipped drafter)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast float weights (default: as stored)")
    p.add_argument("--draft-vocab", type=int_at_least(0), help="draft only the N most frequent tokens (0: all; "
                   "default: the drafter's config)")


def add_decoding_flags(p: argparse.ArgumentParser, *, temp_help: str = "sampling temperature (0: greedy)"):
    """--mode, --beam, --beam-width, --beam-length, --lookup, --sampled-drafts, --temp, --top-p, --top-k."""
    p.add_argument("--mode", choices=MODES, default="redrafter")
    p.add_argument("--beam", help="'auto': time a few beam shapes on this device once (cached) and use the "
                   "fastest; or WxL, e.g. 2x4 (overrides --beam-width/--beam-length)")
    p.add_argument("--beam-width", type=int, help="beams (default: the named model's fastest shape measured on "
                   "this kind of device, docs/perf.md; else 1)")
    p.add_argument("--beam-length", type=int, help="tokens per beam: the LLM's own + L-1 drafts (default: "
                   "likewise; else 3)")
    p.add_argument("--lookup", type=int_at_least(0), default=LOOKUP_MIN_MATCH,
                   help="greedy only: also verify a beam copied from earlier in the text where its last N or more "
                        f"tokens occur before (0: off; default: {LOOKUP_MIN_MATCH})")
    p.add_argument("--sampled-drafts", choices=METHODS, default=SAMPLED_DRAFTS,
                   help="sampling only: how the draft tree is drawn from the drafter: iid (independent beams), "
                        "rsd-c (distinct first tokens), rsd-s (stochastic beam search; without replacement, "
                        f"verified by recursive rejection sampling); default: {SAMPLED_DRAFTS}")
    p.add_argument("--temp", type=finite_float(0), default=0.0, help=temp_help)
    p.add_argument("--top-p", type=finite_float(0, 1, open_minimum=True), default=1.0)
    p.add_argument("--top-k", type=int_at_least(0), default=0)


def beam_of(args, policy: DecodePolicy) -> BeamShape:
    """--beam WxL, or --beam-width/--beam-length over the named model's measured shape
    (also the starting point of --beam auto)."""
    if args.beam is not None and args.beam != "auto":
        return BeamShape.parse(args.beam)
    return models.beam_from_flags(args.model, args.beam_width, args.beam_length, policy)


def decode_options(args, policy: DecodePolicy) -> DecodeOptions:
    """The decoding flags as DecodeOptions, checked before anything loads."""
    try:
        return DecodeOptions(mode=args.mode, beam=beam_of(args, policy),
                             sampling=SamplingParams(args.temp, args.top_k, args.top_p), lookup=args.lookup,
                             sampled_drafts=args.sampled_drafts)
    except UsageError as error:
        raise UsageError(flag_words(str(error))) from None


FLAGS = {"temp": "--temp", "top_k": "--top-k", "top_p": "--top-p", "lookup": "--lookup",
         "sampled_drafts": "--sampled-drafts", "mode": "--mode"}


def flag_words(message: str) -> str:
    """A library message that names a parameter, worded with its flag."""
    head, _, rest = message.partition(" ")
    return f"{FLAGS[head]} {rest}" if head in FLAGS else message


def dtype_of(args) -> Optional[object]:
    return DTYPES[args.dtype] if args.dtype else None
