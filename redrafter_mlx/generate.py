"""Command line: `python -m redrafter_mlx.generate --model DIR --drafter DIR --prompt TEXT`."""

import argparse
import sys

import mlx.core as mx

from . import default_model
from .calibrate import auto_beam
from .config import ConfigError
from .decode import generate_ar, generate_redrafter
from .load import DTYPES, LoadError, load_drafter, load_model, load_tokenizer
from .pypi_file import FetchError
from .sampling import SamplingParams
from .stats import Stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.generate", description=__doc__)
    p.add_argument("--model", help="MLX model directory (see `python -m convert`); default: SmolLM2-135M-Instruct, "
                   "fetched and converted on first use")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped one, for the default model)")
    p.add_argument("--prompt", help="prompt text; '-' reads stdin; omitted: stdin if piped, else chat")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--beam", help="'auto': time a few beam shapes on this device once (cached) and use the "
                   "fastest; or WxL, e.g. 2x4 (overrides --beam-width/--beam-length)")
    p.add_argument("--beam-width", type=int, default=1, help="beams (default: best measured on CPU, docs/perf.md)")
    p.add_argument("--beam-length", type=int, default=3, help="tokens per beam: the LLM's own + L-1 drafts")
    p.add_argument("--lookup", type=int, help="greedy only: also verify a beam copied from earlier in the text "
                   "where its last N or more tokens occur before (0: off; default: 2)")
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


def encode(tokenizer, messages, use_template: bool):
    if use_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return tokenizer.encode(messages[-1]["content"])


def detokenize(chunks, detokenizer, eos_ids):
    """Feeds each chunk's non-EOS tokens to a streaming detokenizer, yields the chunk after
    each, and finalizes the detokenizer when the chunks run out."""
    detokenizer.reset()
    for chunk in chunks:
        for token in chunk:
            if token not in eos_ids:
                detokenizer.add_token(token)
        yield chunk
    detokenizer.finalize()


def stream(args, model, drafter, tokenizer, prompt_tokens, params) -> str:
    """Generates, printing text as it is accepted; returns the text."""
    stats = Stats(profile=args.profile)
    eos = set(tokenizer.eos_token_ids)
    if args.mode == "ar":
        chunks = generate_ar(model, prompt_tokens, args.max_tokens, params, eos, stats)
    else:
        chunks = generate_redrafter(model, drafter, prompt_tokens, args.max_tokens, args.beam_width,
                                    args.beam_length, eos, stats, params=params, lookup=args.lookup)
    detokenizer = tokenizer.detokenizer
    for _ in detokenize(chunks, detokenizer, eos):
        print(detokenizer.last_segment, end="", flush=True)
    print(detokenizer.last_segment, flush=True)
    if args.verbose:
        print("=" * 10, file=sys.stderr)
        print(stats.summary(), file=sys.stderr)
    return detokenizer.text


def chat(args, model, drafter, tokenizer, params):
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
        reply = stream(args, model, drafter, tokenizer, encode(tokenizer, messages, args.chat_template), params)
        messages.append({"role": "assistant", "content": reply})


def parse_beam(text: str):
    """'WxL' -> (W, L)."""
    try:
        width, length = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--beam must be 'auto' or WIDTHxLENGTH like 2x4, got {text!r}") from None
    return width, length


def calibrated_beam(args, model, drafter, tokenizer):
    def encode_prompt(text):
        return encode(tokenizer, [{"role": "user", "content": text}], args.chat_template)
    return auto_beam(model, drafter, encode_prompt, args.model, args.drafter)


def run(args):
    params = SamplingParams(args.temp, args.top_k, args.top_p)
    if args.model is None:
        args.model = default_model.ensure_default_model()
        args.drafter = args.drafter or default_model.DRAFTER
    if args.mode == "redrafter" and not args.drafter:
        raise ValueError("--mode redrafter needs --drafter DIR (or use --mode ar)")
    if args.beam and args.beam != "auto":
        args.beam_width, args.beam_length = parse_beam(args.beam)
    mx.random.seed(args.seed)
    dtype = DTYPES[args.dtype] if args.dtype else None
    model = load_model(args.model, dtype)
    drafter = load_drafter(args.drafter, model, dtype, args.draft_vocab) if args.mode == "redrafter" else None
    tokenizer = load_tokenizer(args.model, model.config.eos_ids)
    if args.beam == "auto" and drafter is not None:
        args.beam_width, args.beam_length = calibrated_beam(args, model, drafter, tokenizer)
    prompt = args.prompt
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = sys.stdin.read()
    if prompt is None:
        return chat(args, model, drafter, tokenizer, params)
    messages = [{"role": "user", "content": prompt}]
    stream(args, model, drafter, tokenizer, encode(tokenizer, messages, args.chat_template), params)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (LoadError, ConfigError, ValueError, FetchError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
