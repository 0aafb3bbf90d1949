"""The QR API on a pool host (docs/design.md §5): create a ticket, show its QR, follow
its status by long poll or Server-Sent Events, and exchange it once confirmed."""

from __future__ import annotations

import asyncio
import hashlib
import re
from urllib.parse import quote, urlsplit

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from portal.errors import PortalError, ValidationError
from portal.oidc import tokens
from portal.scan import applink, origin, qrcache, users
from portal.scan.tickets import FINAL, TicketNotFound, TicketState, dumps
from portal.scan.waiters import Waiter
from portal.tenants import linkrules
from portal.tenants.pools import Pool
from portal.web import cors
from portal.web.jsonapi import (
    Direct,
    FastJSONResponse,
    optional_str,
    read_json,
    required_str,
)

TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_WAIT = 30
SSE_KEEPALIVE = 15.0
# x-accel-buffering: nginx must pass events through at once, not buffer them.
SSE_RAW_HEADERS = [(b"cache-control", b"no-cache, no-store"), (b"x-accel-buffering", b"no")]


class InvalidClient(PortalError):
    error = "invalid_client"
    description = "Unknown client_id for this pool."


def started_at(request: Request, site: str | None = None) -> dict[str, str]:
    """Where a ticket is being made, for its confirm screen (issue 20): the browser's
    User-Agent and device, and the website's host (its ``Origin``, else its
    ``Referer``). Kept raw in the ticket; parsed only if someone scans it."""
    agent = request.headers.get("user-agent", "")
    if site is None:
        url = urlsplit(request.headers.get("origin") or request.headers.get("referer") or "")
        site = (url.hostname or "") if url.scheme in ("http", "https") else ""
    return {"user_agent": agent, "site": site, "device": origin.device_of(agent)}


def content_url(request: Request, ticket: str) -> str:
    return linkrules.content(request.state.settings, request.state.pool, ticket)


async def _state_of_pool(request: Request, ticket: str, *, recent: bool = False) -> TicketState:
    """The ticket, if it exists and belongs to this host's pool (else 404 either way)."""
    if not TICKET_RE.match(ticket):
        raise TicketNotFound()
    tickets = request.state.tickets
    state = await (tickets.recent_state(ticket) if recent else tickets.state(ticket))
    if state.pool_id != request.state.pool.id:
        raise TicketNotFound()
    await cors.check_ticket(request, state.client_id)  # a website: only the ticket's client's
    return state


def _secret(request: Request) -> str | None:
    return request.headers.get("x-ticket-secret") or request.query_params.get("secret")


async def create_qrcode(request: Request) -> Response:
    pool: Pool = request.state.pool
    data = await read_json(request, optional=True)
    client_id = optional_str(data, "client_id", max_len=64)
    if client_id:
        client = await request.state.clients.get(pool.id, client_id)
    else:
        client = await request.state.clients.default(pool.id)
    if client is None or client.is_management:  # a management client logs nobody in
        raise InvalidClient()
    cors.check(request, client)  # from a website: only one of the client's web origins
    new = await request.state.tickets.create(
        pool_id=pool.id,
        client_id=client.client_id,
        lifetime=pool.qr_lifetime,
        address=request.state.client_ip,
        **started_at(request),
    )
    base = request.state.settings.pool_url(pool.slug)
    content = linkrules.content(request.state.settings, pool, new.ticket)  # issue 17
    body = {
        "ticket": new.ticket,
        "secret": new.secret,
        "expires_in": new.expires_in,
        "qrcode": {
            "content": content,
            "png": f"{base}/api/qrcode/{new.ticket}.png",
            "svg": f"{base}/api/qrcode/{new.ticket}.svg",
        },
    }
    settings = request.state.settings
    if settings.is_dev:  # never in production: the phone simulator with this code filled in
        body["dev_phone_url"] = f"{settings.base_url}/dev/phone?url={quote(content, safe='')}"
    return FastJSONResponse(body, status_code=201, headers={"cache-control": "no-store"})


