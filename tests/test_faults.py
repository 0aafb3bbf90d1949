"""Stores failing under a running portal: Redis restarted and PostgreSQL
unreachable in the middle of a login. While a store is away the portal answers
a clear 503 ``temporarily_unavailable`` (never a 500, never a half-done
login); when it is back, service resumes with no portal restart, and nothing
that was stored is lost."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from portal.tenants import pools
from tests.phone import Phone
from tests.support import RedisProcess, TcpProxy, free_socket, run_portal


async def _eventually(attempt, *, timeout: float = 15.0, pause: float = 0.2):
    """``attempt()`` until it returns something truthy (then that) or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        result = await attempt()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s; last: {result!r}")
        await asyncio.sleep(pause)


async def _sse_statuses(client: httpx.AsyncClient, ticket: dict, seen: list[str]) -> None:
    url = f"/api/qrcode/{ticket['ticket']}/events"
    async with client.stream("GET", url, params={"secret": ticket["secret"]}, timeout=60) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["status"])


def _unavailable(r: httpx.Response) -> bool:
    return (
        r.status_code == 503
        and r.json()["error"] == "temporarily_unavailable"
        and r.headers.get("retry-after") == "5"
    )


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme")


async def test_redis_restarted_mid_login(tmp_path, acme, db, settings_factory, fresh_fake):
    # Redis with an append-only file, as production should run it: what was
    # in it (the ticket, the phone's session) is there again after the restart.
    redis = RedisProcess(tmp_path, "redis", ["--appendonly", "yes", "--appendfsync", "always"])
    try:
        await redis.ready()
        sock = free_socket()
        settings = settings_factory(
            base_url=f"http://localhost:{sock.getsockname()[1]}", redis_url=redis.url
        )
        async with (
            run_portal(settings, sock=sock) as running,
            running.client("acme") as pc,
            running.client() as apex,
        ):
            ticket = (await pc.post("/api/qrcode", json={})).json()
            seen: list[str] = []
            stream = asyncio.ensure_future(_sse_statuses(pc, ticket, seen))
            phone = Phone(apex, "restart_rita")
            await phone.login()
            assert (await phone.scan(ticket["ticket"])).status_code == 200
            await _eventually(lambda: asyncio.sleep(0, "scanned" in seen))

            redis.stop()
            assert _unavailable(await pc.post("/api/qrcode", json={}))
            r = await phone.confirm(ticket["ticket"])
            assert _unavailable(r)
            assert not stream.done()  # the browser's stream stays open meanwhile

            await redis.restart()

            async def confirmed() -> bool:
                r = await phone.confirm(ticket["ticket"])
                return r.status_code == 200

            await _eventually(confirmed)
            # The stream hears of it: the hub re-subscribed and woke its waiters.
            await _eventually(lambda: asyncio.sleep(0, "confirmed" in seen))
            await asyncio.wait_for(stream, 5)  # a final status ends the stream
            r = await pc.post(
                f"/api/qrcode/{ticket['ticket']}/exchange", json={"secret": ticket["secret"]}
            )
            assert r.status_code == 200, r.text
            user_id = r.json()["user"]["id"]
            assert (await pc.post("/api/qrcode", json={})).status_code == 201
            assert running.state["hub"].reconnects >= 1
        assert await db.fetchval("SELECT count(*) FROM users") == 1
        assert await db.fetchval("SELECT id::text FROM users") == user_id
    finally:
        redis.stop()


