"""A ticket's QR image, rendered once (issue 16, finding 4).

Rendering a QR costs milliseconds of CPU (more with a logo), a status read a
fraction of one; the image route needs only the public ticket id. So each image
is rendered once per ticket and format and kept in Redis for the ticket's
remaining life (every process of every machine serves it from there; the
number of tickets, and so of images, is rate limited), renders are counted
per client IP and pool (``PORTAL_RATE_QR_IMAGE``), and browsers are told to
keep it: ``private, max-age=<the ticket's remaining life>, immutable`` with an
ETag, which a revalidation (``If-None-Match``) answers with 304 without
reading the image. Mini-program codes (``wxacode``) are cached by
``portal/scan/wxacode.py`` the same way, and counted there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from portal.scan import qrimage
from portal.scan.tickets import TicketState
from portal.tenants import linkrules
from portal.tenants.pools import Pool

MEDIA = {"png": "image/png", "svg": "image/svg+xml"}

# One render per image at a time in this process, however many ask at once.
_inflight: dict[str, asyncio.Future[bytes]] = {}


def etag(pool: Pool, ticket: str, fmt: str, kind: str) -> str:
    """What the image depends on: a new logo (or shape) is a new image."""
    text = f"{ticket}|{fmt}|{kind}|{pool.logo_sha256}|{pool.logo_shape}"
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def _headers(tag: str, state: TicketState) -> dict[str, str]:
    # The image never changes while the ticket lives; after that it is useless.
    keep = f"max-age={state.expires_in}, immutable" if state.expires_in else "no-cache"
    return {"etag": tag, "cache-control": f"private, {keep}"}


def _not_modified(request: Request, tags: list[str]) -> bool:
    sent = request.headers.get("if-none-match")
    if not sent:
        return False
    given = {t.strip().removeprefix("W/") for t in sent.split(",")}
    return "*" in given or any(t in given for t in tags)


async def response(request: Request, state: TicketState, fmt: str) -> Response:
    """The answer to ``GET /api/qrcode/{ticket}.{fmt}`` for a ticket of this host's pool."""
    pool: Pool = request.state.pool
    ticket = state.ticket
    link_tag = etag(pool, ticket, fmt, "link")
    wxa_tag = etag(pool, ticket, fmt, "wxacode")
    tags = [wxa_tag, link_tag] if pool.qr_type == "wxacode" else [link_tag]
    if _not_modified(request, tags):
        return Response(status_code=304, headers=_headers(tags[0], state))
    if pool.qr_type == "wxacode":  # a mini-program code from WeChat (None: fall back to link)
        from portal.scan import wxacode

        logo = await request.state.logos.get(request, pool)
        answer = await wxacode.image_response(request, pool, ticket, fmt, logo)
        if answer is not None:
            answer.headers.update(_headers(wxa_tag, state))
            return answer
    key = f"qrimg:{pool.id}:{ticket}:{link_tag.strip(chr(34))}"
    cached = await request.state.mux.execute("GET", key)
    if cached is not None:
        image = base64.b64decode(cached)
    else:
        image = await _render_once(request, state, fmt, key)
    return Response(image, media_type=MEDIA[fmt], headers=_headers(link_tag, state))


async def _render_once(request: Request, state: TicketState, fmt: str, key: str) -> bytes:
    if key in _inflight:
        return await asyncio.shield(_inflight[key])
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    _inflight[key] = future
    try:
        image = await _render(request, state, fmt)
        future.set_result(image)
        # Stored before the render stops being "in flight": a request whose GET
        # missed meanwhile finds one or the other (the shared connection answers
        # in order), never neither.
        if state.expires_in > 0:  # kept no longer than the ticket can be scanned
            with contextlib.suppress(RedisError, ConnectionError):
                await request.state.mux.execute(
                    "SET", key, base64.b64encode(image).decode(), "EX", state.expires_in
                )
    except BaseException as exc:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits
        raise
    finally:
        del _inflight[key]
    return image


async def _render(request: Request, state: TicketState, fmt: str) -> bytes:
    s = request.state
    pool: Pool = s.pool
    await s.limits.check("qr_image", f"{pool.id}:{s.client_ip}", s.settings.rate_qr_image)
    logo = await s.logos.get(request, pool)
    content = linkrules.content(s.settings, pool, state.ticket)
    # Rendering is CPU work: keep it off the event loop so waiters stay prompt.
    if fmt == "png":
        return await asyncio.to_thread(
            qrimage.render_png, content, logo, logo_shape=pool.logo_shape
        )
    svg = await asyncio.to_thread(qrimage.render_svg, content, logo, logo_shape=pool.logo_shape)
    return svg.encode()
