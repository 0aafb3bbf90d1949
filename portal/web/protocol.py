"""uvicorn's HTTP/1.1 protocol (httptools), with the limits it lacks.

uvicorn's httptools protocol, the fast one the portal runs on, takes a request
line and headers of any length and any number, waits forever for a request that
never finishes arriving, and keeps reading a body the app has already answered.
gunicorn's own ``limit_request_*`` settings do not apply to uvicorn workers.
This subclass adds, at almost no cost on the hot path (a counter per chunk, a
look at each header only for heads over ``max_header_field_size``, a timer
only when a request does *not* arrive whole in one read; about 3-5 µs a
request in all):

- a request target (URL) over ``max_request_line`` bytes → 414;
- more than ``max_header_fields`` headers, one over ``max_header_field_size``
  bytes, or a head (line and headers) over ``max_head_bytes`` still incomplete
  → 431, before it is buffered further;
- a connection that sends nothing, or a head that is not complete,
  ``head_timeout`` seconds after its first byte → closed (408 if part came);
- a body still incomplete ``body_timeout`` seconds after its head → 408 and
  closed (the routes that read a body answer 408 themselves sooner,
  ``PORTAL_BODY_TIMEOUT``; this is the backstop for bodies no route reads);
- uvicorn's plain-text "Invalid HTTP request" 400 (malformed request, invalid
  bytes in the path) answered in the portal's JSON error shape.

It also sends a response's head and body in one ``send``: uvicorn writes them
separately, two system calls (and two wake-ups of the client) per response.
The connection's writes made in one event-loop turn are joined and sent at the
end of it (``_Corked``); issue 23's profile of a scan login found about 13 % of
the workers' CPU in those writes.

``protocol(...)`` builds the class with given limits; ``portal serve`` takes
them from gunicorn's ``limit_request_*`` settings (deploy/gunicorn.conf.py),
``portal dev`` uses the defaults.
"""

from __future__ import annotations

import asyncio
import http

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_REQUEST_LINE = 8190
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_SIZE = 8190
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 15.0
BODY_TIMEOUT = 60.0
BODY_DONE = "portal.body_done"  # scope key: [True] once the request's body is all in

_ERRORS = {
    400: ("invalid_request", "Invalid HTTP request received."),
    408: ("request_timeout", "The request did not arrive in time."),
    414: ("uri_too_long", "The request line is too long."),
    431: ("request_header_too_large", "The request headers are too large or too many."),
}


class _Refused(Exception):
    """Raised from a parser callback: httptools turns it into a parser error, which
    uvicorn answers through ``send_400_response`` (with our status)."""


class _Corked:
    """A transport whose writes made in one event-loop turn go out as one write
    (at the end of the turn, or before a close). Everything else is the transport's."""

    __slots__ = ("_loop", "_parts", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self._flush)
        self._parts.append(bytes(data))

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        self._parts = []
        if not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._parts))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._parts = []
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class PortalHttpProtocol(HttpToolsProtocol):
    max_request_line = MAX_REQUEST_LINE
    max_header_fields = MAX_HEADER_FIELDS
    max_header_field_size = MAX_HEADER_FIELD_SIZE
    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Corked(transport, self.loop))  # type: ignore[arg-type]
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._status = 400
        self._body_done: list[bool] = [False]
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.head_timeout, self._head_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            # _head_bytes is 0 when the chunk ended with a whole request: no timer
            # then (uvicorn's keep-alive timeout takes over once it is answered).
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431)
            elif self._head_bytes and self._timer is None:
                self._timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
        elif self._in_body and self._timer is None:
            self._timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def handle_websocket_upgrade(self) -> None:
        # The connection now belongs to the WebSocket protocol: no more HTTP deadlines.
        self._in_head = self._in_body = False
        self._cancel_timer()
        super().handle_websocket_upgrade()

    # parser callbacks

    def on_headers_complete(self) -> None:
        # The head is whole and at most max_head_bytes (data_received saw to that):
        # its line and fields are checked here in one pass, not in a callback per header.
        self._in_head = False
        self._in_body = True
        self._cancel_timer()
        headers = self.headers
        if len(self.url) > self.max_request_line:
            self._status = 414
            raise _Refused()
        # No field can be longer than the bytes read for this head: most heads
        # (a few hundred bytes) skip the loop. 0: the head shared a chunk with the
        # end of the request before it (pipelining), its size is not known.
        maybe_long = self._head_bytes == 0 or self._head_bytes > self.max_header_field_size
        if len(headers) > self.max_header_fields or (
            maybe_long and any(len(n) + len(v) > self.max_header_field_size for n, v in headers)
        ):
            self._status = 431
            raise _Refused()
        super().on_headers_complete()
        # Tells the app's body readers (jsonapi) when the whole body is in: a body
        # that came with its head (nearly all) is then read with no deadline to
        # arm. A list shared by reference: the app's copies of the scope see it.
        self._body_done = self.scope[BODY_DONE] = [False]

    def on_message_complete(self) -> None:
        self._body_done[0] = True
        self._in_body = False
        self._in_head = True
        self._head_bytes = 0
        self._cancel_timer()
        super().on_message_complete()

    # refusals

    def send_400_response(self, msg: str) -> None:
        self._cancel_timer()
        self._respond(self._status)

    def _refuse(self, status: int) -> None:
        self.logger.warning("Refused a request: %s %s", status, _ERRORS[status][0])
        self._respond(status)

    def _respond(self, status: int) -> None:
        error, description = _ERRORS.get(status, _ERRORS[400])
        body = orjson.dumps({"error": error, "error_description": description})
        phrase = http.HTTPStatus(status).phrase
        head = [f"HTTP/1.1 {status} {phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        cycle = self.cycle
        midway = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # what the app may still send is dropped
            cycle.message_event.set()
        if not midway:  # never a second status line in the middle of a response
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is under way (a long poll, a stream): the next request,
            # pipelined behind it, gets its time once that response is done.
            self._timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
            return
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
        else:
            self._refuse(408)

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        if self.cycle is not None and self.cycle.response_started:
            # Answered already (a 413, a route that reads no body): just stop reading.
            self.cycle.keep_alive = False
            if self.cycle.response_complete:
                self.transport.close()
            return
        self._refuse(408)


def protocol(**limits: float) -> type[PortalHttpProtocol]:
    """The protocol class with other limits (``max_request_line=...``, ...); a
    limit of 0 means none, as in gunicorn's settings."""
    unknown = set(limits) - set(vars(PortalHttpProtocol))
    if unknown:
        raise TypeError(f"unknown limits: {sorted(unknown)}")
    values = {k: (v if v or not k.startswith("max_") else float("inf")) for k, v in limits.items()}
    return type("PortalHttpProtocol", (PortalHttpProtocol,), values)
