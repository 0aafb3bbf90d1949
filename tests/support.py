"""Helpers for tests: real servers on loopback, hosts, and store URLs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn

from portal.app import create_app
from portal.settings import Settings


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningPortal:
    url: str  # where to connect: http://127.0.0.1:PORT
    port: int
    settings: Settings
    server: uvicorn.Server

    @property
    def state(self) -> dict:
        """The app's lifespan state (db, redis, hub, pools, ...)."""
        return self.server.lifespan.state

    def host(self, slug: str | None = None) -> str:
        apex = self.settings.apex_host
        return f"{slug}.{apex}:{self.port}" if slug else f"{apex}:{self.port}"

    def client(self, slug: str | None = None, **kwargs) -> httpx.AsyncClient:
        """An HTTP client for the apex (or a pool) of this server. ``*.localhost``
        does not resolve everywhere, so it connects to 127.0.0.1 and sets Host."""
        headers = {"host": self.host(slug), **kwargs.pop("headers", {})}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **kwargs)


@contextlib.asynccontextmanager
async def run_portal(
    settings: Settings, *, sock: socket.socket | None = None
) -> AsyncIterator[RunningPortal]:
    """The app served by uvicorn over real HTTP inside the test's event loop.

    ``settings.base_url`` decides the pool URLs; pass a pre-bound socket whose
    port matches it (``portal_settings`` in conftest does)."""
    sock = sock or free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), lifespan="on", log_level="warning", proxy_headers=False, ws="none"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main program
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises the startup error
            raise RuntimeError("the portal did not start")
        await asyncio.sleep(0.01)
    try:
        yield RunningPortal(f"http://127.0.0.1:{port}", port, settings, server)
    finally:
        server.should_exit = True
        await task
        sock.close()


class LoopbackTransport(httpx.AsyncHTTPTransport):
    """Connects to 127.0.0.1 whatever the URL's host, keeping the Host header:
    lets ordinary clients use real pool URLs (``acme.localhost:PORT``) where
    ``*.localhost`` does not resolve."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        original = request.url
        request.url = original.copy_with(host="127.0.0.1")
        try:
            return await super().handle_async_request(request)
        finally:
            request.url = original  # cookies are stored for the real host
