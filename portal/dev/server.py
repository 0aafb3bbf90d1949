"""``portal dev``: the whole product on one machine with nothing set up.

Embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), the
migrations, the fake WeChat API, a demo pool ``demo`` (with a logo, and its
default client's secret kept in the data dir so that the banner and
``/dev/callback`` can show how to exchange a code), and the portal itself, in
one process. Ctrl-C stops all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from portal import worker
from portal.app import create_app
from portal.console import store as console_store
from portal.errors import PortalError
from portal.local import stores
from portal.obs.logs import RedactAccessArgs, RedactFilter
from portal.settings import Settings
from portal.stores import migrations
from portal.stores import postgres as dbmod
from portal.stores.crypto import SecretBox
from portal.tenants import clients, pools
from portal.web import protocol
from portal.web.server import PortalServer

DEMO_SLUG = "demo"
EXAMPLE_ORIGIN = "http://localhost:8090"  # python -m examples.rp
# The demo pool's default client's secret (the one its own page's backend uses),
# kept in the data dir: a secret is shown only when made, and the banner and
# /dev/callback show it again on every start. Dev only.
DEMO_SECRET_FILE = "demo_client_secret"  # noqa: S105 (a file name)
DEMO_LOGO = Path(__file__).resolve().parents[1] / "static" / "demo-logo.png"


class PortInUse(PortalError):
    """A port ``portal dev`` needs is taken (another ``portal dev``?)."""

    error = "port_in_use"


def demo_secret_path(data_dir: Path) -> Path:
    return data_dir.resolve() / DEMO_SECRET_FILE


class _Server(PortalServer):
    """uvicorn re-raises SIGTERM after its graceful shutdown, which would kill
    the process before ``portal dev`` stops its embedded stores; here a signal
    only asks the server to stop, and ``run`` returns normally. As a production
    worker (``PortalServer``), it first ends the open SSE streams and long
    polls: an open login page would otherwise hold Ctrl-C until its ticket
    expired."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def prepare(settings: Settings, kept_secret: str | None = None) -> dict[str, str]:
    """Migrate and make sure the demo pool (with its logo), the secret of its
    default client (``kept_secret`` if it still works) and its demo clients exist."""
    box = SecretBox(settings.secret_key)
    conn = await dbmod.connect(settings)
    try:
        await migrations.migrate(conn)
        pool = await pools.get_by_slug(conn, DEMO_SLUG)
        secret = None
        if pool is None:
            created = await pools.create(
                conn,
                box,
                slug=DEMO_SLUG,
                name="Demo 演示",
                callback_url=f"{settings.base_url}/dev/callback",
                allow_http=True,
            )
            pool, secret = created.pool, created.default_client_secret
            # The QR shows the pool's logo in its centre: the demo shows it at once.
            await console_store.set_logo(conn, pool.id, _demo_logo())
        default_client, secret = await _default_client_secret(
            conn, box, pool.id, secret or kept_secret, fresh=secret is not None
        )
        demo = await _public_client(
            conn, box, pool.id, "Demo website", settings.base_url, "/dev/callback"
        )
        # examples/rp on its own origin (examples/README.md)
        example = await _public_client(
            conn, box, pool.id, "Example website", EXAMPLE_ORIGIN, "/callback"
        )
    finally:
        await conn.close()
    return {
        "demo_client_id": demo,
        "example_client_id": example,
        "default_client_id": default_client,
        "default_client_secret": secret,
    }


def _demo_logo() -> bytes:
    return DEMO_LOGO.read_bytes()


async def _default_client_secret(
    conn, box: SecretBox, pool_id: int, secret: str | None, *, fresh: bool
) -> tuple[str, str]:
    """The demo pool's default client id and a secret that works for it: the one
    just made, else the kept one if it still matches, else a new one (the pool
    was made with another data dir, or its secret was rotated in the console)."""
    client = await clients.get_default(conn, pool_id)
    assert client is not None  # every pool has one, made with it
    if fresh or (secret and clients.verify_secret(box, client, secret)):
        return client.client_id, secret
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "UPDATE clients SET secret_hash = $2, updated_at = now() WHERE id = $1",
        client.id,
        box.hash_secret(secret),
    )
    return client.client_id, secret


def read_demo_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def keep_demo_secret(path: Path, secret: str) -> None:
    """Only its owner may read it, like the dev secret key beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")


async def _public_client(conn, box: SecretBox, pool_id: int, name: str, origin: str,
                         callback: str) -> str:  # fmt: skip
    """The client_id of the pool's public client ``name``, created if missing."""
    client_id = await conn.fetchval(
        "SELECT client_id FROM clients WHERE pool_id = $1 AND name = $2", pool_id, name
    )
    if client_id is None:
        async with conn.transaction():
            client, _ = await clients.create(
                conn, box, pool_id=pool_id, name=name, redirect_uris=[origin + callback],
                web_origins=[origin], public=True, allow_http=True,
            )  # fmt: skip
        client_id = client.client_id
    return client_id


