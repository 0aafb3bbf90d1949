"""``portal dev``: the whole product on one machine with nothing set up.

Embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), the
migrations, the fake WeChat API, a demo pool ``demo`` with a demo client, and
the portal itself, in one process. Ctrl-C stops all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn

from portal.app import create_app
from portal.local import stores
from portal.settings import Settings
from portal.stores import migrations
from portal.stores import postgres as dbmod
from portal.stores.crypto import SecretBox
from portal.tenants import clients, pools
from portal.web import protocol

DEMO_SLUG = "demo"
EXAMPLE_ORIGIN = "http://localhost:8090"  # python -m examples.rp


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, which would kill
    the process before ``portal dev`` stops its embedded stores; here a signal
    only asks the server to stop, and ``run`` returns normally."""

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


async def prepare(settings: Settings) -> dict[str, str]:
    """Migrate and make sure the demo pool and its demo client exist."""
    box = SecretBox(settings.secret_key)
    conn = await dbmod.connect(settings)
    try:
        await migrations.migrate(conn)
        pool = await pools.get_by_slug(conn, DEMO_SLUG)
        if pool is None:
            created = await pools.create(
                conn,
                box,
                slug=DEMO_SLUG,
                name="Demo 演示",
                callback_url=f"{settings.base_url}/dev/callback",
                allow_http=True,
            )
            pool = created.pool
        demo = await _public_client(
            conn, box, pool.id, "Demo website", settings.base_url, "/dev/callback"
        )
        # examples/rp on its own origin (examples/README.md)
        example = await _public_client(
            conn, box, pool.id, "Example website", EXAMPLE_ORIGIN, "/callback"
        )
    finally:
        await conn.close()
    return {"demo_client_id": demo, "example_client_id": example}


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


def run(*, host: str, port: int, wechat_port: int | None) -> int:
    from portal.wechat import fake

    env = dict(os.environ)
    env["PORTAL_ENV"] = "dev"
    env.setdefault("PORTAL_BASE_URL", f"http://localhost:{port}")
    with contextlib.ExitStack() as stack:
        if not env.get("WECHAT_API_BASE"):
            running = stack.enter_context(fake.run_in_thread(port=wechat_port or port + 1))
            env["WECHAT_API_BASE"] = running.url
        settings = stack.enter_context(stores(env, dev=True))
        info = asyncio.run(prepare(settings))
        demo_url = settings.pool_url(DEMO_SLUG)
        print(
            "\n".join(
                [
                    "",
                    "  WeChat scan login portal (dev)",
                    f"  demo pool:        {demo_url}/",
                    f"  platform:         {settings.base_url}/",
                    f"  phone simulator:  {settings.base_url}/dev/phone",
                    f"  fake WeChat API:  {settings.wechat_api_base}",
                    f"  demo client_id:   {info['demo_client_id']}",
                    f"  example client_id: {info['example_client_id']} ({EXAMPLE_ORIGIN})",
                    f"  data dir:         {settings.data_dir.resolve()}",
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
        )
        _Server(config).run()
    return 0
