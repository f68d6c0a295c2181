"""OpenAI request bodies in, response bodies out (chat and text completions).

Requests are checked field by field; anything wrong is an ApiError that the server turns
into an OpenAI-style error body `{"error": {"message", "type", "param", "code"}}`. Unknown
fields are ignored (clients send many); fields that would change the response's shape and
are not supported (n > 1, logprobs, echo, tools) are refused. The `model` field is only
compared with the served name, never used to find files.
"""

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

MAX_STOPS = 16  # OpenAI allows 4; editors send more
MAX_STOP_CHARS = 256
ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str = None,
                 param: str = None, headers: dict = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str = "invalid_request_error", code: str = None, param: str = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class GenerationRequest:
    chat: bool  # /v1/chat/completions (messages) or /v1/completions (prompt)
    messages: Optional[Tuple[dict, ...]]  # chat: {"role", "content"} with string contents
    prompt: Union[str, List[int], None]  # completions: text or token ids
    model: str
    max_tokens: Optional[int]  # None: the server's default
    temperature: Optional[float]  # None: the server's default
    top_p: Optional[float]
    top_k: Optional[int]  # None: the server's --top-k
    seed: Optional[int]
    stop: Tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object (400 otherwise: not UTF-8, not JSON, NaN/Infinity,
    nested too deep, not an object)."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        message = "the body is not valid UTF-8" if isinstance(error, UnicodeDecodeError) else \
            "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ApiError(400, f"could not parse the JSON body: {message}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {_kind(body)}")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _wrong(param: str, expected: str, value) -> ApiError:
    return ApiError(400, f"'{param}' must be {expected}, got {_kind(value)}", param=param, code="invalid_type")


def _range(param: str, message: str) -> ApiError:
    return ApiError(400, f"'{param}' {message}", param=param, code="invalid_value")


def _int(body: dict, name: str, low: int = None) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(name, "an integer", value)
    if low is not None and value < low:
        raise _range(name, f"must be >= {low}, got {value}")
    return value


def _number(body: dict, name: str, low: float, high: float) -> Optional[float]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(name, "a number", value)
    if not (math.isfinite(value) and low <= value <= high):
        raise _range(name, f"must be in [{low}, {high}], got {value}")
    return float(value)


def _bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong(name, "a boolean", value)
    return value


def _text(value, param: str) -> str:
    """A string that UTF-8 can encode (JSON allows lone surrogates like \\ud800)."""
    if not isinstance(value, str):
        raise _wrong(param, "a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"'{param}' is not valid Unicode (a lone surrogate)", param=param,
                       code="invalid_value") from None
    return value


def _stop(body: dict) -> Tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise _wrong("stop", "a string or an array of strings", value)
    if len(stops) > MAX_STOPS:
        raise _range("stop", f"has at most {MAX_STOPS} strings, got {len(stops)}")
    for stop in stops:
        if not _text(stop, "stop") or len(stop) > MAX_STOP_CHARS:
            raise _range("stop", f"strings must have 1..{MAX_STOP_CHARS} characters")
    return tuple(stops)


def _unsupported(body: dict):
    """Refuses options that would change the response's shape."""
    if body.get("n") not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported")
    for name in ("logprobs", "echo", "tools", "functions", "suffix", "top_logprobs"):
        if body.get(name) not in (None, False, [], 0):
            raise ApiError(400, f"'{name}' is not supported by this server", param=name, code="unsupported")
    if body.get("best_of") not in (None, 1):
        raise ApiError(400, "only best_of=1 is supported", param="best_of", code="unsupported")


def _model(body: dict, served: str) -> str:
    value = body.get("model")
    if value is None:
        return served
    if _text(value, "model") != served:
        raise ApiError(404, f"the model {value[:100]!r} does not exist; this server serves {served!r}",
                       param="model", code="model_not_found")
    return value


def _content(value, param: str) -> str:
    """A message's content: a string, null, or an array of text parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _text(value, param)
    if not isinstance(value, list):
        raise _wrong(param, "a string or an array of content parts", value)
    texts = []
    for part in value:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise ApiError(400, f"'{param}': only text content parts are supported", param=param,
                           code="unsupported")
        texts.append(_text(part.get("text"), f"{param}.text"))
    return "".join(texts)


def _messages(body: dict) -> Tuple[dict, ...]:
    value = body.get("messages")
    if not isinstance(value, list):
        raise _wrong("messages", "an array", value)
    if not value:
        raise _range("messages", "must not be empty")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _wrong(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role not in ROLES:
            raise _range(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}")
        messages.append({"role": role, "content": _content(message.get("content"), f"messages[{i}].content")})
    return tuple(messages)


def _prompt(body: dict) -> Union[str, List[int]]:
    """A string, one string in an array, token ids, or one array of token ids in an array."""
    value = body.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        return _text(value, "prompt")
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return value
    raise _wrong("prompt", "a string or an array of token ids (one prompt per request)", value)


def _stream_options(body: dict) -> bool:
    value = body.get("stream_options")
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _wrong("stream_options", "an object", value)
    return _bool(value, "include_usage")


def parse_request(body: dict, *, chat: bool, served: str) -> GenerationRequest:
    """A chat (`messages`) or text (`prompt`) completion request, checked."""
    _unsupported(body)
    max_tokens = _int(body, "max_completion_tokens", 1) if chat else None
    max_tokens = max_tokens if max_tokens is not None else _int(body, "max_tokens", 1)
    seed = _int(body, "seed")
    return GenerationRequest(
        chat=chat, messages=_messages(body) if chat else None, prompt=None if chat else _prompt(body),
        model=_model(body, served), max_tokens=max_tokens, temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0), top_k=_int(body, "top_k", 0),
        seed=None if seed is None else seed % 2 ** 64, stop=_stop(body), stream=_bool(body, "stream"),
        include_usage=_stream_options(body))


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def _header(request_id: str, chat: bool, model: str, chunk: bool) -> dict:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model}


def usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def extension(result, mode: str) -> dict:
    """Our extension field `redrafter`: how the answer was decoded."""
    return {"mode": mode, "steps": result.steps, "tokens_per_step": round(result.tokens_per_step, 3),
            "decode_seconds": round(result.seconds, 4), "timed_out": result.timed_out}


def completion(request_id: str, request: GenerationRequest, text: str, result, mode: str) -> dict:
    """A whole (non-streamed) chat.completion or text_completion."""
    if request.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text}
    choice.update(logprobs=None, finish_reason=result.finish_reason)
    return {**_header(request_id, request.chat, request.model, False), "choices": [choice],
            "usage": usage(result), "redrafter": extension(result, mode)}


def chunk(request_id: str, request: GenerationRequest, *, text: str = None, role: bool = False,
          finish_reason: str = None) -> dict:
    """One streamed chunk: new text, the opening role (chat), or the finish reason."""
    if request.chat:
        delta = {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
        choice = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text or ""}
    choice.update(logprobs=None, finish_reason=finish_reason)
    return {**_header(request_id, request.chat, request.model, True), "choices": [choice]}


def final_chunks(request_id: str, request: GenerationRequest, result, mode: str) -> List[dict]:
    """The chunk with the finish reason (and our extension), then usage if asked for."""
    last = chunk(request_id, request, finish_reason=result.finish_reason)
    last["redrafter"] = extension(result, mode)
    if not request.include_usage:
        return [last]
    return [last, {**_header(request_id, request.chat, request.model, True), "choices": [], "usage": usage(result)}]


def sse(data) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