class LogoCache:
    """Pool logos by content hash; a new logo has a new hash, so nothing goes stale."""

    def __init__(self, max_entries: int = 256) -> None:
        self._logos: dict[str, bytes] = {}
        self._max = max_entries

    async def get(self, request: Request, pool: Pool) -> bytes | None:
        if pool.logo_sha256 is None:
            return None
        logo = self._logos.get(pool.logo_sha256)
        if logo is None:
            logo = await request.state.db.fetchval(
                "SELECT logo_png FROM pools WHERE id = $1", pool.id
            )
            if logo is None or hashlib.sha256(logo).hexdigest() != pool.logo_sha256:
                return logo  # changed under us: use it, do not cache under the old hash
            if len(self._logos) >= self._max:
                self._logos.pop(next(iter(self._logos)))
            self._logos[pool.logo_sha256] = logo
        return logo


async def qrcode_png(request: Request) -> Response:
    return await _qrcode_image(request, "png")


async def qrcode_svg(request: Request) -> Response:
    return await _qrcode_image(request, "svg")


async def _qrcode_image(request: Request, fmt: str) -> Response:
    # Rendered once per ticket, cached, rate limited per address (portal/scan/qrcache.py).
    state = await _state_of_pool(request, request.path_params["ticket"])
    return await qrcache.response(request, state, fmt)


async def status(request: Request) -> Response:
    ticket = request.path_params["ticket"]
    try:
        wait = int(request.query_params.get("wait", "0"))
    except ValueError:
        raise ValidationError("wait must be a whole number of seconds.") from None
    if not 0 <= wait <= MAX_WAIT:
        raise ValidationError(f"wait must be between 0 and {MAX_WAIT}.")
    known = request.query_params.get("known")
    tickets = request.state.tickets
    state = await _state_of_pool(request, ticket, recent=True)
    tickets.check_secret(state, _secret(request))
    if wait and known == state.status and state.status not in FINAL:
        with request.state.waiters.watch(ticket, request.state.client_ip) as waiter:
            listener = asyncio.ensure_future(_watch_disconnect(request.receive, waiter))
            try:
                state = await tickets.state(ticket)  # re-read now that we are registered
                loop = asyncio.get_running_loop()
                deadline = loop.time() + wait
                while state.status == known and state.status not in FINAL:
                    remaining = min(deadline - loop.time(), state.expires_in + 0.05)
                    if remaining <= 0:
                        break
                    await waiter.wait(remaining)
                    if waiter.gone:
                        break  # nobody to answer
                    state = await tickets.state(ticket)
                    if waiter.stopping:
                        break  # the process is stopping: answer with the status now
            finally:
                listener.cancel()
    return FastJSONResponse(state.public(), headers={"cache-control": "no-store"})


def _sse(data: dict) -> bytes:
    return f"event: status\ndata: {dumps(data)}\n\n".encode()


async def _watch_disconnect(receive: Receive, waiter: Waiter) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    waiter.gone = True
    waiter.wake()


