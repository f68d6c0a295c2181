"""The server's HTTP side (Starlette): routes, the API key, body limits, errors as JSON,
and no requests from other sites' pages: a request whose Origin is not the server's own
gets 403 unless --allow-origin lists it (those get CORS headers), and request bodies must be
application/json (415 otherwise: a browser sends text/plain across sites without asking).

Each completion request is checked and encoded here, then queued for the generation thread
(worker.py); its text comes back step by step, streamed as server-sent events or
gathered into one response. A client that goes away cancels its request.
"""

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .openai_api import (ApiError, GenerationRequest, completion, chunk, error_body, final_chunks, new_id,
                         parse_json, parse_request, sse)
from ..decode.sampling import SamplingError, SamplingParams
from .worker import Job, QueueFull, Worker
from ..text import encode_messages

log = logging.getLogger("redrafter_mlx.server")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Settings:
    served: str  # the model name clients ask for
    context: int  # the model's context window: prompt + completion tokens
    max_tokens: int = 512  # when a request gives none
    temp: float = 0.0  # when a request gives none (so are top_k and top_p)
    top_k: int = 0
    top_p: float = 1.0
    max_body: int = 1 << 20  # bytes
    max_prompt_tokens: Optional[int] = None  # None: the context window
    api_key: Optional[str] = None
    chat_template: bool = True
    content_as_text: bool = True  # special tokens' text in chat messages encoded as text (text.encode_messages)
    local_only: bool = True  # no API key and a loopback address: only local Host headers (DNS rebinding)
    allow_origins: Tuple[str, ...] = ()  # other sites whose pages may call the API (CORS)
    created: int = field(default_factory=lambda: int(time.time()))  # /v1/models: when the model was made (unix s)


