"""Helpers for tests: real servers on loopback, hosts, and store URLs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import uvicorn

from portal.app import create_app
from portal.settings import Settings
from tests import leakcheck


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
    async with serve_asgi(create_app(settings), sock, name="the portal") as server:
        yield RunningPortal(f"http://127.0.0.1:{port}", port, settings, server)


@contextlib.asynccontextmanager
async def serve_asgi(
    app, sock: socket.socket, *, name: str, lifespan: str = "on"
) -> AsyncIterator[uvicorn.Server]:
    """An ASGI app served by uvicorn over real HTTP on ``sock``, inside the test's
    event loop; the socket is closed at the end (or when the app fails to start)."""
    config = uvicorn.Config(
        app, lifespan=lifespan, log_level="warning", proxy_headers=False, ws="none"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main program
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises the startup error
            raise RuntimeError(f"{name} did not start")
        await asyncio.sleep(0.01)
    try:
        yield server
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


class TcpProxy:
    """A TCP forwarder in front of a store, to make it misbehave the way a real
    one does from the portal's side: ``freeze()`` holds every byte until
    ``thaw()`` (a hung server), ``cut()`` drops every open connection, and
    ``refuse()`` / ``accept()`` turn new connections away or let them in (a
    server that is restarting). ``url`` is the store's URL pointing here."""

    def __init__(self, url: str, open_upstream) -> None:
        self.url = url  # filled in with the port by start()
        self._open_upstream = open_upstream
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @classmethod
    def for_redis(cls, redis_url: str) -> TcpProxy:
        parts = urlsplit(redis_url)
        if parts.scheme == "unix":
            db = parse_qs(parts.query).get("db", ["0"])[0]
            upstream = lambda: asyncio.open_unix_connection(parts.path)  # noqa: E731
        else:
            db = parts.path.strip("/") or "0"
            upstream = lambda: asyncio.open_connection(parts.hostname, parts.port or 6379)  # noqa: E731
        return cls(f"redis://127.0.0.1:{{port}}/{db}", upstream)

    @classmethod
    def for_postgres(cls, database_url: str) -> TcpProxy:
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        port = parts.port or int(query.get("port", ["5432"])[0])
        socket_dir = query.pop("host", [None])[0]
        if socket_dir and socket_dir.startswith("/"):
            path = f"{socket_dir}/.s.PGSQL.{port}"
            upstream = lambda: asyncio.open_unix_connection(path)  # noqa: E731
        else:
            host = parts.hostname or "127.0.0.1"
            upstream = lambda: asyncio.open_connection(host, port)  # noqa: E731
        query.pop("port", None)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + "127.0.0.1:{port}"
        rest = "&".join(f"{k}={v[-1]}" for k, v in query.items())
        url = urlunsplit((parts.scheme, netloc, parts.path, rest, ""))
        return cls(url, upstream)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = self.url.replace("{port}", str(self.port))
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except Exception:  # noqa: S110 - either side gone: close the other
            pass
        finally:
            dst.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def refuse(self) -> None:
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


def free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


class RedisProcess:
    """A redis-server of the test's own (the embedded stores' binary), on a TCP
    port of its own: to stop, restart or fail over without touching the suite's."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        args: list[str],
        config: str | None = None,
        *,
        executable: str | None = None,
    ):
        from portal.stores.embedded import _redis_executable

        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self._argv = [executable or _redis_executable()]
        if config is not None:  # a sentinel: its configuration must be a writable file
            conf = self.dir / "sentinel.conf"
            conf.write_text(config)
            self._argv += [str(conf), "--sentinel"]
        self._argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self._argv += ["--dir", str(self.dir), "--logfile", str(self.dir / "log"), *args]
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.dir / 'log'}") from None
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def restart(self) -> None:
        self.stop()
        self.proc = self._spawn()
        await self.ready()


def serve_env(stores, fake_wechat, secret_key: str, base_url: str, data_dir: Path, **extra: str):
    """The environment of a ``portal serve`` on the suite's stores and fake WeChat."""
    from portal.wechat import fake

    return {
        **os.environ,
        "PORTAL_ENV": "prod",
        "PORTAL_BASE_URL": base_url,
        "PORTAL_SECRET_KEY": secret_key,
        "PORTAL_DATA_DIR": str(data_dir),
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "WECHAT_API_BASE": fake_wechat.url,
        "PORTAL_DEFAULT_MP_APPID": fake.DEMO_APPID,
        "PORTAL_DEFAULT_MP_SECRET": fake.DEMO_SECRET,
        "PORTAL_ACCESS_LOG": "1",  # its query strings too are checked for secrets
        **extra,
    }


class ServeProcess:
    """``portal serve`` (gunicorn, production mode) in a process group of its own,
    so that it can be stopped, signalled or killed whole."""

    def __init__(
        self, env: dict[str, str], log: Path, *, port: int | None = None, workers: int = 1
    ) -> None:
        self.port = port or free_port()
        self.log = log
        leakcheck.SERVER_LOGS.append(log)  # scanned for secrets at the end of the run
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "portal", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(workers)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    async def ready(self, host: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(
                        f"http://127.0.0.1:{self.port}/readyz", headers={"host": host}
                    )
                    if r.status_code == 200:
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"portal serve did not start:\n{self.log.read_text()}")
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# A portal that trusts a proxy on loopback: a test then speaks for any client address
# with X-Forwarded-For (the limits per address see that address).
TRUST_LOCALHOST = Settings.from_env(
    {"PORTAL_TRUSTED_PROXIES": "127.0.0.1/32", "PORTAL_SECRET_KEY": "k" * 40}
).trusted_proxies


def forwarded_for(ip: str) -> dict[str, str]:
    """Headers that make a request come from ``ip`` (to a portal with TRUST_LOCALHOST)."""
    return {"x-forwarded-for": ip}
