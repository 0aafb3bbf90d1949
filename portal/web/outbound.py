"""HTTP requests the portal makes to addresses its tenants chose (webhooks,
back-channel logout): SSRF-safe.

A tenant's URL may name, or later resolve to, the portal's own network: the
database, the metadata service at 169.254.169.254, an admin port on loopback.
Checking the name when it is registered is not enough (DNS may answer
differently a second later), so the check is made where the connection is
opened: :class:`GuardedBackend` resolves the name itself, keeps only public
addresses, connects to one of them (TLS still verifies the certificate for the
name), and checks the peer of the socket it got. Environment proxies are never
used (``trust_env=False``: a proxy would connect for us, unchecked) and
redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import aiohttp
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressNotAllowed(httpx.ConnectError):
    """The URL's host is (or resolves to) a loopback, private, link-local or other
    non-public address."""


def address_allowed(ip: IPAddress | str, *, allow_loopback: bool = False) -> bool:
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return allow_loopback
    # is_global is False for private (RFC 1918, ULA), link-local, shared (CGNAT),
    # documentation, benchmarking, reserved and unspecified addresses.
    return addr.is_global and not addr.is_multicast


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend, *, allow_loopback: bool) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
        seen: dict[str, None] = {}
        for *_, sockaddr in infos:
            seen.setdefault(str(sockaddr[0]), None)
        return list(seen)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port)
        allowed = [a for a in addresses if address_allowed(a, allow_loopback=self._allow_loopback)]
        if not allowed:
            raise AddressNotAllowed(f"{host} is not a public address")
        last: Exception | None = None
        for address in allowed:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            peer = stream.get_extra_info("server_addr")
            if not peer or not address_allowed(peer[0], allow_loopback=self._allow_loopback):
                await stream.aclose()
                raise AddressNotAllowed(f"{host} connected to a non-public address")
            return stream
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args, **kwargs):  # never for a tenant's URL
        raise AddressNotAllowed("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(
    *, allow_loopback: bool = False, limits: httpx.Limits | None = None
) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(
        trust_env=False, limits=limits or httpx.Limits(max_connections=100), retries=0
    )
    pool = transport._pool
    pool._network_backend = GuardedBackend(pool._network_backend, allow_loopback=allow_loopback)
    return transport


def guarded_client(
    *, allow_loopback: bool = False, timeout: float = 10.0, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that connects only to public addresses (and loopback
    when allowed: dev and tests), follows no redirect and ignores proxy settings."""
    return httpx.AsyncClient(
        transport=guarded_transport(allow_loopback=allow_loopback, limits=limits),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        trust_env=False,
    )


class _GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector with the same rule as :class:`GuardedBackend`: of the
    addresses a name resolved to (or a literal address), only allowed ones are
    connected to, and the peer of the socket made is checked again."""

    def __init__(self, *, allow_loopback: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self._allow_loopback = allow_loopback

    async def _wrap_create_connection(self, *args, addr_infos, **kwargs):
        allowed = [
            info
            for info in addr_infos
            if address_allowed(info[4][0], allow_loopback=self._allow_loopback)
        ]
        if not allowed:
            raise AddressRefused("not a public address")
        transport, proto = await super()._wrap_create_connection(
            *args, addr_infos=allowed, **kwargs
        )
        peer = transport.get_extra_info("peername")
        if not peer or not address_allowed(peer[0], allow_loopback=self._allow_loopback):
            transport.close()
            raise AddressRefused("connected to a non-public address")
        return transport, proto


class AddressRefused(aiohttp.ClientError):
    """aiohttp's :class:`AddressNotAllowed`."""


def guarded_session(*, allow_loopback: bool = False, limit: int = 100) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` connecting only to public addresses (and loopback
    when allowed), ignoring proxy settings (``trust_env`` off) and keeping no
    cookies; pass ``allow_redirects=False`` on each request. Cheaper per request
    than httpx (the webhook dispatcher's many short POSTs)."""
    return aiohttp.ClientSession(
        connector=_GuardedConnector(allow_loopback=allow_loopback, limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
    )
