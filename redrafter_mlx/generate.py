"""Command line: `python -m redrafter_mlx.generate --model NAME|DIR --prompt TEXT`."""

import argparse
import sys
from dataclasses import dataclass
from typing import List

import mlx.core as mx

from . import models
from .decode import DecodeOptions
from .engine import Engine
from .errors import MAX_SEED, ArgumentParser, HelpFormatter, UsageError, int_at_least, log, run_cli
from .flags import add_decoding_flags, add_model_flags, decode_options, load_engine, open_files
from .policy import DecodePolicy
from .decode.stats import Stats
from .text import check_text, decode_text, detokenize


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m redrafter_mlx.generate", description=__doc__, formatter_class=HelpFormatter)
    add_model_flags(p)
    p.add_argument("--prompt", help="prompt text; '-' reads stdin; omitted: stdin if piped, else chat")
    p.add_argument("--max-tokens", type=int_at_least(1), default=256,
                   help="at most this many tokens (also cut to the room left in the model's context window)")
    add_decoding_flags(p)
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap the prompt in the tokenizer's chat template (default on when it has one)")
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="random seed of sampling")
    p.add_argument("--profile", action="store_true",
                   help="CPUs (packed steps): time tree packing, the step (verify, accept, draft) and the commit (adds "
                        "syncs); GPU steps are one device function and have no phases")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True, help="print statistics")
    return p


PROGRESS_MIN_TOKENS = 1000  # longer prompts show the prefill's progress on a terminal


@dataclass(frozen=True)
class Settings:
    """The command line's flags, parsed once."""

    options: DecodeOptions
    max_tokens: int
    chat_template: bool
    profile: bool
    verbose: bool


def read_prompt(args):
    """The prompt text: --prompt, or stdin ('-', or piped without --prompt; its trailing line
    breaks dropped, as `echo` adds one); None for the interactive chat."""
    if args.prompt == "-" or (args.prompt is None and not sys.stdin.isatty()):
        stdin = getattr(sys.stdin, "buffer", None)
        prompt = decode_text(stdin.read(), "stdin") if stdin is not None else sys.stdin.read()
        return check_text(prompt.rstrip("\r\n"), "stdin")
    return None if args.prompt is None else check_text(args.prompt, "--prompt")


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


def stream(engine: Engine, settings: Settings, prompt_tokens, interruptible: bool = False) -> str:
    """Generates, printing text as it is accepted; returns the text. interruptible: Ctrl-C
    stops this reply (returning its text so far) instead of the program."""
    window = engine.model.config.context_window
    max_tokens = engine.check(prompt_tokens, settings.max_tokens, settings.options)
    seconds = engine.warm_up(prompt_tokens, settings.options)
    if seconds is not None and settings.verbose:
        print(f"Warm-up (kernel compilation): {seconds:.2f} s", file=sys.stderr)
    stats = Stats(profile=settings.profile)
    detokenizer = engine.tokenizer.detokenizer
    eos = engine.eos_ids
    progress = PrefillBar(len(prompt_tokens))
    try:
        last = [None]
        chunks = engine.generate(prompt_tokens, max_tokens=max_tokens, options=settings.options, stats=stats,
                                 progress=progress)
        for last in detokenize(chunks, detokenizer, eos):
            print(detokenizer.last_segment, end="", flush=True)
        print(detokenizer.last_segment, flush=True)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        print(flush=True)
        print("[stopped]", file=sys.stderr)
    else:
        if stats.generated_tokens == max_tokens and last[-1] not in eos:
            if max_tokens < settings.max_tokens:
                log(f"stopped after {max_tokens} tokens: the prompt's {len(prompt_tokens)} tokens left no more room "
                    f"in the model's context window of {window} (--max-tokens {settings.max_tokens})")
            else:
                log(f"stopped at --max-tokens {max_tokens}: the reply may be cut short")
    finally:
        progress.close()
    if settings.verbose:
        print("=" * 10, file=sys.stderr)
        print(stats.summary(), file=sys.stderr)
    return detokenizer.text


def fitting_conversation(engine: Engine, messages: List[dict], settings: Settings) -> List[int]:
    """The conversation's prompt tokens, its oldest exchanges dropped from `messages` (saying
    so on stderr) while they leave no room for a reply of --max-tokens in the context window.
    A last message too long alone drops nothing (the request's check refuses it)."""
    window = engine.model.config.context_window
    tokens = engine.encode_messages(messages, settings.chat_template)
    if len(engine.encode_messages(messages[-1:], settings.chat_template)) >= window:
        return tokens
    dropped = 0
    while len(tokens) + settings.max_tokens > window and len(messages) > 2:
        del messages[:2]  # a message and its reply
        dropped += 2
        tokens = engine.encode_messages(messages, settings.chat_template)
    if dropped:
        print(f"[{dropped} earlier messages dropped: the conversation outgrew the context window of {window} "
              "tokens]", file=sys.stderr)
    return tokens


def chat(engine: Engine, settings: Settings):
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
            tokens = fitting_conversation(engine, messages, settings)
            reply = stream(engine, settings, tokens, interruptible=True)
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
    policy = DecodePolicy.for_device()
    options = decode_options(args, policy)  # the flags, before anything loads
    models.check_paths(args.model, args.drafter, need_drafter=args.mode == "redrafter")
    prompt = read_prompt(args)  # before a named model is fetched
    files, options = open_files(args, options, policy)
    prompt_tokens = None
    if prompt is not None:
        prompt_tokens = files.encode(prompt, args.chat_template)
        files.check(prompt_tokens, args.max_tokens, options, args.draft_vocab)
    engine, options = load_engine(args, files, options, policy)
    settings = Settings(options, args.max_tokens, args.chat_template, args.profile, args.verbose)
    mx.random.seed(args.seed)
    if prompt_tokens is None:
        return chat(engine, settings)
    stream(engine, settings, prompt_tokens)


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
