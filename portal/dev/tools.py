"""Dev tools (docs/design.md §8): the phone simulator and the demo callback page, and the
page a phone sees when it opens a QR code's link outside the mini program.

``dev_routes()`` is mounted on the apex only when ``PORTAL_ENV=dev``; each
handler checks again, so a mistake in the wiring still answers 404 in
production. The simulator is a plain page whose script calls the real
mini-program API, same origin, exactly as the mini program would.
"""

from __future__ import annotations

import hmac
import re
import shlex
from urllib.parse import urlencode

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from portal.stores.crypto import random_token
from portal.web import i18n
from portal.web.jsonapi import read_json, required_str
from portal.web.pages import render

_MAX_PREFILL = 2000
# Shown first on the callback page, in this order; anything else received follows.
_CALLBACK_PARAMS = ("code", "state", "error", "error_description")
_MAX_CALLBACK_PARAMS = 50
_MAX_CALLBACK_VALUE = 2000
# What a tenant's site keeps in its own session when it sends a browser to the
# pool's page (login CSRF, issue 16): here a cookie of the apex, where the
# callback page is.
STATE_COOKIE = "dev_login_state"
DEMO_SLUG = "demo"
# Where ``portal dev`` keeps the demo pool's default client secret, in the data
# dir (portal/dev/server.py writes it), so that the exchange below works as shown.
DEMO_SECRET_FILE = "demo_client_secret"  # noqa: S105 (a file name)
_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")

# Texts the simulator's script shows; handed to it in a data attribute.
_SCRIPT_MESSAGES = (
    "phone.js.bad_url",
    "phone.js.bad_user",
    "phone.js.bad_phone",
    "phone.js.no_appid",
    "phone.js.logging_in",
    "phone.js.logged_in",
    "phone.js.scanning",
    "phone.js.scanned",
    "phone.js.confirming",
    "phone.js.confirmed",
    "phone.js.cancelling",
    "phone.js.cancelled",
    "phone.js.failed",
    "phone.js.network",
    "phone.js.session_expired",
    "phone.js.phone_required",
    "phone.js.no_client",
    "phone.js.expires_in",
    "phone.js.hint.ticket_not_found",
    "phone.js.hint.ticket_expired",
    "phone.js.hint.ticket_taken",
    "phone.js.hint.ticket_not_scanned",
    "phone.js.hint.not_scanner",
    "phone.js.hint.wrong_mini_program",
    "phone.js.hint.phone_required",
    "phone.js.hint.invalid_appid",
    "phone.js.hint.invalid_code",
    "phone.js.hint.code_used",
    "phone.js.hint.wechat_unavailable",
    "phone.js.hint.wechat_rate_limited",
    "phone.js.hint.wechat_risky_user",
    "phone.js.hint.wechat_ip_not_whitelisted",
    "phone.js.hint.invalid_phone_code",
    "phone.js.hint.signup_disabled",
    "phone.js.hint.user_blocked",
    "phone.js.hint.no_link_rule",
    "phone.js.opening",
)


def _require_dev(request: Request) -> None:
    if not request.state.settings.is_dev:
        raise HTTPException(404)


async def phone(request: Request) -> Response:
    _require_dev(request)
    prefill = request.query_params.get("url", "")
    if len(prefill) > _MAX_PREFILL:
        prefill = ""
    _ = i18n.translator(i18n.pick(request)[0])
    messages = {key.removeprefix("phone.js."): _(key) for key in _SCRIPT_MESSAGES}
    response = render(
        request,
        "dev_phone.html",
        {
            "prefill_url": prefill,
            "default_appid": request.state.settings.default_mp_appid,
            "messages": messages,
        },
    )
    response.headers["cache-control"] = "no-store"
    return response


async def start_login(request: Request) -> Response:
    """``/dev/login?pool=demo``: what a tenant's site does to start a login on its
    pool's own page: keep a random ``state`` in its session, then send the
    browser to ``https://{pool}/?state=...``. The callback checks it."""
    _require_dev(request)
    slug = request.query_params.get("pool", "demo")
    if not _SLUG_RE.match(slug):
        raise HTTPException(404)
    state = random_token(16)
    target = request.state.settings.pool_url(slug) + "/?" + urlencode({"state": state})
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        STATE_COOKIE, state, max_age=600, httponly=True, samesite="lax", path="/dev/"
    )
    return response


def state_check(request: Request) -> str:
    """What a tenant's backend decides about the callback's ``state``: ``ok`` (the
    one this browser's session started), ``missing`` or ``mismatch`` (refuse the
    code: it may be someone else's login, sent to this browser)."""
    got = request.query_params.get("state")
    kept = request.cookies.get(STATE_COOKIE)
    if not got:
        return "missing"
    if kept and hmac.compare_digest(got.encode(), kept.encode()):
        return "ok"
    return "mismatch"


def _issuer_slug(settings, iss: str | None) -> str | None:
    """The pool whose issuer (``scheme://slug.apex``) sent the code (RFC 9207 ``iss``)."""
    prefix, suffix = f"{settings.scheme}://", f".{settings.apex_netloc}"
    if not iss or not iss.startswith(prefix) or not iss.endswith(suffix):
        return None
    slug = iss[len(prefix) : -len(suffix)]
    return slug if _SLUG_RE.match(slug) else None