def _port_free(host: str, port: int) -> bool:
    """Can a server listen on ``host:port``? (As uvicorn binds: SO_REUSEADDR.)"""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return True


def check_ports(host: str, port: int, wechat_port: int | None) -> None:
    """Fail at once, saying which port is taken and which to use instead, rather
    than with a traceback from the fake WeChat's thread or uvicorn's exit."""
    wanted = [("--port", port)]
    if wechat_port is not None:
        wanted.append(("--wechat-port", wechat_port))
    taken = [(flag, p) for flag, p in wanted if not _port_free(host, p)]
    if not taken:
        return
    flag, busy = taken[0]
    what = "the portal's port" if flag == "--port" else "the fake WeChat API's port"
    hint = "choose other ports"
    for other in range(port + 10, min(port + 500, 65534), 10):
        if _port_free(host, other) and _port_free(host, other + 1):
            hint = (
                f"choose other ports, e.g. `portal dev --port {other} --wechat-port {other + 1}` "
                f"(make dev ARGS='--port {other} --wechat-port {other + 1}')"
            )
            break
    raise PortInUse(
        f"{host}:{busy} ({what}, {flag}) is already in use, perhaps by another `portal dev`; {hint}"
    )


def log_config() -> dict:
    """uvicorn's own log format, with what could log someone in masked: the access
    line's query string (``?code=``, ``?secret=``) and any other line (issue 21)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {
        "redact": {"()": RedactFilter},
        "redact_access": {"()": RedactAccessArgs},
    }
    config["handlers"]["default"]["filters"] = ["redact"]
    config["handlers"]["access"]["filters"] = ["redact_access"]
    # The portal's own warnings (portal.*), which would otherwise reach
    # logging's last-resort handler unfiltered.
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config


def run(*, host: str, port: int, wechat_port: int | None) -> int:
    from portal.wechat import fake

    env = dict(os.environ)
    env["PORTAL_ENV"] = "dev"
    env.setdefault("PORTAL_BASE_URL", f"http://localhost:{port}")
    in_process_fake = not env.get("WECHAT_API_BASE")
    check_ports(host, port, (wechat_port or port + 1) if in_process_fake else None)
    with contextlib.ExitStack() as stack:
        if in_process_fake:
            running = stack.enter_context(fake.run_in_thread(port=wechat_port or port + 1))
            env["WECHAT_API_BASE"] = running.url
        settings = stack.enter_context(stores(env, dev=True))
        if in_process_fake:  # the demo mini program's link rule, published (issue 17)
            fake.publish_link_rule(running.url, settings.default_mp_appid, settings.qr_prefix)
        secret_file = demo_secret_path(settings.data_dir)
        kept = read_demo_secret(secret_file)
        info = asyncio.run(prepare(settings, kept))
        if info["default_client_secret"] != kept:
            keep_demo_secret(secret_file, info["default_client_secret"])
        demo_url = settings.pool_url(DEMO_SLUG)
        print(
            "\n".join(
                [
                    "",
                    "  WeChat scan login portal (dev)",
                    f"  demo pool:           {demo_url}/",
                    f"  platform:            {settings.base_url}/",
                    f"  phone simulator:     {settings.base_url}/dev/phone",
                    f"  fake WeChat API:     {settings.wechat_api_base}",
                    "  worker:              in this process (webhooks may point at localhost)",
                    f"  demo client_id:      {info['default_client_id']}"
                    " (the demo pool's own page; /dev/callback gets its codes)",
                    f"  demo client_secret:  {info['default_client_secret']}"
                    f" (dev only; kept in {secret_file})",
                    f"  public client_id:    {info['demo_client_id']}"
                    f" (PKCE, for the SDK on {settings.base_url})",
                    f"  example client_id:   {info['example_client_id']} ({EXAMPLE_ORIGIN})",
                    f"  data dir:            {settings.data_dir.resolve()}",
                    "",
                ]
            ),
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            proxy_headers=False,
            server_header=False,
            http=protocol.PortalHttpProtocol,  # header/body limits and deadlines
            log_config=log_config(),
        )
        # The background work (webhooks, back-channel logout, retention) in a thread
        # of this process, on its own event loop; it stops with the server.
        with worker.in_thread(settings):
            _Server(config).run()
    return 0