class LoginsAcrossAnOutage:
    """Alice's login done (a user and a refresh token in PostgreSQL) and Bob's
    under way (scanned) when the database goes; then what must hold during the
    outage and after it."""

    def __init__(self, pc, apex, auth: tuple[str, str], prefix: str) -> None:
        self.pc, self.apex, self.auth, self.prefix = pc, apex, auth, prefix

    async def before(self) -> None:
        pc = self.pc
        first = (await pc.post("/api/qrcode", json={})).json()
        alice = Phone(self.apex, f"{self.prefix}_alice")
        await alice.login()
        assert (await alice.scan_and_confirm(first["ticket"])).status_code == 200
        self.tokens = (
            await pc.post(
                f"/api/qrcode/{first['ticket']}/exchange", json={"secret": first["secret"]}
            )
        ).json()
        assert self.tokens["refresh_token"]
        self.second = (await pc.post("/api/qrcode", json={})).json()
        self.bob = Phone(self.apex, f"{self.prefix}_bob")
        await self.bob.login()
        assert (await self.bob.scan(self.second["ticket"])).status_code == 200

    async def _refresh(self) -> httpx.Response:
        return await self.pc.post(
            "/oidc/token",
            data={"grant_type": "refresh_token", "refresh_token": self.tokens["refresh_token"]},
            auth=self.auth,
        )

    async def during(self) -> None:
        ticket = self.second
        r = await self.bob.confirm(ticket["ticket"])
        assert _unavailable(r), r.text
        status = await self.pc.get(
            f"/api/qrcode/{ticket['ticket']}/status", params={"secret": ticket["secret"]}
        )
        assert status.json()["status"] == "scanned"  # not confirmed without its user
        r = await self._refresh()
        assert _unavailable(r), r.text

    async def after(self) -> None:
        ticket = self.second

        async def confirmed() -> bool:
            return (await self.bob.confirm(ticket["ticket"])).status_code == 200

        await _eventually(confirmed)
        r = await self.pc.post(
            f"/api/qrcode/{ticket['ticket']}/exchange", json={"secret": ticket["secret"]}
        )
        assert r.status_code == 200, r.text
        # Alice's refresh token survived the outage and still works (once).
        r = await self._refresh()
        assert r.status_code == 200, r.text
        assert r.json()["refresh_token"] != self.tokens["refresh_token"]


async def test_postgres_unreachable_mid_login(acme, db, stores, settings_factory, fresh_fake):
    proxy = await TcpProxy.for_postgres(stores.database_url).start()
    try:
        sock = free_socket()
        settings = settings_factory(
            base_url=f"http://localhost:{sock.getsockname()[1]}", database_url=proxy.url
        )
        auth = (acme.default_client.client_id, acme.default_client_secret)
        async with (
            run_portal(settings, sock=sock) as running,
            running.client("acme") as pc,
            running.client() as apex,
        ):
            logins = LoginsAcrossAnOutage(pc, apex, auth, "pg")
            await logins.before()
            proxy.cut()
            proxy.refuse()
            await logins.during()
            proxy.accept()
            await logins.after()
        assert await db.fetchval("SELECT count(*) FROM users") == 2
        results = await db.fetch("SELECT result FROM login_events ORDER BY id")
        assert [r["result"] for r in results] == ["signup", "signup"]
    finally:
        await proxy.stop()


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL server of this test's own (pgserver, as the embedded stores
    use), to stop and start under a running portal."""
    import warnings

    pgserver = pytest.importorskip("pgserver")
    from pgserver._commands import pg_ctl

    data = tmp_path / "pg"
    data.mkdir()
    tmp_path.chmod(0o755)  # run as root, pgserver's PostgreSQL is an unprivileged user
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data / "data", cleanup_mode="stop")

    def ctl(*args: str) -> None:
        pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=30)

    try:
        yield server, ctl
    finally:
        server.cleanup()


async def test_postgres_restarted_mid_login(
    own_postgres, redis_client, settings_factory, box, fresh_fake
):
    import asyncpg

    from portal.stores import migrations
    from portal.stores import postgres as dbmod

    server, ctl = own_postgres
    url = server.get_uri("postgres")
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn)
        await dbmod._init_connection(conn)
        acme = await pools.create(conn, box, slug="acme", name="Acme")
    finally:
        await conn.close()
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", database_url=url
    )
    auth = (acme.default_client.client_id, acme.default_client_secret)
    async with (
        run_portal(settings, sock=sock) as running,
        running.client("acme") as pc,
        running.client() as apex,
    ):
        logins = LoginsAcrossAnOutage(pc, apex, auth, "restart_pg")
        await logins.before()
        await asyncio.to_thread(ctl, "-m", "fast", "stop")
        await logins.during()
        socket_dir = parse_qs(urlsplit(url).query)["host"][0]
        # Started again as pgserver starts it: on its Unix socket only.
        await asyncio.to_thread(
            ctl, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"
        )
        await logins.after()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 2
    finally:
        await conn.close()
