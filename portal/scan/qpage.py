"""``GET /q/{ticket}`` on a pool host and on the apex (the default mini program's
one link rule, ``{PORTAL_QR_BASE}/q/``, issue 17): the page a phone sees when it
opens a QR code's link outside the mini program (a phone's camera, a browser, or
WeChat's own scanner before the link rule is set up). It says to scan with
WeChat; in dev it links to the phone simulator. On the apex the ticket names its
pool.

Also the link rules' verification files (``tenants/linkrules.py``): WeChat fetches
the file a rule's admin was handed under the rule's last path segment
(``/q/NAME.txt``) or at the host's root (``/NAME.txt``) before it publishes the
rule: the default mini program's on the apex (and the QR host), a private one's
on its pool's host.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portal.scan.tickets import TicketNotFound
from portal.tenants import linkrules
from portal.web import i18n
from portal.web.pages import render

# What the page accepts without looking the ticket up: the QR API's tickets are
# URL-safe base64, so anything else cannot be one of ours.
_TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def scan_outside_wechat(request: Request) -> Response:
    """``GET /q/{ticket}`` on a pool host: the QR was opened outside the mini program."""
    ticket = request.path_params["ticket"]
    if not _TICKET_RE.match(ticket):
        raise HTTPException(404)
    settings = request.state.settings
    pool = request.state.pool
    # The simulator link carries what the pool's QR code says now (issue 17): on the
    # default mini program that is under the apex's rule, not this older address.
    return _page(request, pool, linkrules.content(settings, pool, ticket), None)


async def scan_outside_wechat_apex(request: Request) -> Response:
    """``GET /q/{ticket}`` on the apex (or ``PORTAL_QR_BASE``'s host): the default
    mini program's link rule, one for every pool it serves; the ticket names its pool."""
    ticket = request.path_params["ticket"]
    if not _TICKET_RE.match(ticket):
        raise HTTPException(404)
    try:
        state = await request.state.tickets.recent_state(ticket)
    except TicketNotFound:
        raise HTTPException(404) from None
    pool = await request.state.pools.get_by_id(state.pool_id)
    if pool is None:
        raise HTTPException(404)
    settings = request.state.settings
    logo = f"{settings.pool_url(pool.slug)}/logo?v={pool.logo_sha256 or 'default'}"
    return _page(request, pool, linkrules.content(settings, pool, ticket), logo)


def _page(request: Request, pool, this_url: str, logo_src: str | None) -> Response:
    settings = request.state.settings
    # The language is remembered per host: carry it over to the apex.
    lang = i18n.pick(request)[0]
    simulator_url = (
        f"{settings.base_url}/dev/phone?{urlencode({'url': this_url, 'lang': lang})}"
        if settings.is_dev
        else None
    )
    in_wechat = "micromessenger" in request.headers.get("user-agent", "").lower()
    response = render(
        request,
        "scan_outside_wechat.html",
        {
            "in_wechat": in_wechat,
            "simulator_url": simulator_url,
            "pool": pool,
            "logo_src": logo_src,
        },
    )
    # The ticket is in this page's URL: keep it out of Referer headers and caches.
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["vary"] = "user-agent"
    return response


async def _verify_file(request: Request, appid: str | None) -> Response:
    name = request.path_params["name"] + ".txt"
    if appid is None or not linkrules.VERIFY_NAME_RE.match(name):
        raise HTTPException(404)
    found = await linkrules.get_file(request.state.db, appid)
    if found is None or found.name != name:
        raise HTTPException(404)
    return Response(
        found.content,
        media_type="text/plain; charset=utf-8",
        headers={"cache-control": "no-cache"},
    )


async def verify_file_apex(request: Request) -> Response:
    """The default mini program's verification file, on the apex (and the QR host)."""
    return await _verify_file(request, request.state.settings.default_mp_appid or None)


async def verify_file_pool(request: Request) -> Response:
    """A private mini program's verification file, on its pool's host."""
    return await _verify_file(request, request.state.pool.mp_appid)


def apex_routes() -> list[BaseRoute]:
    return [
        Route("/q/{name}.txt", verify_file_apex, methods=["GET", "HEAD"]),
        Route("/q/{ticket}", scan_outside_wechat_apex, methods=["GET", "HEAD"]),
        Route("/{name}.txt", verify_file_apex, methods=["GET", "HEAD"]),
    ]


def pool_routes() -> list[BaseRoute]:
    return [
        Route("/q/{name}.txt", verify_file_pool, methods=["GET", "HEAD"]),
        Route("/q/{ticket}", scan_outside_wechat, methods=["GET", "HEAD"]),
        Route("/{name}.txt", verify_file_pool, methods=["GET", "HEAD"]),
    ]
