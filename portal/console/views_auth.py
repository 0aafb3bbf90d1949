"""Sign-in, sign-out, and the list of the admin's pools (where a superadmin creates pools)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portal.console import auth, store
from portal.console.common import (
    Ctx,
    Forbidden,
    done,
    page,
    read_form,
    security_headers,
    sessions,
)
from portal.console.trail import audited
from portal.errors import PortalError
from portal.tenants import admins, pools
from portal.web import i18n
from portal.web.pages import render

log = logging.getLogger(__name__)

# Verified when the email is unknown, so that a wrong email costs as long as a
# wrong password and the timing does not tell which accounts exist.
_DUMMY_HASH = admins.hash_password("not the password of anyone")

# Sign-ins of this process waiting for (or in) a password hash. Past the cap a
# sign-in is refused at once (429, Retry-After 5) instead of queueing for many
# seconds behind a storm: the hashing threads' queue stays short.
MAX_VERIFYING = 32
_verifying = 0


def _safe_next(value: object) -> str:
    """Only a console path of this host: never an open redirect."""
    if not isinstance(value, str) or not value.startswith("/console/") or "\\" in value:
        return "/console/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return "/console/"
    return value


def _login_page(
    request: Request, *, email: str = "", error: str = "", status: int = 200, retry: int = 0
) -> Response:
    token, new = auth.login_csrf(request)
    _ = i18n.translator(i18n.pick(request)[0])
    message = _(error, minutes=max(1, (retry + 59) // 60)) if error else ""
    response = render(
        request,
        "console/login.html",
        {
            "csrf": token,
            "email": email,
            "error": message,
            "next": _safe_next(request.query_params.get("next")),
        },
        status,
    )
    if new:
        auth.set_login_csrf_cookie(response, request.state.settings, token)
    if retry:
        response.headers["retry-after"] = str(retry)
    return security_headers(response)


async def login_get(request: Request) -> Response:
    current = request.cookies.get(auth.cookie_name(request.state.settings))
    if current and await sessions(request).load(current) is not None:
        return security_headers(RedirectResponse("/console/", status_code=303))
    return _login_page(request)


async def login_post(request: Request) -> Response:
    form = await read_form(request)
    email = str(form.get("email") or "").strip()[:254]
    password = str(form.get("password") or "")
    if not auth.csrf_ok(request.cookies.get(auth.LOGIN_CSRF_COOKIE), form.get("csrf")):
        return _login_page(request, email=email, error="console.login.expired", status=403)
    if not email or not password:
        return _login_page(request, email=email, error="console.login.missing", status=400)
    ip = request.state.client_ip
    throttle = auth.Throttle(request.state.mux)
    # Counted before the password is verified, so parallel attempts cannot pass the limit.
    wait = await throttle.reserve(email, ip)
    if wait:
        return _login_page(
            request, email=email, error="console.login.throttled", status=429, retry=wait
        )
    global _verifying
    if _verifying >= MAX_VERIFYING:  # hashes already queued here: answer now, not in seconds
        await throttle.not_tried(email, ip)
        return _login_page(request, email=email, error="console.login.busy", status=429, retry=5)
    _verifying += 1
    try:
        row = await store.admin_by_email(request.state.db, email)
        ok = await admins.verify_password(row.password_hash if row else _DUMMY_HASH, password)
    finally:
        _verifying -= 1
    if not ok or row is None or row.disabled:
        log.info("console sign-in failed from %s", ip)  # never the email or password
        return _login_page(request, email=email, error="console.login.failed", status=400)
    await throttle.signed_in(email, ip)
    # A new session id at every sign-in (session fixation); any old one ends.
    cookie = auth.cookie_name(request.state.settings)
    await sessions(request).delete(request.cookies.get(cookie))
    session = await sessions(request).create(row.id)
    await store.record_admin_login(request.state.db, row.id)
    form_next = _safe_next(form.get("next"))
    response = security_headers(RedirectResponse(form_next, status_code=303))
    auth.set_session_cookie(response, request.state.settings, session)
    auth.clear_login_csrf_cookie(response, request.state.settings)
    return response


async def logout(request: Request, ctx: Ctx) -> Response:
    await sessions(request).delete(ctx.session.id)
    response = security_headers(RedirectResponse("/console/login?bye=1", status_code=303))
    auth.clear_session_cookie(response, request.state.settings)
    return response


async def index(request: Request, ctx: Ctx) -> Response:
    rows = await store.pools_of(request.state.db, ctx.admin)
    return await page(ctx, "console/index.html", {"pools": rows, "values": {}, "errors": {}})


async def create_pool(request: Request, ctx: Ctx) -> Response:
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    assert ctx.form is not None
    slug = str(ctx.form.get("slug") or "").strip().lower()
    name = str(ctx.form.get("name") or "")
    settings = request.state.settings
    try:
        async with request.state.db.acquire() as conn, conn.transaction():
            created = await pools.create(
                conn, request.state.box, slug=slug, name=name, allow_http=settings.is_dev
            )
            await conn.execute(
                "INSERT INTO pool_admins (pool_id, admin_id) VALUES ($1, $2)",
                created.pool.id,
                ctx.admin.id,
            )
            await audited(
                conn,
                ctx,
                "pool.create",
                created.pool.slug,
                after={"slug": created.pool.slug, "name": created.pool.name},
                pool_id=created.pool.id,
            )
    except PortalError as exc:
        _ = i18n.translator(i18n.pick(request)[0])
        key = {"invalid_slug": "console.err.slug", "slug_taken": "console.err.slug_taken"}.get(
            exc.error, "console.err.name"
        )
        rows = await store.pools_of(request.state.db, ctx.admin)
        return await page(
            ctx,
            "console/index.html",
            {"pools": rows, "values": {"slug": slug, "name": name}, "errors": {"pool": _(key)}},
            400,
        )
    await pools.announce_change(request.state.hub, created.pool.slug)  # drop a cached miss
    return await done(
        ctx, f"/console/pools/{created.pool.slug}", "ok", "console.flash.pool_created"
    )
