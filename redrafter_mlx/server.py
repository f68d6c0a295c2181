"""OpenAI-compatible server with ReDrafter decoding:
`python -m redrafter_mlx.server [--model NAME|DIR] [--drafter DIR] [--host 127.0.0.1] [--port 8080]`.

Serves /v1/chat/completions and /v1/completions (streamed as server-sent events or whole),
/v1/models and /health. One request decodes at a time; others wait in a bounded queue (429
when full). Loopback only unless an API key is set (--api-key or REDRAFTER_API_KEY).
"""

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from . import models
from .beam_search import BeamShape
from .decode import LOOKUP_MIN_MATCH
from .errors import ArgumentParser, HelpFormatter, UsageError, finite_float, int_at_least, log, run_cli
from .load import DTYPES

API_KEY_ENV = "REDRAFTER_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m redrafter_mlx.server", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", help=f"a model name ({', '.join(models.MODELS)}), an MLX model directory, a .gguf "
                   f"file or a Hugging Face repo id (ORG/NAME); default: {models.DEFAULT}")
    p.add_argument("--drafter", help="MLX drafter directory (default: the shipped drafter trained for the model, "
                   "found by its sizes and vocabulary)")
    p.add_argument("--served-name", help="the model name clients use (default: the model name or directory name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int_at_least(0, 65535), default=8080, help="port to bind (0: any free port)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}); "
                   "needed to bind a non-loopback address")
    p.add_argument("--mode", choices=("auto", "redrafter", "ar"), default="auto",
                   help="auto: ReDrafter when a drafter fits the model, else auto-regressive with a line saying so; "
                        "redrafter: fail without one; ar: no drafter")
    p.add_argument("--beam", help="WxL, e.g. 2x4, or 'auto' (timed once per device, cached); default: the named "
                   "model's fastest shape measured on this kind of device (docs/perf.md), else 1x3")
    p.add_argument("--lookup", type=int_at_least(0), help="greedy: the lookup beam's minimum match (0: off; "
                   f"default: {LOOKUP_MIN_MATCH})")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap chat messages in the tokenizer's chat template (when it has one)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast float weights (default: the form that decodes "
                   "fastest on this device: float32 on CPUs, as stored on GPUs)")
    p.add_argument("--max-tokens", type=int_at_least(1), default=512, help="when a request gives none (always capped to the "
                   "context window)")
    p.add_argument("--temp", type=finite_float(0), default=0.0, help="temperature when a request gives none (0: greedy)")
    p.add_argument("--max-queue", type=int_at_least(1), default=16, help="requests waiting behind the running one; more get 429")
    p.add_argument("--request-timeout", type=finite_float(0), default=300.0,
                   help="seconds a request may decode; then it ends with finish_reason 'length' (0: no limit)")
    p.add_argument("--max-body-bytes", type=int_at_least(1), default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--max-connections", type=int_at_least(1), default=256, help="open connections; more get 503")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="uvicorn's")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_args(args) -> str:
    """Refuses unsafe or impossible settings before loading anything; returns the API key
    (None: no key)."""
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and key is None:
        raise UsageError(f"--host {args.host} is not a loopback address: set an API key (--api-key or "
                         f"${API_KEY_ENV}) to serve it")
    if args.beam not in (None, "auto"):
        BeamShape.parse(args.beam)
    given = [flag for flag, value in (("--beam", args.beam), ("--lookup", args.lookup)) if value is not None]
    if args.mode == "ar" and (given or args.drafter):
        raise UsageError(f"{(given or ['--drafter'])[0]} is for ReDrafter decoding (--mode ar drafts nothing)")
    args.lookup = LOOKUP_MIN_MATCH if args.lookup is None else args.lookup
    return key


def load_engine(args):
    """(Engine, served name, created): the model, drafter and tokenizer as the command line loads
    them; created: the time its config.json was written (unix seconds, for /v1/models)."""
    import mlx.core as mx

    from .calibrate import auto_beam
    from .load import load_drafter, load_model, load_tokenizer
    from .policy import DecodePolicy
    from .sampling import SamplingParams
    from .server_worker import Engine
    from .text import encode_prompt

    policy = DecodePolicy.for_device()
    model_dir, drafter_dir = models.resolve(args.model, args.drafter, need_drafter=args.mode == "redrafter",
                                            policy=policy)
    redrafter = args.mode != "ar" and drafter_dir is not None
    if args.mode == "auto" and not redrafter:
        log(f"no shipped drafter fits {model_dir} (by its sizes and vocabulary): serving it auto-regressively "
            "(--drafter DIR for ReDrafter)")
    mx.random.seed(0)
    dtype = DTYPES[args.dtype] if args.dtype else None
    model = load_model(model_dir, dtype, policy=policy)
    drafter = load_drafter(drafter_dir, model, dtype, policy=policy) if redrafter else None
    tokenizer = load_tokenizer(model_dir, model.config.eos_ids)
    beam = BeamShape.parse(args.beam) if args.beam not in (None, "auto") else models.default_beam(args.model, policy)
    if args.beam == "auto" and drafter is not None:
        beam = auto_beam(model, drafter, lambda text: encode_prompt(tokenizer, text, args.chat_template),
                         model_dir, drafter_dir, policy=policy, sampling=SamplingParams(args.temp), measured=beam)
    if drafter is not None:
        beam.check(drafter.draft_vocab_size)
    engine = Engine(model=model, tokenizer=tokenizer, drafter=drafter, beam=beam, lookup=args.lookup, policy=policy)
    name = args.model or models.DEFAULT
    served = args.served_name or (Path(name).name if Path(name).exists() else name)  # a path: its last part
    return engine, served, int((Path(model_dir) / "config.json").stat().st_mtime)


def serve(args):
    key = check_args(args)
    try:
        import uvicorn

        from .server_app import Settings, create_app
    except ImportError as error:
        raise UsageError(f"the server needs its extra dependencies ({error.name} is missing): "
                         f'pip install -e ".[server]" (in the repository)') from None
    from .server_worker import Worker

    engine, served, created = load_engine(args)
    worker = Worker(engine, max_queue=args.max_queue, time_limit=args.request_timeout)
    settings = Settings(served=served, context=engine.model.config.max_position_embeddings,
                        max_tokens=args.max_tokens, temp=args.temp, max_body=args.max_body_bytes, api_key=key,
                        chat_template=args.chat_template, local_only=key is None, created=created)
    worker.start()
    mode = f"ReDrafter {engine.beam}" if engine.drafter is not None else "auto-regressive"
    print(f"redrafter_mlx: serving {served!r} ({mode}); {'API key required' if key else 'no API key: local only'}",
          file=sys.stderr)
    uvicorn.run(create_app(worker, settings), host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=args.max_connections, timeout_graceful_shutdown=5)


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: serve(args))


if __name__ == "__main__":
    main()
