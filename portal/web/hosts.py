"""The host router: which site (the platform's apex, or a pool) a request is for.

One pure ASGI middleware. It resolves ``Host`` (or ``X-Forwarded-Host`` from a
trusted proxy) to the apex or to a pool through the per-process pool cache,
and stores the outcome in a *copy* of ``scope["state"]``: the lifespan state
dict is shared by every request, so writing into it would leak one request's
pool into another's. An unknown pool is a 404 and a malformed host a 400,
never a default pool. The error itself is rendered by the app's error
handlers (so it gets the same HTML/JSON treatment as any other error) by
sending the request to the ``host_error`` site.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from portal.errors import NotFound, PortalError, ValidationError
from portal.settings import Settings
from portal.web.validation import SLUG_RE

# A DNS name (labels of letters, digits, hyphens) or a bracketed IPv6 literal, and an optional port.
_HOST_RE = re.compile(
    r"^(?P<name>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"|\[[0-9a-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?$"
)
_UNSEEN = object()
_TWO_HOSTS = ValidationError("The request has more than one Host header.", error="invalid_host")
# Answered on any host: load balancers probe by IP address.
_ANY_HOST_PATHS = frozenset({"/healthz", "/readyz"})


def parse_host(value: str) -> str | None:
    """The lower-cased host name without port, or None when the header is malformed."""
    if not value or len(value) > 261:
        return None
    match = _HOST_RE.match(value.lower())
    if not match or (match["port"] and int(match["port"]) > 65535):
        return None
    name = match["name"]
    return name if len(name) <= 253 else None


def is_address(name: str | None) -> bool:
    """Whether a parsed host name is ``localhost`` or an IP literal: a name no other
    site can have, so a browser sends it only to this server (no DNS rebinding)."""
    return name is not None and (name == "localhost" or _is_ip(name))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class TrustedPeers:
    """Whether an address is one of ``PORTAL_TRUSTED_PROXIES``: asked on every
    request (by the host router and the request-id middleware), so each address
    is parsed once (the proxies, and a few clients: the cache is bounded)."""

    def __init__(self, networks) -> None:
        self.networks = networks
        self._known: dict[str, bool] = {}

    def __call__(self, ip: str | None) -> bool:
        if not ip or not self.networks:
            return False
        known = self._known.get(ip)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            trusted = False
        else:
            trusted = any(addr in net for net in self.networks)
        if len(self._known) < 1024:
            self._known[ip] = trusted
        return trusted


class HostRouter:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.apex = settings.apex_host
        # PORTAL_QR_BASE's host (the default mini program's link rule) is served as the apex.
        self.qr_host = settings.qr_host
        self.trusted = settings.trusted_proxies
        self._trusted = TrustedPeers(settings.trusted_proxies)
        self._names: dict[str, str | None] = {}  # Host header → parse_host's answer

    def _client_ip(self, peer: str | None, headers: Headers) -> str | None:
        """The first address, from the right of X-Forwarded-For, that is not a trusted proxy."""
        if not self._trusted(peer):
            return peer
        hops = [
            h.strip() for h in ",".join(headers.getlist("x-forwarded-for")).split(",") if h.strip()
        ]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop if _is_ip(hop) else peer
        return hops[0] if hops else peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else None
        scheme = scope.get("scheme", "http")
        hosts = 0
        if self._trusted(peer):
            headers = Headers(scope=scope)
            raw_host = headers.get("host", "")
            hosts = len(headers.getlist("host"))
            forwarded_host = headers.get("x-forwarded-host")
            if forwarded_host:
                raw_host = forwarded_host.split(",")[0].strip()
            proto = (headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
            client_ip = self._client_ip(peer, headers)
        else:  # straight from the client: only Host counts, read from the raw list
            raw_host = ""
            for name, value in scope["headers"]:
                if name == b"host":
                    hosts += 1
                    raw_host = raw_host or value.decode("latin-1")
            client_ip = peer
        state = dict(scope.get("state") or {})
        state["client_ip"] = client_ip
        state["pool"] = None
        state["host_name"] = None  # the parsed Host, once _resolve has read it
        if hosts > 1:  # RFC 9112 §3.2: a request with more than one Host is a 400
            site, error = "host_error", _TWO_HOSTS
        else:
            site, error = await self._resolve(raw_host, scope["path"], state)
        state["host_error"] = error
        scope = {**scope, "state": state, "scheme": scheme, "portal_site": site}
        await self.app(scope, receive, send)

    async def _resolve(
        self, raw_host: str, path: str, state: dict
    ) -> tuple[str, PortalError | None]:
        name = self._names.get(raw_host, _UNSEEN)
        if name is _UNSEEN:
            name = parse_host(raw_host)
            if len(self._names) < 4096:  # this portal's few hosts; not every random one
                self._names[raw_host] = name
        state["host_name"] = name
        if name is None:
            return "host_error", ValidationError(
                "The Host header is missing or malformed.", error="invalid_host"
            )
        if name == self.apex or name == self.qr_host:
            return "apex", None
        if name.endswith("." + self.apex):
            label = name[: -len(self.apex) - 1]
            pools = state["pools"]
            found, pool = pools.peek(label)
            if not found:
                pool = await pools.get(label) if SLUG_RE.match(label) else None
            if pool is not None:
                state["pool"] = pool
                return "pool", None
            if path in _ANY_HOST_PATHS:
                return "apex", None
            return "host_error", NotFound(
                "There is no login portal at this address.", error="pool_not_found"
            )
        if path in _ANY_HOST_PATHS:
            return "apex", None
        return "host_error", NotFound(
            "This address is not served by this portal.", error="unknown_host"
        )