class Api:
    def __init__(self, worker: Worker, settings: Settings):
        self.worker, self.settings = worker, settings
        self.tokenizer = worker.engine.tokenizer
        self.vocab = worker.engine.model.config.vocab_size
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="redrafter-encode")  # off the event loop

    def authorize(self, request: Request):
        """401 without the API key (compared in constant time); with no key, Host must be local."""
        key = self.settings.api_key
        if key is None:
            return self.check_host(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())):
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")

    def check_host(self, request: Request):
        """Without an API key the server is local: a page that a browser loaded from elsewhere
        must not reach it through a name that resolves to 127.0.0.1 (DNS rebinding)."""
        if self.settings.local_only and _host(request.headers.get("host", "")) not in LOCAL_HOSTS:
            raise ApiError(400, "this server only answers requests addressed to localhost", code="invalid_host")

    async def health(self, request: Request):
        """No API key needed (for probes)."""
        self.check_host(request)
        return JSONResponse(self.worker.health())

    async def models(self, request: Request):
        self.authorize(request)
        entry = {"id": self.settings.served, "object": "model", "created": self.settings.created,
                 "owned_by": "redrafter_mlx"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat(self, request: Request):
        return await self.generate(request, chat=True)

    async def text(self, request: Request):
        return await self.generate(request, chat=False)

    async def generate(self, request: Request, chat: bool):
        self.authorize(request)
        check_json(request)
        body = parse_json(await read_body(request, self.settings.max_body))
        req = parse_request(body, chat=chat, served=self.settings.served)
        job = await self.job(req)
        try:
            self.worker.submit(job)
        except QueueFull:
            raise ApiError(429, "the server is busy: its queue is full, retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(self.worker.retry_after())}) from None
        request_id = new_id(chat)
        if req.stream:
            return JobStream(self.stream(request_id, req, job), job)
        return await self.whole(request, request_id, req, job)

    async def job(self, req: GenerationRequest) -> Job:
        loop = asyncio.get_running_loop()
        prompt = await loop.run_in_executor(self.encoder, self.encode, req)
        limit = self.settings.max_prompt_tokens
        if limit is not None and len(prompt) > limit:
            raise ApiError(400, f"the prompt has {len(prompt)} tokens; this server accepts at most {limit}",
                           param="messages" if req.chat else "prompt", code="prompt_too_long")
        room = self.settings.context - len(prompt)
        if room < 1:
            raise ApiError(400, f"the prompt has {len(prompt)} tokens; this model's context window is "
                           f"{self.settings.context}", param="messages" if req.chat else "prompt",
                           code="context_length_exceeded")
        max_tokens = min(req.max_tokens or self.settings.max_tokens, room)
        return Job(prompt=prompt, max_tokens=max_tokens, sampling=self.sampling(req), stop=req.stop, seed=req.seed,
                   loop=loop)

    def encode(self, req: GenerationRequest) -> List[int]:
        if not req.chat and not isinstance(req.prompt, str):
            if not all(0 <= t < self.vocab for t in req.prompt):
                raise ApiError(400, f"token ids must be in 0..{self.vocab - 1}", param="prompt", code="invalid_value")
            return list(req.prompt)
        try:
            if req.chat:
                prompt = encode_messages(self.tokenizer, list(req.messages), self.settings.chat_template,
                                         content_as_text=self.settings.content_as_text)
            else:
                prompt = self.tokenizer.encode(req.prompt)
        except Exception as error:  # the chat template may refuse a conversation (jinja raises)
            raise ApiError(400, f"cannot encode the prompt: {str(error)[:300]}", code="invalid_prompt") from None
        if not prompt:
            raise ApiError(400, "the prompt is empty", param="messages" if req.chat else "prompt", code="invalid_value")
        return list(prompt)

    def sampling(self, req: GenerationRequest) -> SamplingParams:
        temp = self.settings.temp if req.temperature is None else req.temperature
        if temp == 0:
            return SamplingParams()
        top_k = self.settings.top_k if req.top_k is None else req.top_k
        top_p = self.settings.top_p if req.top_p is None else req.top_p
        try:
            return SamplingParams(temp, top_k, top_p)
        except SamplingError as error:  # settings that would underflow in float32 (sampling.py)
            field = {"temp": "temperature"}.get(error.param, error.param)
            raise ApiError(400, f"'{field}' {error.requirement} when sampling, got {error.value}", param=field,
                           code="invalid_value") from None

    async def stream(self, request_id: str, req: GenerationRequest, job: Job):
        """Server-sent events: chunks as steps are accepted, the finish reason, [DONE]."""
        if req.chat:
            yield sse(chunk(request_id, req, role=True))
        while True:
            kind, value = await job.events.get()
            if kind == "text":
                yield sse(chunk(request_id, req, text=value))
            elif kind == "done":
                for last in final_chunks(request_id, req, value, value.mode):
                    yield sse(last)
                break
            else:
                yield sse(error_body(value, type="server_error"))
                break
        yield sse("[DONE]")

    async def whole(self, request: Request, request_id: str, req: GenerationRequest, job: Job):
        """The whole answer at once; a client that disconnects first cancels it."""
        answer = asyncio.ensure_future(collect(job))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            done, _ = await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():
                job.cancel()
                answer.cancel()
        if answer not in done:
            return Response(status_code=499)  # the client has gone: nobody reads it
        text, result = answer.result()
        return JSONResponse(completion(request_id, req, text, result, result.mode))


class JobStream(StreamingResponse):
    """An event stream that cancels its job however it ends (a disconnected client
    cancels the response, Starlette watching for the disconnect)."""

    def __init__(self, events, job: Job):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def collect(job: Job):
    """(text, Result) of a job, or a 500 ApiError."""
    parts = []
    while True:
        kind, value = await job.events.get()
        if kind == "text":
            parts.append(value)
        elif kind == "done":
            return "".join(parts), value
        else:
            raise ApiError(500, value, type="server_error", code="generation_failed")


def check_json(request: Request):
    """415 unless the body is declared application/json."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, f"the body must be sent as Content-Type: application/json, got {media_type[:100]!r}",
                       code="unsupported_media_type")


class OriginCheck:
    """ASGI middleware: 403 for a request whose Origin header is neither the server's own (the
    scheme and the Host it was sent to) nor listed; requests without Origin pass."""

    def __init__(self, app, allowed: Tuple[str, ...]):
        self.app, self.allowed = app, {origin.lower() for origin in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1").lower()
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if origin and origin not in self.allowed and origin not in (f"http://{host}", f"https://{host}"):
                error = ApiError(403, f"requests from the origin {origin[:100]!r} are not allowed (the server's "
                                 "--allow-origin lists the sites whose pages may call it)", code="origin_not_allowed")
                response = JSONResponse(error.body(), status_code=403)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def disconnected(request: Request):
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 past `limit` bytes (refused from Content-Length before reading)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise _too_large(limit) if length.isdigit() else ApiError(400, "invalid Content-Length header")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


def _host(header: str) -> str:
    """The host of a Host header, without its port, lowercased and without a final dot
    ('[::1]:8080' -> '::1', 'LOCALHOST.:80' -> 'localhost')."""
    header = header.lower()
    if header.startswith("["):
        return header[1:header.find("]")]
    host = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return host[:-1] if host.endswith(".") else host


async def _api_error(request: Request, error: ApiError):
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: HTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    message = f"{request.method} {request.url.path[:200]}: {error.detail}"
    return JSONResponse(error_body(message, code=code), status_code=error.status_code, headers=error.headers)


async def _client_gone(request: Request, error: ClientDisconnect):
    return Response(status_code=499)  # it left while sending its body: nobody reads this


async def _server_error(request: Request, error: Exception):
    log.error("request failed", exc_info=error)
    return JSONResponse(error_body("internal server error", type="server_error"), status_code=500)


def create_app(worker: Worker, settings: Settings) -> Starlette:
    """The ASGI app; the worker thread starts and stops with it."""
    api = Api(worker, settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.stop()
        api.encoder.shutdown(wait=False)

    routes = [Route("/v1/chat/completions", api.chat, methods=["POST"]),
              Route("/v1/completions", api.text, methods=["POST"]),
              Route("/v1/models", api.models, methods=["GET"]),
              Route("/health", api.health, methods=["GET"])]
    handlers = {ApiError: _api_error, HTTPException: _http_error, ClientDisconnect: _client_gone,
                Exception: _server_error}
    middleware = [Middleware(OriginCheck, allowed=settings.allow_origins)]
    if settings.allow_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.allow_origins),
                                     allow_methods=["*"], allow_headers=["*"], max_age=600))  # its own
        # refusals would be plain text: every method and header passes its preflight (a wrong method gets 405)
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan, middleware=middleware)
