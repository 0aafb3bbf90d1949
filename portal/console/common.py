"""What every console handler does first: who is signed in, which pool, the CSRF
check, and rendering with the console's headers and flash messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portal.console import auth, store
from portal.errors import PortalError
from portal.tenants.admins import Admin
from portal.tenants.pools import Pool
from portal.web import headers, i18n, jsonapi
from portal.web.pages import lang_switch_url, render

MAX_FORM_BYTES = 64 * 1024
MAX_FILE_BYTES = 1024 * 1024  # the logo's limit (views_pool.LOGO_MAX_BYTES)


class CsrfFailed(PortalError):
    status_code = 403
    error = "csrf_failed"
    description = "The form expired or did not come from this console; reload it and try again."


class Forbidden(PortalError):
    status_code = 403
    error = "console_forbidden"
    description = "Only a superadmin can do this."


class NotSignedIn(Exception):
    """Caught by the handlers' wrapper: GET goes to the sign-in page, POST too."""


@dataclass
class Ctx:
    request: Request
    session: auth.Session
    admin: Admin
    pool: Pool | None = None
    form: FormData | None = None

    @property
    def state(self):
        return self.request.state


def sessions(request: Request) -> auth.Sessions:
    return auth.Sessions(request.state.redis)


async def signed_in(request: Request) -> tuple[auth.Session, Admin]:
    settings = request.state.settings
    session = await sessions(request).load(request.cookies.get(auth.cookie_name(settings)))
    if session is None:
        raise NotSignedIn()
    admin = await store.active_admin(request.state.db, session.admin_id)
    if admin is None:  # disabled or deleted since: the session ends with it
        await sessions(request).delete(session.id)
        raise NotSignedIn()
    return session, admin


class TooLarge(PortalError):
    status_code = 413
    error = "console_too_large"
    description = "The form or file sent is too large."


async def read_form(request: Request, *, files: int = 0) -> FormData:
    # Refused before reading: a file part would otherwise be spooled to disk whole.
    # The cap holds as the body is read too (a chunked upload has no length to check).
    return await jsonapi.read_form(
        request,
        max_bytes=MAX_FORM_BYTES + files * MAX_FILE_BYTES,
        max_fields=50,
        max_files=files,
        max_part_size=MAX_FORM_BYTES,
        too_large=TooLarge(),
    )


async def context(request: Request, *, pool: bool = True, files: int = 0) -> Ctx:
    """The signed-in admin, the pool of the path (404 if theirs it is not: before
    anything else about the request is looked at), and for POST the form with
    its CSRF token checked."""
    session, admin = await signed_in(request)
    ctx = Ctx(request, session, admin)
    if pool:
        ctx.pool = await store.pool_of(request.state.db, admin, request.path_params["slug"])
        if ctx.pool is None:
            raise HTTPException(404)
    if request.method == "POST":
        ctx.form = await read_form(request, files=files)
        if not auth.csrf_ok(session.csrf, ctx.form.get("csrf")):
            raise CsrfFailed()
    return ctx


def security_headers(response: Response) -> Response:
    """What every console answer adds: never cached (admins' data, CSRF tokens).
    Pages already have their CSP (``headers.CONSOLE``) from render(); redirects
    and downloads get a policy that allows nothing. nosniff, X-Frame-Options
    and HSTS come with every response from the middleware."""
    response.headers["cache-control"] = "no-store"
    response.headers.setdefault("content-security-policy", headers.LOCKED_DOWN)
    response.headers["referrer-policy"] = headers.DEFAULT_REFERRER
    return response


async def page(
    ctx: Ctx,
    template: str,
    data: dict[str, Any] | None = None,
    status_code: int = 200,
    *,
    get_path: str | None = None,
) -> Response:
    """``get_path``: for a form re-shown in answer to a POST, the page's own address
    (where the language switch must lead, not to the POST-only action)."""
    flashes = ctx.session.pop_flashes()
    if ctx.session.dirty:
        await sessions(ctx.request).save(ctx.session)
    values = {
        "admin": ctx.admin,
        "csrf": ctx.session.csrf,
        "flashes": flashes,
        "cpool": ctx.pool,
        "section": "",
        **(data or {}),
    }
    if ctx.request.method != "GET":
        lang = i18n.pick(ctx.request)[0]
        values["switch_url"] = lang_switch_url(ctx.request, lang, {}).replace(
            ctx.request.url.path, get_path or "/console/", 1
        )
    response = render(ctx.request, template, values, status_code)
    return security_headers(response)


async def done(ctx: Ctx, to: str, kind: str = "", key: str = "", **params: Any) -> Response:
    """POST-redirect-GET, with a flash message for the next page."""
    if key:
        ctx.session.flash(kind or "ok", key, **params)
        await sessions(ctx.request).save(ctx.session)
    return security_headers(RedirectResponse(to, status_code=303))


def login_redirect(request: Request) -> Response:
    target = request.url.path if request.method == "GET" else "/console/"
    if request.url.query and request.method == "GET":
        target += "?" + request.url.query
    return security_headers(
        RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
    )


def pool_path(pool: Pool, rest: str = "") -> str:
    return f"/console/pools/{pool.slug}{rest}"


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    if len(phone) <= 4:
        return "*" * len(phone)
    if len(phone) < 8:
        return phone[:1] + "*" * (len(phone) - 3) + phone[-2:]
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def lines(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [line.strip() for line in value.splitlines() if line.strip()]
