"""Command line: `python -m redrafter_mlx.generate --model DIR --drafter DIR --prompt TEXT`."""

import argparse
import sys
import time

import mlx.core as mx

from . import models
from .beam_search import BeamShape
from .calibrate import auto_beam
from .config import ConfigError
from .decode import LOOKUP_MIN_MATCH, SAMPLED_DRAFTS, generate_ar, generate_redrafter, max_tokens_in_window
from .errors import MAX_SEED, ArgumentParser, HelpFormatter, UsageError, finite_float, int_at_least, log, run_cli
from .load import (DTYPES, LoadError, load_drafter, load_model, load_tokenizer, read_drafter_config,
                   read_model_config)
from .policy import DecodePolicy
from .sampled_drafts import METHODS
from .sampling import SamplingParams
from .stats import Stats
from .text import check_text, decode_text, detokenize, encode_messages, encode_prompt

PROGRESS_MIN_TOKENS = 1000  # longer prompts show the prefill's progress on a terminal
WARM_UP_TOKENS = 4  # generated once before the first timed generation on fixed-shape policies (GPUs)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m redrafter_mlx.generate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}: fetched and converted on first "
                   "use), an MLX model directory, a .gguf file (converted once) or a Hugging Face repo id "
                   f"(ORG/NAME, from the local Hugging Face cache); default: {models.DEFAULT}")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped drafter trained for the model, "
                   "found by its sizes and vocabulary whatever its form)")
    p.add_argument("--prompt", help="prompt text; '-' reads stdin; omitted: stdin if piped, else chat")
    p.add_argument("--max-tokens", type=int_at_least(1), default=256,
                   help="at most this many tokens (also cut to the room left in the model's context window)")
    p.add_argument("--temp", type=finite_float(0), default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=finite_float(0, 1, open_minimum=True), default=1.0, help="nucleus sampling")
    p.add_argument("--top-k", type=int_at_least(0), default=0, help="sample among the k likeliest tokens (0: all)")
    p.add_argument("--beam", help="'auto': time a few beam shapes on this device once (cached) and use the "
                   "fastest; or WxL, e.g. 2x4 (overrides --beam-width/--beam-length)")
    p.add_argument("--beam-width", type=int, help="beams (default: the named model's fastest shape measured on "
                   "this kind of device, docs/perf.md; else 1)")
    p.add_argument("--beam-length", type=int, help="tokens per beam: the LLM's own + L-1 drafts (default: "
                   "likewise; else 3)")
    p.add_argument("--lookup", type=int_at_least(0),
                   help="greedy only: also verify a beam copied from earlier in the text where its last N or more "
                        f"tokens occur before (0: off; default: {LOOKUP_MIN_MATCH})")
    p.add_argument("--sampled-drafts", choices=METHODS,
                   help="sampling only: how the draft tree is drawn from the drafter: iid (independent beams), "
                        "rsd-c (distinct first tokens), rsd-s (stochastic beam search; without replacement, "
                        f"verified by recursive rejection sampling); default: {SAMPLED_DRAFTS}")
    p.add_argument("--draft-vocab", type=int_at_least(0), help="draft only the N most frequent tokens (0: all; "
                   "default: the drafter's config)")
    p.add_argument("--mode", choices=("auto", "redrafter", "ar"), default="auto",
                   help="auto: ReDrafter when a drafter fits the model (--drafter, or a shipped one), else "
                        "auto-regressive with a line saying so; redrafter: fail without one; ar: no drafter")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap the prompt in the tokenizer's chat template (default on when it has one)")
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="random seed of sampling")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast float weights (default: the form that decodes "
                   "fastest on this device: float32 on CPUs, as stored on GPUs)")
    p.add_argument("--profile", action="store_true",
                   help="time tree packing, the step (verify, accept, draft) and the commit (adds device syncs)")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True, help="print statistics")
    return p


def read_prompt(args):
    """The prompt text: --prompt, or stdin ('-', or piped without --prompt; its trailing line
    breaks dropped, as `echo` adds one); None for the interactive chat."""
    if args.prompt == "-" or (args.prompt is None and not sys.stdin.isatty()):
        stdin = getattr(sys.stdin, "buffer", None)
        prompt = decode_text(stdin.read(), "stdin") if stdin is not None else sys.stdin.read()
        return check_text(prompt.rstrip("\r\n"), "stdin")
    return None if args.prompt is None else check_text(args.prompt, "--prompt")


