"""OpenAI-compatible server with ReDrafter decoding:
`python -m redrafter_mlx.server [--model NAME|DIR] [--drafter DIR] [--host 127.0.0.1] [--port 8080]`.

Serves /v1/chat/completions and /v1/completions (streamed as server-sent events or whole),
/v1/models and /health. One request decodes at a time; others wait in a bounded queue (429
when full). Loopback only unless an API key is set (--api-key or REDRAFTER_API_KEY).
"""

import argparse
import ipaddress
import os
import re
import socket
import sys
from dataclasses import replace
from pathlib import Path

from . import models
from .errors import ArgumentParser, HelpFormatter, UsageError, finite_float, int_at_least, run_cli
from .flags import (add_decoding_flags, add_model_flags, ar_when_sampling, beam_of, decode_options, load_engine,
                    open_files)
from .policy import DecodePolicy

API_KEY_ENV = "REDRAFTER_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m redrafter_mlx.server", description=__doc__, formatter_class=HelpFormatter)
    add_model_flags(p)
    p.add_argument("--served-name", help="the model name clients use (default: the model name or directory name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int_at_least(0, 65535), default=8080, help="port to bind (0: any free port)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}); "
                   "needed to bind a non-loopback address")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a site whose web pages may call the API (e.g. http://localhost:3000; repeatable): its "
                   "requests get CORS headers; other sites' requests get 403")
    add_decoding_flags(p, temp_help="temperature when a request gives none (0: greedy)")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap chat messages in the tokenizer's chat template (when it has one)")
    p.add_argument("--content-special-tokens", action="store_true",
                   help="encode special tokens written in chat messages ('<|im_end|>') as control tokens, not as "
                   "text (lets a client end its turn and open a system turn)")
    p.add_argument("--max-tokens", type=int_at_least(1), default=512, help="when a request gives none (always capped to the "
                   "context window)")
    p.add_argument("--max-queue", type=int_at_least(1), default=16, help="requests waiting behind the running one; more get 429")
    p.add_argument("--max-prompt-tokens", type=int_at_least(1),
                   help="longer prompts get 400 (default: the model's context window)")
    p.add_argument("--prefill-chunk", type=int_at_least(1), default=64,
                   help="prompt tokens per forward pass: a cancelled or timed-out request stops after the chunk "
                   "running (larger: fewer passes)")
    p.add_argument("--request-timeout", type=finite_float(0), default=300.0,
                   help="seconds a request may run, its prompt included; then it ends with finish_reason "
                   "'length' (0: no limit)")
    p.add_argument("--max-body-bytes", type=int_at_least(1), default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--max-connections", type=int_at_least(1), default=256,
                   help="open connections; past it a new one closes the longest-silent idle one, and gets 503 "
                   "only when all wait for answers")
    p.add_argument("--read-timeout", type=finite_float(0, open_minimum=True), default=10.0,
                   help="seconds a request (headers and body) may take to arrive; then its connection is closed")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="uvicorn's")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


SHUTDOWN_SECONDS = 10  # at most, for the running request or the warm-up to stop at exit


def check_port(host: str, port: int):
    """UsageError when host:port cannot be bound (in use, or not an address of this machine),
    before the model loads."""
    if port == 0:
        return
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as error:
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror})") from None


def check_args(args) -> str:
    """Refuses unsafe or impossible settings before loading anything; returns the API key
    (None: no key). An IPv6 address in brackets ('[::1]', as URLs write it) is bound without them."""
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if key is not None and key != key.strip():
        source = "--api-key" if args.api_key else f"${API_KEY_ENV}"
        raise UsageError(f"{source} starts or ends with white space, which clients' Authorization headers "
                         "cannot hold: remove it")
    if args.host.startswith("[") and args.host.endswith("]"):
        args.host = args.host[1:-1]
    if not is_loopback(args.host) and key is None:
        raise UsageError(f"--host {args.host} is not a loopback address: set an API key (--api-key or "
                         f"${API_KEY_ENV}) to serve it")
    for origin in args.allow_origin:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise UsageError(f"--allow-origin {origin}: expected an origin such as http://localhost:3000 (a scheme "
                             "and a host, no path)")
    return key


def load_served(args, options):
    """(Engine, DecodeOptions, served name, created): the model, drafter and tokenizer as the
    command line loads them, the decoding options (--mode auto resolved, --beam auto
    calibrated), and when the model's config.json was written (unix seconds, /v1/models)."""
    import mlx.core as mx

    policy = replace(DecodePolicy.for_device(), prefill_chunk=args.prefill_chunk)
    files, options = open_files(args, options, policy)
    mx.random.seed(0)
    engine, options = load_engine(args, files, options, policy)
    engine.check([0], 1, options)
    return engine, options, served_name(args), int((files.model_dir / "config.json").stat().st_mtime)


def served_name(args) -> str:
    """--served-name, else --model's name, or the last part of its path ('.': the directory's)."""
    name = args.model or models.DEFAULT
    return args.served_name or (Path(os.path.abspath(name)).name if Path(name).exists() else name)  # links kept


def serve(args):
    key = check_args(args)
    options = decode_options(args, DecodePolicy.for_device(), per_request=True)
    check_port(args.host, args.port)  # the flags first, then the port, before the model loads
    try:
        import uvicorn

        from .serving.app import Settings, create_app
        from .serving.connections import limited_protocol
    except ImportError as error:
        raise UsageError(f"the server needs its extra dependencies ({error.name} is missing): "
                         f'pip install -e ".[server]" (in the repository)') from None
    from .serving.worker import Worker

    engine, options, served, created = load_served(args, options)
    greedy = options.sampling.greedy  # the other kind of request decodes with the beam measured for it
    worker = Worker(engine, options, max_queue=args.max_queue, time_limit=args.request_timeout,
                    ar_when_sampling=ar_when_sampling(args, engine.policy),
                    greedy_beam=None if greedy else beam_of(args, engine.policy, greedy=True),
                    sampled_beam=beam_of(args, engine.policy, greedy=False) if greedy else None)
    settings = Settings(served=served, context=engine.model.config.context_window,
                        max_tokens=args.max_tokens, temp=args.temp, top_k=args.top_k, top_p=args.top_p,
                        max_body=args.max_body_bytes, api_key=key,
                        max_prompt_tokens=args.max_prompt_tokens,
                        chat_template=args.chat_template, content_as_text=not args.content_special_tokens,
                        local_only=key is None, allow_origins=tuple(args.allow_origin), created=created)
    worker.start()
    mode = f"ReDrafter {options.beam}" if options.mode == "redrafter" else "auto-regressive"
    print(f"redrafter_mlx: serving {served!r} ({mode}); {'API key required' if key else 'no API key: local only'}",
          file=sys.stderr)
    http = limited_protocol(read_timeout=args.read_timeout, max_connections=args.max_connections)
    status = 0
    try:
        uvicorn.run(create_app(worker, settings), host=args.host, port=args.port, log_level=args.log_level,
                    http=http, timeout_graceful_shutdown=5)
    except SystemExit as stopped:  # uvicorn could not start (it said why)
        status = stopped.code if isinstance(stopped.code, int) else 1
    exit_after(worker, status)


def exit_after(worker, status: int):
    """Ends the process once the generation thread is idle, without the interpreter's
    shutdown: MLX aborts a process whose threads that ran MLX work end before it or are busy
    while it ends ("terminate called without an active exception")."""
    worker.stop()
    worker.wait_idle(SHUTDOWN_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_cli(lambda: serve(args))


if __name__ == "__main__":
    main()
