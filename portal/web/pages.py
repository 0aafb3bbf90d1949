"""Rendering pages and errors, shared by every feature."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import jinja2
from authlib.oauth2.rfc6749.errors import OAuth2Error
from redis.exceptions import ClusterError as RedisClusterError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from portal.errors import PortalError
from portal.web import headers, i18n

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"

# Pages under these prefixes are JSON APIs; everything else is a page for people.
_JSON_PREFIXES = (
    "/api/",
    "/oidc/",
    "/.well-known/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
)
_PAGE_PATHS = frozenset({"/oidc/auth", "/oidc/auth/complete", "/oidc/logout"})


def make_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        enable_async=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def wants_json(request: Request) -> bool:
    path = request.url.path
    if path in _PAGE_PATHS:
        return False
    if path.startswith(_JSON_PREFIXES):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def lang_switch_url(request: Request, lang: str, params: dict[str, str] | None = None) -> str:
    """This page in the other language; ``params`` stand in for the query when the
    page was reached by POST (its request is then not in the URL)."""
    other = "en" if lang == "zh-CN" else "zh-CN"
    items = params.items() if params is not None else request.query_params.multi_items()
    kept = [(k, v) for k, v in items if k != "lang"]
    return f"{request.url.path}?{urlencode([*kept, ('lang', other)])}"


def render(
    request: Request,
    template: str,
    context: dict | None = None,
    status_code: int = 200,
    *,
    form_target: str | None = None,
    frame_ancestor: str | None = None,
    frame_sources: tuple[str, ...] | list[str] = (),
) -> HTMLResponse:
    """A page, with its security headers (``portal.web.headers``): a fresh CSP nonce is
    handed to the template as ``csp_nonce`` for its ``<script>`` tags.
    ``form_target``: the client's redirect URI a form of this page leads to
    (its origin joins ``form-action`` on pages whose policy allows one).
    ``frame_ancestor``: a URI whose origin alone may frame this page (an
    authorization response in a client's hidden iframe); else none may.
    ``frame_sources``: URIs whose origins this page may frame (front-channel logout)."""
    env: jinja2.Environment = request.state.templates
    lang, chosen = i18n.pick(request)
    settings = request.state.settings
    nonce = headers.new_nonce()
    ctx = {
        "request": request,
        "lang": lang,
        "_": i18n.translator(lang),
        "switch_url": lang_switch_url(request, lang),
        "pool": request.state.pool,
        "settings": settings,
        **(context or {}),
        "csp_nonce": nonce,
    }
    policy = headers.policy_for(template)
    if form_target is None and policy.form_target_param:
        form_target = (ctx.get("params") or {}).get(policy.form_target_param)
    response = HTMLResponse(
        env.get_template(template).render(ctx),
        status_code=status_code,
        headers=headers.page_headers(
            policy,
            nonce,
            settings,
            request.url.path,
            form_target,
            frame_ancestor,
            frame_sources,
        ),
    )
    if chosen:
        response.set_cookie(
            i18n.COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax",
            secure=settings.scheme == "https",
        )  # fmt: skip
    response.headers["content-language"] = lang
    return response


def error_response(request: Request, status_code: int, error: str, description: str) -> Response:
    if wants_json(request):
        return JSONResponse(
            {"error": error, "error_description": description}, status_code=status_code
        )
    _ = i18n.translator(i18n.pick(request)[0])
    message = _(f"error.{error}")
    if message == f"error.{error}":
        message = (
            _(f"error.{status_code}")
            if f"error.{status_code}" in i18n.MESSAGES["en"]
            else description
        )
    return render(
        request,
        "error.html",
        {"status_code": status_code, "error": error, "message": message},
        status_code,
    )


async def portal_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PortalError)
    response = error_response(request, exc.status_code, exc.error, exc.description)
    response.headers.update(getattr(exc, "headers", None) or {})  # e.g. a Bearer challenge
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    elif exc.status_code == 503:
        response.headers.setdefault("retry-after", "5")
    return response


async def oauth2_error_handler(request: Request, exc: Exception) -> Response:
    """authlib's OAuth2 errors, in their RFC 6749 §5.2 shape and headers."""
    assert isinstance(exc, OAuth2Error)
    body = dict(exc.get_body())
    body.setdefault("error_description", body.get("error", ""))
    return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.get_headers()))


_HTTP_ERRORS = {
    400: ("invalid_request", "Bad request."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    408: ("request_timeout", "The request did not arrive in time."),
    411: ("length_required", "Send the body with a Content-Length."),
    413: ("request_too_large", "The request body is too large."),
    414: ("uri_too_long", "The request line is too long."),
    415: ("unsupported_media_type", "This content type is not accepted here."),
    431: ("request_header_too_large", "The request headers are too large."),
}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error, description = _HTTP_ERRORS.get(exc.status_code, ("http_error", "Bad request."))
    if exc.status_code == 400 and exc.detail and exc.detail != "Bad Request":
        # Starlette's form parser says what was wrong ("Too many fields. ..."): no internals.
        description = str(exc.detail)[:200]
    response = error_response(request, exc.status_code, error, description)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


# A store that does not answer (restarting, unreachable, overloaded): the request
# may be retried shortly, and the client is told so rather than "internal error".
STORE_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterError,  # CLUSTERDOWN: a Redis Cluster failing over
    TryAgainError,  # a Redis Cluster moving a slot
    RedisClusterException,  # e.g. a slot no master serves for a moment
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    ConnectionError,  # refused, reset, broken pipe: a server restarting under us
    TimeoutError,  # e.g. no pooled database connection free in time
)


async def store_unavailable_handler(request: Request, exc: Exception) -> Response:
    log.warning(
        "store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    response = error_response(
        request,
        503,
        "temporarily_unavailable",
        "The service is temporarily unavailable; try again shortly.",
    )
    response.headers["retry-after"] = "5"
    return response


async def server_error_handler(request: Request, exc: Exception) -> Response:
    # The detail goes to the log only; the client learns nothing internal.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    try:
        return error_response(
            request, 500, "server_error", "Internal error; please try again later."
        )
    except Exception:
        return JSONResponse({"error": "server_error", "error_description": "Internal error."}, 500)