REDRAFTER_FLAGS = ("beam", "beam_width", "beam_length", "lookup", "sampled_drafts", "draft_vocab")


def redrafter_flags(args) -> list:
    """The flags of ReDrafter decoding given on the command line."""
    return [f"--{name.replace('_', '-')}" for name in REDRAFTER_FLAGS if getattr(args, name) is not None]


def check_args(args):
    """Checks the flags that need no file, before anything is loaded: flags that do not apply
    to the chosen mode or sampling are refused, not ignored."""
    args.sampling = SamplingParams(args.temp, args.top_k, args.top_p)
    args.redrafter_flags = redrafter_flags(args)  # before the defaults fill them in
    if args.mode == "ar" and args.drafter:
        raise UsageError("--drafter is for --mode redrafter (AR decoding uses no drafter)")
    if args.mode == "ar" and args.redrafter_flags:
        raise UsageError(f"{args.redrafter_flags[0]} is for ReDrafter decoding (--mode ar drafts nothing)")
    if args.lookup is not None and args.temp > 0:
        raise UsageError("--lookup is for greedy decoding (--temp 0): sampling verifies no lookup beam")
    if args.sampled_drafts is not None and args.temp == 0:
        raise UsageError("--sampled-drafts is for sampling (--temp > 0): greedy decoding drafts the likeliest beams")
    args.lookup = LOOKUP_MIN_MATCH if args.lookup is None else args.lookup
    args.sampled_drafts = args.sampled_drafts or SAMPLED_DRAFTS
    if args.beam is not None and args.beam != "auto":
        args.beam_shape = BeamShape.parse(args.beam)
    else:
        args.beam_shape = models.beam_from_flags(args.model, args.beam_width, args.beam_length, args.policy)


def choose_mode(args, model_dir, drafter_dir):
    """--mode auto: ReDrafter with the drafter found, else AR, saying so in one line."""
    if args.mode != "auto":
        return
    args.mode = "redrafter" if drafter_dir is not None else "ar"
    if drafter_dir is None:
        note = f"; {', '.join(args.redrafter_flags)} unused" if args.redrafter_flags else ""
        log(f"no shipped drafter fits {model_dir} (by its sizes and vocabulary): decoding auto-regressively "
            f"(--drafter DIR for ReDrafter){note}")


def generator(args, model, drafter, prompt_tokens, max_tokens: int, stats: Stats, progress=None):
    options = dict(max_tokens=max_tokens, sampling=args.sampling, eos_ids=set(args.eos), policy=args.policy,
                   stats=stats, progress=progress)
    if args.mode == "ar":
        return generate_ar(model, prompt_tokens, **options)
    return generate_redrafter(model, drafter, prompt_tokens, beam=args.beam_shape, lookup=args.lookup,
                              sampled_drafts=args.sampled_drafts, **options)


def warm_up(args, model, drafter, prompt_tokens):
    """On fixed-shape policies (GPUs) the first generation compiles kernels for each shape it
    meets (~2 tokens/s for a first run on an H200, 150-270 warm): before the first timed
    generation, a few tokens of the same request (same beam shape, same prompt-length
    bucket) compile most of them, timed apart. Later cache capacities still compile within
    the timed generation. The random state is seeded again after it, so sampling draws as
    without it."""
    if not args.policy.fixed_shapes or args.warmed_up:
        return
    args.warmed_up = True
    start = time.perf_counter()
    for _ in generator(args, model, drafter, prompt_tokens, WARM_UP_TOKENS, Stats()):
        pass
    mx.random.seed(args.seed)
    if args.verbose:
        print(f"Warm-up (kernel compilation): {time.perf_counter() - start:.2f} s", file=sys.stderr)


