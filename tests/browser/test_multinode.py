"""Two `portal serve` instances (gunicorn, production mode) sharing one
PostgreSQL and one Redis, behind a small load balancer, as on two machines.

A ticket made by one instance is awaited on the other and confirmed through
the first; then, in a real browser, the instance holding the hosted page's
event stream is killed mid-wait, and the page finishes its login through the
other without being reloaded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from portal import i18n
from portal.tenants import pools
from portal.wechat import fake
from tests.phone import Phone
from tests.support import free_port

ZH = i18n.translator("zh-CN")


class Instance:
    """``portal serve`` in a process group of its own (to kill it whole)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portal", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    async def ready(self, host: str) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    r = await client.get(
                        f"http://127.0.0.1:{self.port}/readyz", headers={"host": host}
                    )
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"portal serve did not start:\n{self.log.read_text()}")
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Balancer:
    """Sends each new connection to the first backend that accepts it, as a
    load balancer with health checks does once a machine has gone."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = 0
        self.served: list[int] = []  # the backend port of each connection
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.served.append(port)
            for src, dst in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.ensure_future(self._pipe(src, dst))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        self._writers.add(dst)
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except Exception:  # noqa: S110 - either side gone: close the other
            pass
        finally:
            dst.close()

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()


@pytest.fixture
async def cluster(db, redis_client, box, stores, fake_wechat, secret_key, tmp_path):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme Shop")
    balancer = Balancer([])
    await balancer.start()
    env = {
        **os.environ,
        "PORTAL_ENV": "prod",
        "PORTAL_BASE_URL": f"http://localhost:{balancer.port}",
        "PORTAL_SECRET_KEY": secret_key,
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "WECHAT_API_BASE": fake_wechat.url,
        "PORTAL_DEFAULT_MP_APPID": fake.DEMO_APPID,
        "PORTAL_DEFAULT_MP_SECRET": fake.DEMO_SECRET,
    }
    instances = [Instance(env, tmp_path / "a.log"), Instance(env, tmp_path / "b.log")]
    try:
        host = f"acme.localhost:{balancer.port}"
        await asyncio.gather(*(i.ready(host) for i in instances))
        balancer.backends = [i.port for i in instances]
        yield balancer, instances, host
    finally:
        for i in instances:
            i.stop()
        await balancer.stop()


def _client(instance: Instance, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{instance.port}", headers={"host": host}, timeout=30
    )


async def test_a_ticket_made_on_one_instance_is_awaited_and_confirmed_across_them(cluster):
    _, (a, b), host = cluster
    apex = host.removeprefix("acme.")
    async with _client(a, host) as on_a, _client(b, host) as on_b, _client(a, apex) as phone_a:
        t = (await on_a.post("/api/qrcode", json={})).json()
        seen: list[dict] = []

        async def follow_on_b() -> None:
            url = f"/api/qrcode/{t['ticket']}/events"
            async with on_b.stream("GET", url, params={"secret": t["secret"]}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))

        stream = asyncio.ensure_future(follow_on_b())
        poll = asyncio.ensure_future(
            on_b.get(
                f"/api/qrcode/{t['ticket']}/status",
                params={"secret": t["secret"], "wait": 20, "known": "pending"},
            )
        )
        await asyncio.sleep(0.5)
        phone = Phone(phone_a, "across_amy")
        await phone.login()
        assert (await phone.scan(t["ticket"])).status_code == 200
        assert (await poll).json()["status"] == "scanned"  # the long poll on B woke
        assert (await phone.confirm(t["ticket"], nickname="Amy")).status_code == 200
        await asyncio.wait_for(stream, 10)  # ends after the final status
        assert [e["status"] for e in seen] == ["pending", "scanned", "confirmed"]
        assert seen[-1]["scanned_by"]["nickname"] == "Amy"
        r = await on_b.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 200 and r.json()["user"]["nickname"] == "Amy"


async def test_the_browser_finishes_through_the_other_instance_when_its_own_dies(
    cluster, page, console
):
    balancer, (a, b), host = cluster
    # The dead instance's connections fail in the page's console; that is the point.
    console.allowed = (re.compile(r"ERR_|EventSource|Failed to load resource", re.I),)
    await page.goto(f"http://{host}/")
    login = page.locator("#login")
    await expect(login).to_have_attribute("data-ticket", re.compile(r"^[A-Za-z0-9_-]{22,32}$"))
    ticket = await login.get_attribute("data-ticket")
    assert set(balancer.served) == {a.port}  # everything so far went to A
    apex = host.removeprefix("acme.")
    async with _client(b, apex) as phone_b:
        phone = Phone(phone_b, "survivor_sam")
        await phone.login()
        assert (await phone.scan(ticket)).status_code == 200
        await expect(page.locator("#status-text")).to_have_text(ZH("login.scanned"))

        a.kill()  # mid-wait: the page's event stream was on A
        assert (await phone.confirm(ticket, nickname="Sam")).status_code == 200
        # No reload: the page reconnects (through the balancer, now to B) and logs in.
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            ZH("oidc.logged_in.title"), timeout=20_000
        )
        await expect(page.get_by_text(ZH("oidc.logged_in.text", name="Sam"))).to_be_visible()
    assert b.port in balancer.served
