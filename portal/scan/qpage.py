"""``GET /q/{ticket}`` on a pool host: the page a phone sees when it opens a QR
code's link outside the mini program (a phone's camera, a browser, or WeChat's
own scanner before the link rule is set up). It says to scan with WeChat; in
dev it links to the phone simulator.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

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
    this_url = f"{settings.pool_url(pool.slug)}/q/{ticket}"
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
        {"in_wechat": in_wechat, "simulator_url": simulator_url},
    )
    # The ticket is in this page's URL: keep it out of Referer headers and caches.
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["vary"] = "user-agent"
    return response