class Events:
    """``GET /api/qrcode/{ticket}/events``: Server-Sent Events, as a plain ASGI
    app rather than a StreamingResponse. Ten thousand open streams are the
    normal load here, and each StreamingResponse would carry a task group of
    two tasks; this keeps one small task per stream (to hear the client
    leave) besides the request's own."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        ticket = request.path_params["ticket"]
        tickets = request.state.tickets
        state = await _state_of_pool(request, ticket)
        tickets.check_secret(state, _secret(request))
        with request.state.waiters.watch(ticket, request.state.client_ip) as waiter:
            listener = asyncio.ensure_future(_watch_disconnect(receive, waiter))
            try:
                await self._stream(send, tickets, ticket, waiter)
            finally:
                listener.cancel()

    async def _stream(self, send: Send, tickets, ticket: str, waiter: Waiter) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), *SSE_RAW_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        current = await tickets.state(ticket)
        sent = current.public()
        await send(
            {
                "type": "http.response.body",
                "body": b"retry: 2000\n\n" + _sse(sent),
                "more_body": True,
            }
        )
        stale = False  # the last re-read failed: try again soon
        while current.status not in FINAL:
            timeout = 1.0 if stale else min(SSE_KEEPALIVE, current.expires_in + 0.05)
            woke = await waiter.wait(timeout)
            if waiter.gone:
                return
            if waiter.stopping:
                break  # the process is stopping: end cleanly, EventSource reconnects elsewhere
            chunk = b""
            if woke or stale or current.expires_in <= timeout:
                try:
                    current = await tickets.state(ticket)
                    stale = False
                except RedisError:
                    # Keep the stream open and re-read shortly: what changed
                    # meanwhile is still in Redis, so nothing is missed.
                    stale = True
                else:
                    public = current.public()
                    if (
                        public["status"] != sent["status"]
                        or public["scanned_by"] != sent["scanned_by"]
                    ):
                        chunk, sent = _sse(public), public
            if not chunk and not woke and not stale:
                chunk = b": keepalive\n\n"
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def exchange(request: Request) -> Response:
    ticket = request.path_params["ticket"]
    data = await read_json(request)
    secret = required_str(data, "secret", max_len=100)
    await _state_of_pool(request, ticket)
    pool: Pool = request.state.pool
    # A ticket of the hosted page (/oidc/auth, the pool's page) is refused here,
    # unspent, by the exchange script itself (Tickets.create(hosted=True)).
    won = await request.state.tickets.exchange(ticket, secret)
    db = request.state.db
    client = await request.state.clients.get(pool.id, won.client_id)
    user = await users.get(db, pool.id, won.user_id)
    if client is None or user is None:  # deleted between confirm and exchange
        raise PortalError("The login can no longer be completed.", error="invalid_grant")
    # What the client is registered for, nothing more: the exchange authenticates
    # no client (the ticket secret is the only credential, and it sits in a
    # browser), so a refresh token only for a confidential client allowed
    # offline_access, whose refresh grant then needs the client's secret.
    scope = client.granted(client.scopes)
    async with db.acquire() as conn:  # one INSERT: atomic without a transaction
        issued = await tokens.issue(
            conn,
            request.state.keys,
            request.state.box,
            issuer=request.state.settings.pool_url(pool.slug),
            pool=pool,
            client_pk=client.id,
            client_id=client.client_id,
            user=user,
            scope=scope,
            auth_time=won.auth_time,
            refresh=client.may_refresh,
        )
    return FastJSONResponse(
        {"user": users.public_user(user), **issued.as_dict()},
        headers={"cache-control": "no-store", "pragma": "no-cache"},
    )


async def app_link(request: Request) -> Response:
    """``POST /api/qrcode/{ticket}/applink`` ``{"secret", "kind"?}``: a link that opens
    the mini program's confirm page for this ticket on the phone itself (issue 20)."""
    ticket = request.path_params["ticket"]
    data = await read_json(request)
    secret = required_str(data, "secret", max_len=100)
    kind = optional_str(data, "kind", max_len=16) or "scheme"
    if kind not in applink.KINDS:
        raise ValidationError("kind must be scheme or url_link.")
    state = await _state_of_pool(request, ticket)
    request.state.tickets.check_secret(state, secret)
    url = await applink.link(request, request.state.pool, state, kind)
    return FastJSONResponse(
        {"url": url, "kind": kind, "expires_in": state.expires_in},
        headers={"cache-control": "no-store"},
    )


def routes() -> list[Route]:
    return [
        Route("/api/qrcode", Direct(create_qrcode), methods=["POST"]),
        Route("/api/qrcode/{ticket}.png", qrcode_png, methods=["GET"]),
        Route("/api/qrcode/{ticket}.svg", qrcode_svg, methods=["GET"]),
        Route("/api/qrcode/{ticket}/status", Direct(status), methods=["GET"]),
        Route("/api/qrcode/{ticket}/events", Events(), methods=["GET"]),
        Route("/api/qrcode/{ticket}/exchange", Direct(exchange), methods=["POST"]),
        Route("/api/qrcode/{ticket}/applink", Direct(app_link), methods=["POST"]),
    ]
