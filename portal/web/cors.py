"""Cross-origin use of a pool's browser APIs by its clients' websites (docs/design.md §5,
"JavaScript SDK and embedded component").

The QR API and the OpenID Connect endpoints a browser-only client calls
answer a browser on another origin only when that origin is a registered web
origin of the client concerned: for ticket creation the client it names (or
the pool's default client), for a ticket's status, events, images and
exchange the client the ticket was created for, for the token and revocation
endpoints the authenticated client, for userinfo the client the access token
was issued to. Public documents (discovery, RFC 8414 metadata, JWKS) answer
any origin with ``Access-Control-Allow-Origin: *`` and never with credentials
(``PUBLIC``). A request whose ``Origin``
is present but neither the pool's own nor registered is refused with 403
``origin_not_allowed``: a "simple" cross-origin request (a form-encoded POST,
an ``EventSource``) is sent without a preflight, so withholding the CORS
headers alone would let it run. Requests without ``Origin`` (servers, curl)
are not concerned.

Two parts: ``check(request, client)``, which a handler calls once it knows the
client (one line in each), and ``CORSMiddleware``, which answers preflights and
adds the headers to the responses of the checked requests. A preflight carries
no body (no ``client_id``) and must not cost a ticket read, so it admits an
origin registered by any client of the pool; the actual request is then
checked against its own client.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.errors import PortalError

# Paths of a pool host that browsers on clients' websites may call.
PREFIXES = ("/api/qrcode", "/oidc/token", "/oidc/userinfo", "/oidc/revoke", "/oidc/par")
# Public documents: the same answer for everyone, readable from any origin.
PUBLIC = (
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/oidc/jwks",
)
ALLOW_METHODS = "GET, POST"
ALLOW_HEADERS = "Content-Type, X-Ticket-Secret, Authorization"
# A browser-only client reads why userinfo refused its token (RFC 6750 §3).
EXPOSE_HEADERS = "WWW-Authenticate"
PREFLIGHT_MAX_AGE = "600"
_SCOPE_KEY = "portal_cors"  # the origin a handler admitted, or False if refused

_POOL_ORIGINS_SQL = """SELECT DISTINCT unnest(web_origins) FROM clients WHERE pool_id = $1"""


class OriginNotAllowed(PortalError):
    status_code = 403
    error = "origin_not_allowed"
    description = "This website's origin is not registered for the client."


def concerned(path: str) -> bool:
    return path.startswith(PREFIXES) and any(
        path == p or path.startswith((p + "/", p + ".")) for p in PREFIXES
    )


def _origin(scope: Scope) -> str | None:
    # The raw headers, not a Headers object: this runs on the busiest routes.
    for name, value in scope["headers"]:
        if name == b"origin":
            return value.decode("latin-1")
    return None


def own_origins(scope: Scope, headers: Headers) -> tuple[str, ...]:
    state = scope["state"]
    pool_url = state["settings"].pool_url(state["pool"].slug)
    return (pool_url, f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")


class HasOrigins(Protocol):
    """A client, as far as CORS is concerned (``tenants.clients.Client`` is one)."""

    web_origins: Collection[str]


def check(request: Request, client: HasOrigins) -> None:
    """Admit the request's ``Origin`` for this client, or raise ``OriginNotAllowed``.
    No ``Origin`` (not a browser, or a same-origin GET) and the pool's own pages pass."""
    _admit(request, client.web_origins)


def _admit(request: Request, web_origins: Collection[str]) -> None:
    origin = _origin(request.scope)
    if origin is None or origin in own_origins(request.scope, request.headers):
        return
    if origin in web_origins:
        request.scope[_SCOPE_KEY] = origin
        return
    request.scope[_SCOPE_KEY] = False
    raise OriginNotAllowed()


async def check_ticket(request: Request, client_id: str) -> None:
    """``check`` for the client a ticket was created for."""
    if _origin(request.scope) is None:
        return  # a server, or a same-origin GET: costs nothing more
    client = await request.state.clients.get(request.state.pool.id, client_id)
    # A client deleted since: nobody's website may use the ticket.
    _admit(request, client.web_origins if client is not None else ())


class PoolOrigins:
    """Every web origin registered by some client of a pool, for preflights and for
    errors raised before a handler knew its client. Briefly cached per process:
    the actual request is always checked against its client."""

    def __init__(self, ttl: float = 30.0) -> None:
        self._ttl = ttl
        self._entries: dict[int, tuple[float, frozenset[str]]] = {}

    async def get(self, scope: Scope) -> frozenset[str]:
        state = scope["state"]
        pool_id = state["pool"].id
        entry = self._entries.get(pool_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        rows = await state["db"].fetch(_POOL_ORIGINS_SQL, pool_id)
        origins = frozenset(r[0] for r in rows)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[pool_id] = (time.monotonic() + self._ttl, origins)
        return origins


class CORSMiddleware:
    """Preflights and response headers for ``PREFIXES`` and ``PUBLIC`` on pool hosts (a
    plain ASGI middleware inside the host router, which has resolved the pool).
    ``OPTIONS`` on those paths is always answered here (204), never by the routes (405)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pool_origins = PoolOrigins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("portal_site") != "pool":
            await self.app(scope, receive, send)
            return
        if scope["path"] in PUBLIC:
            await self._public(scope, receive, send)
            return
        origin = _origin(scope)
        # No Origin (servers, same-origin GETs) is the commonest case and the
        # cheapest test: nothing to add then.
        if not concerned(scope["path"]) or (origin is None and scope["method"] != "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS":
            if origin is None:  # not a preflight: what the path allows
                response: Response = Response(status_code=204, headers={"allow": ALLOW_METHODS})
            else:
                response = await self._preflight(scope, headers, origin)
            await response(scope, receive, send)
            return
        own = origin in own_origins(scope, headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decided = scope.get(_SCOPE_KEY)
                allowed = decided if isinstance(decided, str) else None
                if decided is None and not own and origin in await self.pool_origins.get(scope):
                    # Refused before any client was known (bad body, unknown ticket):
                    # a website of this pool may read why.
                    allowed = origin
                extra = [(b"vary", b"Origin")]
                if allowed:
                    extra.append((b"access-control-allow-origin", allowed.encode("latin-1")))
                    extra.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _public(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A public document: ``*`` for every origin, with or without ``Origin`` (a
        shared cache may keep one answer for all), never with credentials."""
        if scope["method"] == "OPTIONS":
            response = Response(
                status_code=204,
                headers={
                    "allow": "GET",
                    "access-control-allow-origin": "*",
                    "access-control-allow-methods": "GET",
                    "access-control-allow-headers": ALLOW_HEADERS,
                    "access-control-max-age": PREFLIGHT_MAX_AGE,
                },
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not k.lower().startswith(b"access-control-")
                ]
                message = {**message, "headers": [*kept, (b"access-control-allow-origin", b"*")]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(self, scope: Scope, headers: Headers, origin: str) -> Response:
        vary = {"vary": "Origin"}
        if origin not in own_origins(scope, headers) and origin not in (
            await self.pool_origins.get(scope)
        ):
            err = OriginNotAllowed()
            return JSONResponse(err.as_dict(), status_code=err.status_code, headers=vary)
        return Response(
            status_code=204,
            headers={
                **vary,
                "access-control-allow-origin": origin,
                "access-control-allow-methods": ALLOW_METHODS,
                "access-control-allow-headers": ALLOW_HEADERS,
                "access-control-max-age": PREFLIGHT_MAX_AGE,
                "allow": ALLOW_METHODS,
            },
        )
