"""The request middleware: a request id for every request, and its metrics.

A plain ASGI middleware placed just inside the host router, so that it sees
the scope the router fills in (``scope["route"]``, the matched route, gives
the template: ``/api/qrcode/{ticket}/status``, never the raw path) and the
site. Per request it does the least it can: one context-variable set, one
header appended, two clock reads and one histogram observation, whose
labelled child is looked up in a dict keyed by (route's id, site, method, status)
and added to the process's ``metrics.TALLY`` (written to the shared metric
files twice a second, not per request).

It also appends the security headers every response carries
(``portal.web.headers.always``: nosniff, X-Frame-Options, HSTS in production over
https), built once here: the same list concat that adds the request id.

The id is the ``X-Request-Id`` of a trusted proxy (``PORTAL_TRUSTED_PROXIES``;
nginx sends its ``$request_id``) when it is well formed, otherwise a new
random one; it is returned in the ``X-Request-Id`` response header and set in
``logs.request_id`` for every log line of the request.

It also answers ``GET /metrics`` on the apex, and on a Host that is an IP
address or ``localhost`` (Prometheus scrapes by address), to the addresses
and token of ``MetricsAccess``. On any other name it is the site's 404: a
name that is not ours may be a DNS-rebinding page in a browser inside the
allowed networks, reading the metrics through that browser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from random import getrandbits

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.obs import metrics
from portal.obs.logs import request_id
from portal.settings import Settings
from portal.web import headers
from portal.web.hosts import TrustedPeers, is_address
from portal.web.pages import server_error_handler

_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{8,64}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_CHILDREN = 5000  # label combinations kept in the lookup cache (methods are open-ended)


class Observability:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        access: metrics.MetricsAccess | None = None,
        on_error: Callable[[Request, Exception], Awaitable[Response]] | None = None,
    ) -> None:
        self.app = app
        self.trusted = settings.trusted_proxies
        self.access = access if access is not None else metrics.MetricsAccess.from_env()
        self._children: dict[tuple, object] = {}
        self._trusted_peer = TrustedPeers(settings.trusted_proxies)
        self._observe = metrics.REQUEST_DURATION
        self._always = headers.always(settings)
        self._always_framable = headers.always(settings, framable=True)
        self.on_error = on_error if on_error is not None else server_error_handler
        self._tally = metrics.TALLY

    def _incoming_id(self, scope: Scope) -> str | None:
        client = scope.get("client")
        if not client or not self._trusted_peer(client[0]):
            return None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                return value.decode("ascii") if _ID_RE.match(value) else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # 64 random bits: unique, not secret (random reseeds in each forked worker;
        # os.urandom is a system call, five times slower).
        rid = (self.trusted and self._incoming_id(scope)) or f"{getrandbits(64):016x}"
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode("ascii"))
        always = self._always
        tally = self._tally
        status = 0  # no response started yet

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A framable response (scope flag set by its handler): frame-ancestors
                # in its CSP instead of X-Frame-Options.
                extra = self._always_framable if scope.get("portal_framable") else always
                message = {**message, "headers": [*message.get("headers", ()), header, *extra]}
            await send(message)

        start = time.perf_counter()
        try:
            if scope["path"] == "/metrics" and _metrics_host(scope):
                await self._metrics(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:  # the response had begun: nothing else can be sent
                raise
            # An error no handler took: answered here, not by Starlette's outermost
            # middleware, so that the 500 too has the request id and the headers
            # every response carries (the handler logs it, under the request id).
            response = await self.on_error(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
        finally:
            status = status or 500
            elapsed = time.perf_counter() - start
            # Routes compare by value (not hashable): their id, stable for the app's life.
            # The site too: the apex and pool sites share their common routes.
            route = scope.get("route")
            key = (
                id(route) if route is not None else scope["path"] == "/metrics",
                scope.get("portal_site"),
                scope["method"],
                status,
            )
            child = self._children.get(key)
            if child is None:
                child = self._child(scope, route, key)
            tally.observe(child, elapsed)
        # Left set when the request failed: the server error handler, outside, logs with it.
        request_id.reset(token)

    def _child(self, scope: Scope, route: object, key: tuple) -> object:
        _, _, method, status = key
        site = scope.get("portal_site") or "none"
        if scope["path"] == "/metrics" and _metrics_host(scope):
            template = "/metrics"
        elif site == "host_error":
            template = "<unknown_host>"
        elif route is None:
            template = "<preflight>" if method == "OPTIONS" else "<unmatched>"
        elif (path := getattr(route, "path", None)) is None:
            template = "<not_found>"  # only the site matched
        elif isinstance(route, Mount):
            template = path + "/{path:path}"
        else:
            template = path
        child = self._observe.labels(
            site, template, method if method in _METHODS else "OTHER", str(status)
        )
        if len(self._children) < _MAX_CHILDREN:
            self._children[key] = child
        return child

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse, Response

        client_ip = (scope.get("state") or {}).get("client_ip")
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = JSONResponse(
                {"error": "method_not_allowed", "error_description": "Use GET."},
                status_code=405,
                headers={"allow": "GET, HEAD"},
            )
        elif not self.access.allowed(client_ip, Headers(scope=scope).get("authorization")):
            response = JSONResponse(
                {
                    "error": "forbidden",
                    "error_description": "Metrics are not available from this address.",
                },
                status_code=403,
            )
        else:
            body, media_type = await metrics.exposition()
            response = Response(
                body, headers={"content-type": media_type, "cache-control": "no-store"}
            )
        await response(scope, receive, send)


def _metrics_host(scope: Scope) -> bool:
    """Whether ``/metrics`` is answered for this request's host: the apex's, or an
    address (never a pool's, nor a name that is not this portal's)."""
    site = scope.get("portal_site")
    if site == "apex":
        return True
    return site == "host_error" and is_address(scope["state"].get("host_name"))