class PrefillBar:
    """progress(done, total) for the decode loops: a tqdm bar on a terminal's stderr for long
    prompts (closed once the prefill is done); nothing otherwise (no carriage returns in logs)."""

    def __init__(self, prompt_length: int):
        self.bar = None
        if sys.stderr.isatty() and prompt_length > PROGRESS_MIN_TOKENS:
            from tqdm import tqdm

            self.bar = tqdm(total=prompt_length, desc="prefill", unit="tok", file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int):
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def stream(args, model, drafter, tokenizer, prompt_tokens, interruptible: bool = False) -> str:
    """Generates, printing text as it is accepted; returns the text. interruptible: Ctrl-C
    stops this reply (returning its text so far) instead of the program."""
    window = model.config.max_position_embeddings
    max_tokens = max_tokens_in_window(len(prompt_tokens), args.max_tokens, window)
    warm_up(args, model, drafter, prompt_tokens)
    stats = Stats(profile=args.profile)
    detokenizer = tokenizer.detokenizer
    progress = PrefillBar(len(prompt_tokens))
    try:
        last = [None]
        for last in detokenize(generator(args, model, drafter, prompt_tokens, max_tokens, stats, progress),
                               detokenizer, set(args.eos)):
            print(detokenizer.last_segment, end="", flush=True)
        print(detokenizer.last_segment, flush=True)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        print(flush=True)
        print("[stopped]", file=sys.stderr)
    else:
        if stats.generated_tokens == max_tokens and last[-1] not in args.eos:
            if max_tokens < args.max_tokens:
                log(f"stopped after {max_tokens} tokens: the prompt's {len(prompt_tokens)} tokens left no more room "
                    f"in the model's context window of {window} (--max-tokens {args.max_tokens})")
            else:
                log(f"stopped at --max-tokens {max_tokens}: the reply may be cut short")
    finally:
        progress.close()
    if args.verbose:
        print("=" * 10, file=sys.stderr)
        print(stats.summary(), file=sys.stderr)
    return detokenizer.text


def chat(args, model, drafter, tokenizer):
    """Interactive chat: Ctrl-C during a reply stops it and keeps the conversation; an empty
    line, Ctrl-D or Ctrl-C at the prompt quits."""
    messages = []
    print("Chat: type a message; an empty line, Ctrl-D or Ctrl-C quits; Ctrl-C during a reply stops it.",
          file=sys.stderr)
    while True:
        try:
            text = input(">> ")
        except (EOFError, KeyboardInterrupt):
            print(flush=True)
            return
        if not text.strip():
            return
        messages.append({"role": "user", "content": text})
        try:
            tokens = encode_messages(tokenizer, messages, args.chat_template)
            reply = stream(args, model, drafter, tokenizer, tokens, interruptible=True)
        except UsageError as error:  # e.g. a conversation grown past the context window
            print(f"error: {error}", file=sys.stderr)
            messages.pop()
            continue
        except KeyboardInterrupt:  # outside the reply's loop (encoding, warm-up)
            print("\n[stopped]", file=sys.stderr)
            messages.pop()
            continue
        if reply:
            messages.append({"role": "assistant", "content": reply})
        else:
            messages.pop()


def run(args):
    args.policy = DecodePolicy.for_device()
    check_args(args)
    args.warmed_up = False
    models.check_paths(args.model, args.drafter, need_drafter=args.mode == "redrafter")
    prompt = read_prompt(args)  # before a named model is fetched
    model_dir, drafter_dir = models.resolve(args.model, args.drafter, need_drafter=args.mode == "redrafter",
                                            policy=args.policy)
    choose_mode(args, model_dir, drafter_dir)
    redrafter = args.mode == "redrafter"
    config = read_model_config(model_dir)
    if redrafter:  # checked before any weights load
        drafter_config = read_drafter_config(drafter_dir)
        try:
            drafter_config.check_matches(config)
        except ConfigError as error:
            raise LoadError(f"{drafter_dir}: does not fit the model: {error}") from None
        draft_vocab = drafter_config.draft_vocab_size if args.draft_vocab is None else args.draft_vocab
        args.beam_shape.check(draft_vocab or drafter_config.vocab_size)
    tokenizer = load_tokenizer(model_dir, config.eos_ids)
    args.eos = tokenizer.eos_token_ids
    prompt_tokens = None
    if prompt is not None:
        prompt_tokens = encode_prompt(tokenizer, prompt, args.chat_template)
        max_tokens_in_window(len(prompt_tokens), args.max_tokens, config.max_position_embeddings)
    dtype = DTYPES[args.dtype] if args.dtype else None
    model = load_model(model_dir, dtype, policy=args.policy)
    drafter = load_drafter(drafter_dir, model, dtype, args.draft_vocab, policy=args.policy) if redrafter else None
    if args.beam == "auto" and drafter is not None:
        args.beam_shape = auto_beam(model, drafter, lambda text: encode_prompt(tokenizer, text, args.chat_template),
                                    model_dir, drafter_dir, policy=args.policy, sampling=args.sampling,
                                    measured=args.beam_shape)
    mx.random.seed(args.seed)
    if prompt_tokens is None:
        return chat(args, model, drafter, tokenizer)
    stream(args, model, drafter, tokenizer, prompt_tokens)


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