async def exchange_command(request: Request) -> str:
    """The command a pool's backend runs with the code this page received: the
    pool's default client (its own page's), its token endpoint, this page as the
    redirect_uri, and for the demo pool the file that holds the secret. Every
    value from the URL is shell-quoted: the command is meant to be pasted."""
    settings = request.state.settings
    params = request.query_params
    client_id, secret = "CLIENT_ID", "CLIENT_SECRET"
    endpoint = "POOL_URL/oidc/token"
    slug = _issuer_slug(settings, params.get("iss"))
    pool = await request.state.pools.get(slug) if slug else None
    if pool is not None:
        endpoint = settings.pool_url(pool.slug) + "/oidc/token"
        client = await request.state.clients.default(pool.id)
        if client is not None:
            client_id = client.client_id
        if pool.slug == DEMO_SLUG:
            secret = (
                "$(cat " + shlex.quote(str(settings.data_dir.resolve() / DEMO_SECRET_FILE)) + ")"
            )
    code = (params.get("code") or "CODE")[:_MAX_CALLBACK_VALUE]
    return " \\\n  ".join(
        [
            f'curl -s -u "{client_id}:{secret}"',
            "-d grant_type=authorization_code",
            "-d code=" + shlex.quote(code),
            "-d redirect_uri=" + shlex.quote(f"{settings.base_url}/dev/callback"),
            shlex.quote(endpoint),
        ]
    )


async def callback(request: Request) -> Response:
    _require_dev(request)
    params = request.query_params
    rows = [
        (name, None if params.get(name) is None else params[name][:_MAX_CALLBACK_VALUE])
        for name in _CALLBACK_PARAMS
    ]
    extra = [
        (name, value[:_MAX_CALLBACK_VALUE])
        for name, value in params.multi_items()[:_MAX_CALLBACK_PARAMS]
        if name not in _CALLBACK_PARAMS
    ]
    response = render(
        request,
        "dev_callback.html",
        {
            "rows": rows,
            "extra": extra,
            "has_code": bool(params.get("code")),
            "has_error": bool(params.get("error")),
            "state_check": state_check(request),
            "exchange": await exchange_command(request),
        },
    )
    response.delete_cookie(STATE_COOKIE, path="/dev/")  # a state works once
    # The code in the URL must not leak to other sites through links on this page.
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


async def open_link(request: Request) -> Response:
    """``POST /dev/phone/open {"content"}``: what WeChat's scanner does with a link QR
    (issue 17): the fake WeChat opens a mini program only under a published link rule
    (``/_fake/scan``). → ``{"appid", "path"}``, or 404 ``no_link_rule`` saying why; with
    a WeChat that is not the fake, ``{"appid": null}`` (not checked)."""
    _require_dev(request)
    data = await read_json(request)
    content = required_str(data, "content", max_len=_MAX_PREFILL)
    base = request.state.settings.wechat_api_base
    if content.startswith(_APP_LINKS):
        return await _open_app_link(base, content)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.post(f"{base}/_fake/scan", json={"content": content})
        answer = r.json()
    except (httpx.HTTPError, ValueError):
        return JSONResponse({"appid": None, "checked": False})
    if r.status_code == 404 and isinstance(answer, dict) and answer.get("error") == "no_rule":
        return JSONResponse(
            {"error": "no_link_rule", "error_description": str(answer.get("error_description"))},
            status_code=404,
        )
    if r.status_code == 200 and isinstance(answer, dict) and isinstance(answer.get("appid"), str):
        return JSONResponse({"appid": answer["appid"], "path": answer.get("path"), "checked": True})
    return JSONResponse({"appid": None, "checked": False})


# A URL Scheme or a URL Link WeChat made for a ticket (issue 20: the phone's own login).
_APP_LINKS = ("weixin://dl/business/", "https://wxaurl.cn/")
_TICKET_QUERY = re.compile(r"(?:^|&)ticket=([A-Za-z0-9_-]{16,64})(?:&|$)")


async def _open_app_link(base: str, link: str) -> Response:
    """What WeChat does when the phone opens ``link`` (the fake's ``/_fake/openlink``):
    → ``{"appid", "path", "ticket", "scene"}`` (1065 a URL Scheme, 1194 a URL Link)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.post(f"{base}/_fake/openlink", json={"link": link})
        answer = r.json()
    except (httpx.HTTPError, ValueError):
        answer, r = None, None
    if r is None or not isinstance(answer, dict):
        return JSONResponse(
            {"error": "unknown_link", "error_description": "WeChat did not answer."},
            status_code=502,
        )
    if r.status_code != 200:
        return JSONResponse(
            {"error": str(answer.get("error") or "unknown_link"),
             "error_description": str(answer.get("error_description") or "")},
            status_code=r.status_code if r.status_code in (404, 410) else 502,
        )  # fmt: skip
    found = _TICKET_QUERY.search(str(answer.get("query") or ""))
    return JSONResponse(
        {"appid": answer.get("appid"), "path": answer.get("path"), "checked": True,
         "ticket": found.group(1) if found else None, "scene": answer.get("scene")}
    )  # fmt: skip


def dev_routes() -> list[BaseRoute]:
    return [
        Route("/dev/phone", phone, methods=["GET"]),
        Route("/dev/phone/open", open_link, methods=["POST"]),
        Route("/dev/callback", callback, methods=["GET"]),
        Route("/dev/login", start_login, methods=["GET"]),
    ]
