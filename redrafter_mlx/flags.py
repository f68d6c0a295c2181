"""Flag groups shared by the command lines (generate, server, the demos) and their parsing,
once, into frozen settings: library errors name parameters; these name flags."""

import argparse
from dataclasses import replace
from typing import List, Optional, Tuple

from . import models
from .calibrate import auto_options
from .decode.beam_search import BeamShape
from .decode.lookup import MAX_MATCH
from .decode import LOOKUP_MIN_MATCH, SAMPLED_DRAFTS, DecodeOptions
from .errors import UsageError, finite_float, int_at_least, log
from .model.load import DTYPES
from .policy import DecodePolicy
from .decode.sampled_drafts import METHODS
from .decode.sampling import SamplingParams
from .engine import Engine, ModelFiles

REDRAFTER_FLAGS = ("beam", "beam_width", "beam_length", "lookup", "sampled_drafts", "draft_vocab")


def add_model_flags(p: argparse.ArgumentParser):
    """--model, --drafter, --dtype, --draft-vocab."""
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}: fetched and converted on first "
                   "use), an MLX model directory, a .gguf file (converted once) or a Hugging Face repo id "
                   f"(ORG/NAME, from the local Hugging Face cache); default: {models.DEFAULT}")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped drafter trained for the model, "
                   "found by its sizes and vocabulary whatever its form)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast float weights (default: the form that decodes "
                   "fastest on this device: float32 on CPUs, as stored on GPUs)")
    p.add_argument("--draft-vocab", type=int_at_least(0), help="draft only the N most frequent tokens (0: all; "
                   "default: the drafter's config; a drafter whose head holds only its draft vocabulary's rows, as "
                   "the shipped ones do, takes no other)")


def add_decoding_flags(p: argparse.ArgumentParser, *, temp_help: str = "sampling temperature (0: greedy)"):
    """--mode, --beam, --beam-width, --beam-length, --lookup, --sampled-drafts, --temp, --top-p, --top-k."""
    p.add_argument("--mode", choices=("auto", "redrafter", "ar"), default="auto",
                   help="auto: ReDrafter when a drafter fits the model (--drafter, or a shipped one), else "
                        "auto-regressive with a line saying so; redrafter: fail without one; ar: no drafter")
    p.add_argument("--beam", help="'auto': time AR and a few beam shapes on this device once (cached) and use "
                   "the fastest; or WxL, e.g. 2x4 (overrides --beam-width/--beam-length); WxL:N, greedy only: verify the "
                   "drafter's N most likely drafts of 1..L-1 tokens that its W-wide beam search scored, not the W beams")
    p.add_argument("--beam-width", type=int, help="beams (default: the named model's fastest shape measured on "
                   "this kind of device, docs/perf.md; else 1)")
    p.add_argument("--beam-length", type=int, help="tokens per beam: the LLM's own + L-1 drafts (default: "
                   "likewise; else 3)")
    p.add_argument("--lookup", type=int_at_least(0, MAX_MATCH),
                   help="greedy only: also verify a beam copied from earlier in the text where its last N or more "
                        f"tokens occur before (0: off; default: {LOOKUP_MIN_MATCH})")
    p.add_argument("--sampled-drafts", choices=METHODS,
                   help="sampling only: how the draft tree is drawn from the drafter: iid (independent beams), "
                        "rsd-c (distinct first tokens), rsd-s (stochastic beam search; without replacement, "
                        f"verified by recursive rejection sampling); default: {SAMPLED_DRAFTS}")
    p.add_argument("--temp", type=finite_float(0), default=0.0, help=temp_help)
    p.add_argument("--top-p", type=finite_float(0, 1, open_minimum=True), default=1.0, help="nucleus sampling")
    p.add_argument("--top-k", type=int_at_least(0), default=0, help="sample among the k likeliest tokens (0: all)")


def redrafter_flags(args) -> List[str]:
    """The flags of ReDrafter decoding given on the command line."""
    return [f"--{name.replace('_', '-')}" for name in REDRAFTER_FLAGS if getattr(args, name, None) is not None]


def beam_of(args, policy: DecodePolicy, *, greedy: bool = None) -> BeamShape:
    """--beam WxL, or --beam-width/--beam-length over the named model's measured shape
    (also the starting point of --beam auto) for greedy or sampled decoding (default: as
    --temp asks)."""
    if args.beam is not None and args.beam != "auto":
        return BeamShape.parse(args.beam)
    greedy = args.temp == 0 if greedy is None else greedy
    return models.beam_from_flags(args.model, args.beam_width, args.beam_length, policy, greedy=greedy)


