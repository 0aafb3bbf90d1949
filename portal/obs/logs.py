"""Structured logs: one JSON object per line, each with the id of the request
it belongs to, and nothing in it that could log someone in.

The request id lives in a context variable set by the request middleware;
every record logged while that request runs (the app's, uvicorn's access and
error lines, the libraries') gets it through ``RequestIdFilter``. ``RedactFilter``
masks phone numbers and drops whatever looks like a credential before any
handler writes the record: a redaction at the handler, not at the call site,
also covers libraries and tracebacks, which no reviewer reads line by line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "portal_request_id", default=None
)

# key=value / "key": "value" pairs whose value is a credential. ``\b`` keeps
# "errcode" or "status_code" out: only a key that *is* one of these words.
_CREDENTIAL_NAMES = (
    r"secret|client_secret|app_?secret|ticket_secret|x-ticket-secret|password|passwd|"
    r"token|access_token|refresh_token|id_token|session_token|session_key|api_key|"
    r"js_code|phone_code|code|code_verifier|authorization|cookie|set-cookie"
)
_PAIR = re.compile(
    rf"""(?ix)
    (["']?\b(?:{_CREDENTIAL_NAMES})\b["']?\s*[:=]\s*["']?)   # the key and its separator
    (?!\*\*\*)[^\s&"',;}}\]]+                           # the value, up to a delimiter
    """
)
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
# Opaque random strings this long are keys, secrets or tokens (ticket secrets,
# session and refresh tokens are 43 characters); ticket ids (32) stay readable.
_OPAQUE = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{40,}(?![\w-])")
# Chinese mobile numbers, with or without the country code: 138****8000.
_PHONE = re.compile(r"(?<!\d)((?:\+|00)?86[ -]?)?(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def redact(text: str) -> str:
    """``text`` with phone numbers masked and credentials replaced by ``***``."""
    text = _AUTH.sub(r"\1 ***", text)
    text = _JWT.sub("***", text)
    text = _PAIR.sub(r"\1***", text)
    text = _OPAQUE.sub("***", text)
    return _PHONE.sub(lambda m: f"{m[1] or ''}{m[2]}****{m[3]}", text)


class RedactFilter(logging.Filter):
    """Rewrites a record's message (and its traceback) with ``redact``; running
    it again (a second handler) changes nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactAccessArgs(logging.Filter):
    """``redact`` for uvicorn's access lines under uvicorn's own formatter (``portal
    dev``), which unpacks the record's arguments (client, method, path with query,
    version, status): each text argument is redacted in place, keeping their shape."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif not record.args:
            record.msg = redact(str(record.msg))
        return True


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the id of the request being served, or None."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", "pid"[, "exc"]}``, one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def dict_config(
    *, json_lines: bool = True, level: str = "INFO", access_log: bool = False
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the portal's processes (gunicorn's
    ``logconfig_dict``): everything to stderr through the request-id and
    redaction filters, JSON lines or text. uvicorn's access log (one line per
    request, with its query string redacted) only when ``access_log``."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "json" if json_lines else "text",
        "filters": ["request_id", "redact"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "redact": {"()": RedactFilter},
        },
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"format": TEXT_FORMAT},
        },
        "handlers": {"default": handler},
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            # gunicorn hands these handlers to uvicorn's loggers in each worker.
            "gunicorn.error": {"level": level, "handlers": ["default"], "propagate": False},
            "gunicorn.access": {
                "level": "INFO",
                "handlers": ["default"] if access_log else [],
                "propagate": False,
            },
            "uvicorn.error": {"level": level, "handlers": ["default"], "propagate": False},
            "uvicorn.access": {
                "level": "INFO",
                "handlers": ["default"] if access_log else [],
                "propagate": False,
            },
            # One line per outgoing request; the WeChat client logs what matters.
            "httpx": {"level": "WARNING"},
        },
    }


def config_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``dict_config`` from ``PORTAL_LOG_FORMAT`` (json | text, default json),
    ``PORTAL_LOG_LEVEL`` (default INFO) and ``PORTAL_ACCESS_LOG`` (1: on)."""
    env = os.environ if environ is None else environ
    fmt = env.get("PORTAL_LOG_FORMAT", "json").strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"PORTAL_LOG_FORMAT must be 'json' or 'text', got {fmt!r}")
    level = env.get("PORTAL_LOG_LEVEL", "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"PORTAL_LOG_LEVEL: unknown level {level!r}")
    access = env.get("PORTAL_ACCESS_LOG", "").strip().lower() in ("1", "true", "yes", "on")
    return dict_config(json_lines=fmt == "json", level=level, access_log=access)
