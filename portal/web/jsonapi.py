"""Reading request bodies, and small helpers for the JSON routes.

Every route that reads a body reads it through here, so every body has a size
cap and a deadline, enforced *while* it is read: a declared ``Content-Length``
over the cap is refused before a byte is read, and a chunked body (no length)
is cut off as soon as it passes the cap, never buffered or spooled whole. A
client that trickles its body gets a 408 when the deadline passes instead of
holding the request open forever. The protocol under the app
(``portal.web.protocol``) bounds the request line, the headers and bodies no
route reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from portal.errors import PortalError, ValidationError
from portal.web.protocol import BODY_DONE

MAX_JSON_BODY = 16 * 1024
MAX_FORM_BODY = 64 * 1024
# Seconds a body may take to arrive when no setting says otherwise (tests, tools).
DEFAULT_BODY_TIMEOUT = 30.0


class BodyTooLarge(PortalError):
    status_code = 413
    error = "request_too_large"
    description = "The request body is too large."


class BodyTimeout(PortalError):
    status_code = 408
    error = "request_timeout"
    description = "The request body did not arrive in time."


class ClientGone(PortalError):
    """The connection broke mid-body (or the protocol refused the rest of it): no
    one reads the answer, but it ends the request as a 4xx, not a logged 500."""

    status_code = 400
    error = "client_disconnected"
    description = "The connection closed before the request body was complete."


class UnsupportedMediaType(PortalError):
    status_code = 415
    error = "unsupported_media_type"
    description = "Send the body as application/json."


def body_timeout(request: Request) -> float:
    settings = getattr(request.state, "settings", None)
    return getattr(settings, "body_timeout", DEFAULT_BODY_TIMEOUT)


def check_length(
    request: Request, max_bytes: int, *, too_large: PortalError | None = None
) -> int | None:
    """The declared length (None when chunked), refused at once when over the cap:
    the body is then never read. A malformed length never reaches us (the HTTP
    parser refuses it), but a caller behind an odd proxy gets a 400 for one."""
    return _declared_length(request.headers.get("content-length"), max_bytes, too_large)


def _declared_length(
    declared: str | bytes | None, max_bytes: int, too_large: PortalError | None = None
) -> int | None:
    if declared is None:
        return None
    if not declared.isdigit():
        raise ValidationError("The Content-Length header is malformed.")
    if int(declared) > max_bytes:
        raise too_large or BodyTooLarge()
    return int(declared)


def bounded(
    request: Request,
    max_bytes: int,
    *,
    timeout: float | None = None,
    too_large: PortalError | None = None,
) -> Request:
    """The same request, whose body reads fail with a 413 past ``max_bytes`` and
    with a 408 past the deadline: for readers that do their own buffering
    (Starlette's form parsers), which would otherwise take any amount."""
    check_length(request, max_bytes, too_large=too_large)
    receive = request.receive
    deadline = asyncio.get_running_loop().time() + (timeout or body_timeout(request))
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise BodyTimeout() from None
        seen += len(message.get("body", b""))
        if seen > max_bytes:
            raise too_large or BodyTooLarge()
        return message

    return Request(request.scope, limited)


async def read_body(
    request: Request, max_bytes: int, *, too_large: PortalError | None = None
) -> bytes:
    """The whole body, at most ``max_bytes``, within the body deadline."""
    check_length(request, max_bytes, too_large=too_large)
    return await _read_body(request, max_bytes, too_large)


async def _read_body(request: Request, max_bytes: int, too_large: PortalError | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    done = request.scope.get(BODY_DONE)
    if done is not None and done[0]:
        # The protocol has the whole body already (it came with the head): one
        # message, nothing to wait for, so no deadline to arm (the QR API's case).
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body = message.get("body", b"")
        if len(body) > max_bytes:
            raise too_large or BodyTooLarge()
        if not message.get("more_body", False):
            return body
        chunks.append(body)  # not expected; the rest is read as below
        size = len(body)
    try:
        async with asyncio.timeout(body_timeout(request)):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large or BodyTooLarge()
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout() from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


async def read_form(
    request: Request,
    *,
    max_bytes: int = MAX_FORM_BODY,
    max_fields: int = 50,
    max_files: int = 0,
    max_part_size: int | None = None,
    too_large: PortalError | None = None,
) -> FormData:
    """The form (urlencoded or multipart) with the whole body capped: Starlette's own
    limits are per field (1 MB each by default) and none for file parts, which
    are spooled to disk as they come."""
    limited = bounded(request, max_bytes, too_large=too_large)
    try:
        return await limited.form(
            max_files=max_files,
            max_fields=max_fields,
            max_part_size=min(max_part_size or max_bytes, max_bytes),
        )
    except ClientDisconnect:
        raise ClientGone() from None


def _json_type(ctype: bytes) -> bool:
    value = ctype.split(b";")[0].strip().lower()
    return value in (b"application/json", b"") or value.endswith(b"+json")


async def read_json(
    request: Request, *, optional: bool = False, max_bytes: int = MAX_JSON_BODY
) -> dict[str, Any]:
    """The body as a JSON object; a clear 4xx for anything else."""
    # The two headers from the raw list in one pass (the QR API's hot path).
    declared = ctype = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            declared = value
        elif name == b"content-type":
            ctype = value
    if _declared_length(declared, max_bytes) and not _json_type(ctype or b""):
        raise UnsupportedMediaType()  # refused before reading it
    body = await _read_body(request, max_bytes, None)
    if not body.strip():
        if optional:
            return {}
        raise ValidationError("A JSON object body is required.")
    if not _json_type(ctype or b""):
        raise UnsupportedMediaType()
    try:
        # Invalid UTF-8, lone surrogates, nesting deeper than 1024 and numbers
        # beyond a double are all a JSONDecodeError; a repeated key keeps its last value.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationError("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    return data


class FastJSONResponse(JSONResponse):
    """A JSON response encoded by orjson, its headers built directly: the QR API's
    answers are the product's most frequent, and the standard encoder and the
    generic header building cost more than the rest of a status read."""

    def __init__(
        self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.body = orjson.dumps(content)
        self.background = None
        raw = [
            (b"content-length", str(len(self.body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def optional_str(data: dict[str, Any], name: str, *, max_len: int = 200) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(f"{name} must be a string of at most {max_len} characters.")
    if "\x00" in value:  # PostgreSQL's text cannot hold it: a 400 here, not a 500 later
        raise ValidationError(f"{name} must not contain NUL characters.")
    return value


def required_str(data: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    value = optional_str(data, name, max_len=max_len)
    if value is None:
        raise ValidationError(f"{name} is required.")
    return value


class Direct:
    """An endpoint served as a plain ASGI app. Starlette wraps each function
    endpoint in two layers of its own (a per-request exception-handling
    closure and the request/response adapter) that every await inside the
    endpoint resumes through; the exception middleware outside handles the
    same errors with the same handlers. Used for the JSON requests of every
    login (ticket creation, status reads, the exchange, and the mini
    program's session, scan and confirm) and for userinfo; the app's fast
    lane (``portal.app.FastLane``) calls these without the router."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)