def decode_options(args, policy: DecodePolicy, *, per_request: bool = False) -> DecodeOptions:
    """The decoding flags as DecodeOptions, checked before anything loads: flags that do not
    apply to the chosen mode or sampling are refused, not ignored. --mode auto: AR where
    sampling on this kind of device was measured faster without the drafter (unless a
    ReDrafter flag or --drafter asks for it; per_request: a server decides per request,
    ar_when_sampling), else "redrafter" until resolve_mode knows whether a drafter fits."""
    given = redrafter_flags(args)
    if args.mode == "ar" and getattr(args, "drafter", None):
        raise UsageError("--drafter is for --mode redrafter (AR decoding uses no drafter)")
    if args.mode == "ar" and given:
        raise UsageError(f"{given[0]} is for ReDrafter decoding (--mode ar drafts nothing)")
    # a server's --top-k and --top-p are the defaults of requests that sample
    refuse_unused(args.temp, lookup=args.lookup is not None, sampled_drafts=args.sampled_drafts is not None,
                  top_k=bool(args.top_k) and not per_request, top_p=args.top_p != 1 and not per_request)
    try:
        options = DecodeOptions(mode="ar" if args.mode == "ar" else "redrafter", beam=beam_of(args, policy),
                                sampling=SamplingParams(args.temp, args.top_k, args.top_p),
                                lookup=LOOKUP_MIN_MATCH if args.lookup is None else args.lookup,
                                sampled_drafts=args.sampled_drafts or SAMPLED_DRAFTS)
    except UsageError as error:
        raise UsageError(flag_words(str(error))) from None
    if not per_request and ar_when_sampling(args, policy) and not options.sampling.greedy:
        log("sampling on this kind of device: ReDrafter was measured slower than auto-regressive decoding "
            "(docs/perf.md), so decoding auto-regressively (--mode redrafter or --beam to draft anyway)")
        return replace(options, mode="ar")
    return options


def refuse_unused(temp: float, *, lookup: bool, sampled_drafts: bool, top_k: bool = False, top_p: bool = False):
    """UsageError for a flag given (True) that decoding at temperature `temp` would not use."""
    if lookup and temp > 0:
        raise UsageError("--lookup is for greedy decoding (--temp 0): sampling verifies no lookup beam")
    if sampled_drafts and temp == 0:
        raise UsageError("--sampled-drafts is for sampling (--temp > 0): greedy decoding drafts the likeliest beams")
    if (top_k or top_p) and temp == 0:
        flag = "--top-k" if top_k else "--top-p"
        raise UsageError(f"{flag} is for sampling (--temp > 0): greedy decoding takes the likeliest token")


def ar_when_sampling(args, policy: DecodePolicy) -> bool:
    """--mode auto without ReDrafter flags on a kind of device where sampled ReDrafter was
    measured slower than AR: sampled requests decode auto-regressively."""
    wants_drafter = redrafter_flags(args) or getattr(args, "drafter", None)
    return args.mode == "auto" and not wants_drafter and models.sampling_prefers_ar(policy)


def resolve_mode(args, options: DecodeOptions, model_dir, drafter_dir) -> DecodeOptions:
    """--mode auto: ReDrafter with the drafter found, else AR, saying so in one line."""
    if args.mode != "auto" or drafter_dir is not None:
        return options
    given = redrafter_flags(args)
    note = f"; {', '.join(given)} unused" if given else ""
    log(f"no shipped drafter fits {model_dir} (by its sizes and vocabulary): decoding auto-regressively "
        f"(--drafter DIR for ReDrafter){note}")
    return replace(options, mode="ar")


def open_files(args, options: DecodeOptions, policy: DecodePolicy) -> Tuple[ModelFiles, DecodeOptions]:
    """--model and --drafter opened (a named model fetched on first use), --mode auto resolved;
    decoding auto-regressively, the drafter found is dropped, else the beam and --draft-vocab
    are checked against its config. Nothing is loaded yet."""
    files = ModelFiles.open(args.model, None if args.mode == "ar" else args.drafter,
                            need_drafter=args.mode == "redrafter", policy=policy)
    options = resolve_mode(args, options, files.model_dir, files.drafter_dir)
    if options.mode == "ar":
        files.drop_drafter()
    else:
        options.beam.check(files.draft_vocab_size(args.draft_vocab))
    return files, options


def load_engine(args, files: ModelFiles, options: DecodeOptions, policy: DecodePolicy) -> Tuple[Engine, DecodeOptions]:
    """The weights of opened files loaded (--dtype, --draft-vocab), --beam auto calibrated."""
    engine = Engine.from_files(files, dtype=dtype_of(args), draft_vocab=args.draft_vocab, policy=policy)
    if args.beam == "auto" and engine.drafter is not None:
        options = auto_options(engine, options, chat_template=args.chat_template)
    return engine, options


FLAGS = {"temp": "--temp", "top_k": "--top-k", "top_p": "--top-p", "lookup": "--lookup",
         "sampled_drafts": "--sampled-drafts", "mode": "--mode"}


def flag_words(message: str) -> str:
    """A library message that names a parameter, worded with its flag."""
    head, _, rest = message.partition(" ")
    return f"{FLAGS[head]} {rest}" if head in FLAGS else message


def dtype_of(args) -> Optional[object]:
    return DTYPES[args.dtype] if args.dtype else None
