"""Small helpers for the JSON routes: reading bodies and typed fields."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from portal.errors import PortalError, ValidationError

MAX_JSON_BODY = 16 * 1024


class BodyTooLarge(PortalError):
    status_code = 413
    error = "request_too_large"
    description = "The request body is too large."


async def read_json(
    request: Request, *, optional: bool = False, max_bytes: int = MAX_JSON_BODY
) -> dict[str, Any]:
    """The body as a JSON object; a clear 4xx for anything else."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge()
    if not body.strip():
        if optional:
            return {}
        raise ValidationError("A JSON object body is required.")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise PortalError(
            "Send the body as application/json.", error="unsupported_media_type", status_code=415
        )
    try:
        data = orjson.loads(body)  # invalid UTF-8 too is a JSONDecodeError
    except orjson.JSONDecodeError:
        raise ValidationError("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    return data


class FastJSONResponse(JSONResponse):
    """A JSON response encoded by orjson: the QR API's answers are the product's
    most frequent, and the standard encoder costs more than the rest of a status read."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def optional_str(data: dict[str, Any], name: str, *, max_len: int = 200) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(f"{name} must be a string of at most {max_len} characters.")
    return value


def required_str(data: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    value = optional_str(data, name, max_len=max_len)
    if value is None:
        raise ValidationError(f"{name} is required.")
    return value
