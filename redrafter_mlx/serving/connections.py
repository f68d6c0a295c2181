"""The server's connections: uvicorn's h11 protocol with limits that idle or slow clients
cannot exhaust.

- Every request must arrive whole (its headers and body) within `read_timeout` seconds of
  the connection opening or of the previous response; else the connection is closed (a
  request half sent gets no answer; its handler sees the client gone).
- At `max_connections` open connections a new one closes another that is not waiting for an
  answer (idle, or still sending its request): one that has never sent a byte if there is
  one, else the one silent longest. So a flood of silent sockets cannot lock out /health or
  a client with the API key, and closes none of the kept-alive connections of clients that
  made requests before it. Only when every connection waits for an answer is the new one
  refused (503).
- The parser's 400 and the 503 are JSON error bodies, as the API's other errors.

uvicorn's own limit (limit_concurrency) counts open sockets and never times out one that
sends nothing, which is what a flood of idle connections exploits.
"""

import json

from uvicorn.protocols.http.h11_impl import H11Protocol

from .openai_api import error_body

RETRY_AFTER = 1  # seconds, in the 503's Retry-After


def json_bytes(message: str, *, type: str, code: str) -> bytes:
    return json.dumps(error_body(message, type=type, code=code)).encode()


TOO_MANY = json_bytes("the server has too many connections waiting for answers; retry later", type="server_error",
                      code="too_many_connections")


async def too_many_connections(scope, receive, send):
    """The ASGI answer to a connection refused at the limit."""
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(TOO_MANY)).encode()),
                            (b"retry-after", str(RETRY_AFTER).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": TOO_MANY})


def limited_protocol(*, read_timeout: float, max_connections: int) -> type:
    """The uvicorn `http` protocol class with these limits."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"read_timeout": read_timeout, "max_connections": max_connections})


class LimitedH11Protocol(H11Protocol):
    read_timeout = 10.0  # seconds for a whole request to arrive
    max_connections = 256

    def connection_made(self, transport):
        super().connection_made(transport)
        self.last_heard = self.loop.time()
        self.spoken = False  # has sent a byte
        self.read_deadline = None
        self._arm_read_deadline()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc):
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes):
        self.last_heard, self.spoken = self.loop.time(), True
        super().data_received(data)
        if self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete:
            self._disarm_read_deadline()  # the request has arrived whole: the answer may take its time

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_read_deadline()  # the next request, if any

    def send_400_response(self, msg: str):
        """The parser's 400 as a JSON error body."""
        body = json_bytes(f"malformed HTTP request: {msg}", type="invalid_request_error", code="invalid_http")
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()

    def waits_for_answer(self) -> bool:
        """Whether its whole request has arrived and its answer is not yet complete."""
        return self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete

    def _make_room(self):
        """Closes a connection not waiting for an answer (never spoken first, then the longest
        silent); without one, this connection's request gets the 503."""
        others = [c for c in self.connections if c is not self and not c.transport.is_closing()
                  and isinstance(c, LimitedH11Protocol) and not c.waits_for_answer()]
        if others:
            min(others, key=lambda c: (c.spoken, c.last_heard)).transport.close()
        else:
            self.app = too_many_connections

    def _arm_read_deadline(self):
        self._disarm_read_deadline()
        self.read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm_read_deadline(self):
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self):
        self.read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
