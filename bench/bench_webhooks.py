"""Benchmark 8: webhooks (issue 19, part 3). Run it alone:

    DATABASE_URL=postgresql://... REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/bench_webhooks.py [--logins 300] [--rounds 6] [--deliveries 5000]

1. **What two subscribed endpoints add to a login's confirm.** An in-process portal
   (production settings, limits off) over real HTTP on loopback; one returning
   WeChat user logs in again and again (create ticket, scan: untimed; ``POST
   .../confirm``: timed). Rounds alternate between the pool having no endpoint
   and two endpoints subscribed to ``login.succeeded`` (so each confirm writes
   the event and two deliveries in its one login statement). Reported:
   p50/p99 of each, and the p50 difference. Goal: at most 1 ms.
2. **How fast a worker delivers.** N events fanned out to one endpoint on a
   local receiver (uvicorn + httptools in its own process, answering 200), then
   ``portal worker --concurrency C`` (a real subprocess, production mode)
   delivers them; rate = N / (last attempt − first attempt), from the attempts'
   own timestamps. Goal: at least 500 webhooks/s.

It makes (and drops) its own database on the server of DATABASE_URL and flushes
nothing in Redis (its keys expire). Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal import jobs  # noqa: E402
from portal.app import create_app  # noqa: E402
from portal.scan import users  # noqa: E402
from portal.settings import Limit, Settings  # noqa: E402
from portal.stores import migrations  # noqa: E402
from portal.stores.crypto import SecretBox  # noqa: E402
from portal.tenants import pools  # noqa: E402
from portal.webhooks import store  # noqa: E402
from portal.wechat import fake  # noqa: E402

RECEIVER = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def confirm_latency(settings: Settings, db: asyncpg.Pool, logins: int, rounds: int):
    """Confirms alternating between a pool without endpoints and one with two (pairs
    measured under the same load), over HTTP; and the login statement alone."""
    box = SecretBox(settings.secret_key)
    made = {}
    async with db.acquire() as conn:
        for slug, hooks in (("plain", 0), ("hooked", 2)):
            made[slug] = (await pools.create(conn, box, slug=slug, name=slug, allow_http=True)).pool
            for i in range(hooks):
                await store.create_endpoint(
                    conn,
                    settings,
                    box,
                    made[slug].id,
                    url=f"https://hooks{i}.example.com/in",  # never called: no worker here
                    events=["login.succeeded"],
                )
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_level="warning", lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    browsers = {
        slug: httpx.AsyncClient(base_url=base, headers={"host": f"{slug}.localhost:{port}"})
        for slug in made
    }
    phone = httpx.AsyncClient(base_url=base, headers={"host": f"localhost:{port}"})
    results: dict[str, list[float]] = {"none": [], "two": [], "stmt_none": [], "stmt_two": []}
    try:
        auth: dict[str, str] = {}

        async def new_session() -> None:
            r = await phone.post(
                "/api/mp/session", json={"appid": fake.DEMO_APPID, "code": "bench1.x"}
            )
            auth["authorization"] = f"Bearer {r.json()['session_token']}"

        await new_session()

        async def one_login(slug: str) -> float:
            for _ in range(3):  # again if Redis lost the session or ticket (a FLUSHALL)
                t = (await browsers[slug].post("/api/qrcode", json={})).json()["ticket"]
                r = await phone.post(f"/api/mp/tickets/{t}/scan", headers=auth)
                if r.status_code == 401:
                    await new_session()
                    continue
                assert r.status_code == 200, r.text
                started = time.perf_counter()
                r = await phone.post(f"/api/mp/tickets/{t}/confirm", json={}, headers=auth)
                took = time.perf_counter() - started
                if r.status_code == 401:
                    await new_session()
                    continue
                assert r.status_code == 200, r.text
                return took * 1000
            raise AssertionError(f"three logins in a row failed: {r.text}")

        for _ in range(25):  # warm-up; the first login registers the user in each pool
            for slug in made:
                await one_login(slug)
        before = await db.fetchval("SELECT count(*) FROM webhook_deliveries")
        for _ in range(rounds * logins // 2):
            results["none"].append(await one_login("plain"))
            results["two"].append(await one_login("hooked"))
        after = await db.fetchval("SELECT count(*) FROM webhook_deliveries")
        assert after - before == 2 * len(results["two"]), (after, before)
        # The login statement alone (users.login of a returning user), same pairs.
        openid = await db.fetchval("SELECT openid FROM wechat_identities LIMIT 1")
        for _ in range(rounds * logins // 2):
            for slug, key in (("plain", "stmt_none"), ("hooked", "stmt_two")):
                pool = made[slug]
                event = users.LoginEvent(pool.id, None, fake.DEMO_APPID, openid, None, None)
                started = time.perf_counter()
                await users.login(db, pool, users.Profile(), event)
                results[key].append((time.perf_counter() - started) * 1000)
    finally:
        for client in (*browsers.values(), phone):
            await client.aclose()
        server.should_exit = True
        await task
    return results


async def delivery_rate(
    settings: Settings, db: asyncpg.Pool, n: int, concurrency: int, processes: int, env
):
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    receiver = subprocess.Popen(  # noqa: S603, ASYNC220 (our own command)
        [sys.executable, "-c", RECEIVER + f"""
import uvicorn
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="error", access_log=False,
            http="httptools", loop="uvloop")
"""],
        start_new_session=True,
    )  # fmt: skip
    workers: list[subprocess.Popen] = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        box = SecretBox(settings.secret_key)
        pool_id = await db.fetchval("SELECT id FROM pools WHERE slug = 'plain'")
        await db.execute("DELETE FROM webhook_endpoints")
        await db.execute("DELETE FROM procrastinate_jobs")
        async with db.acquire() as conn:
            await store.create_endpoint(
                conn,
                settings.replace(webhooks_allow_loopback=True),
                box,
                pool_id,
                url=f"http://127.0.0.1:{port}/in",
                events=["user.updated"],
            )
        workers = [
            subprocess.Popen(  # noqa: S603, ASYNC220 (our own command)
                [sys.executable, "-m", "portal", "worker", "--concurrency", str(concurrency)],
                env=env,
                start_new_session=True,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        procs = [psutil.Process(w.pid) for w in workers]
        # Started and idle (imports, pools, the schema check) before the work arrives.
        while await db.fetchval("SELECT count(*) FROM procrastinate_workers") < processes * 4:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        cpu0 = sum(c.user + c.system for c in (p.cpu_times() for p in procs))
        async with db.acquire() as conn, conn.transaction():  # all at once, as a burst
            for i in range(n):
                await jobs.emit(conn, pool_id, "user.updated", {"user_id": f"u{i}"})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = await db.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'"
            )
            if done >= n:
                break
            await asyncio.sleep(0.2)
        worker_cpu = sum(c.user + c.system for c in (p.cpu_times() for p in procs)) - cpu0
        rcpu = psutil.Process(receiver.pid).cpu_times()
        row = await db.fetchrow(
            "SELECT count(*) AS n, min(attempted_at) AS first, max(attempted_at) AS last, "
            "count(*) FILTER (WHERE status_code = 200) AS ok FROM webhook_attempts"
        )
        span = (row["last"] - row["first"]).total_seconds()
        return {"delivered": row["ok"], "attempts": row["n"], "seconds": span,
                "rate": row["ok"] / span if span else float("inf"),
                "worker_cpu_ms": worker_cpu * 1000 / max(1, row["ok"]),
                "receiver_cpu_ms": (rcpu.user + rcpu.system) * 1000 / max(1, row["ok"]),
                "load": os.getloadavg()[0]}  # fmt: skip
    finally:
        for proc in (*workers, receiver):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--logins", type=int, default=300, help="confirms per round (default 300)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    p.add_argument("--deliveries", type=int, default=5000, help="webhooks delivered (default 5000)")
    p.add_argument("--concurrency", type=int, default=50, help="worker concurrency (default 50)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--rate-only", action="store_true", help="only the delivery rate (part 2), no confirms"
    )
    args = p.parse_args()
    admin_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
    name = f"portal_bench_wh_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_db(admin_url, name)
    secret_key = secrets.token_urlsafe(48)
    try:
        conn = await asyncpg.connect(url)
        await migrations.migrate(conn)
        await conn.close()
        with fake.run_in_thread() as wechat:
            off = Limit(0)
            settings = Settings(
                base_url="http://localhost:8000",
                database_url=url,
                redis_url=redis_url,
                secret_key=secret_key,
                env="prod",
                wechat_api_base=wechat.url,
                default_mp_appid=fake.DEMO_APPID,
                default_mp_secret=fake.DEMO_SECRET,
                rate_qr=off, rate_mp_session=off, rate_token=off, rate_qr_pool=off,
                rate_qr_image=off, rate_wxacode=off,
            )  # fmt: skip
            from portal.stores import postgres

            db = await postgres.create_pool(settings)
            try:
                if args.rate_only:
                    async with db.acquire() as conn:
                        await pools.create(conn, SecretBox(secret_key), slug="plain", name="plain")
                    lat = None
                else:
                    lat = await confirm_latency(settings, db, args.logins, args.rounds)
                env = {
                    **os.environ,
                    "DATABASE_URL": url,
                    "PORTAL_SECRET_KEY": secret_key,
                    "PORTAL_ENV": "prod",
                    "PORTAL_WEBHOOKS_ALLOW_LOOPBACK": "1",
                    "PORTAL_LOG_LEVEL": "WARNING",
                }
                rate = await delivery_rate(
                    settings, db, args.deliveries, args.concurrency, args.workers, env
                )
            finally:
                await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    if lat is None:
        print_rate(args, rate)
        return
    none, two = lat["none"], lat["two"]
    print(f"confirm, no endpoint:      p50 {pct(none, .5):6.2f} ms  p99 {pct(none, .99):6.2f} ms"
          f"  (n={len(none)}, mean {statistics.mean(none):.2f})")  # fmt: skip
    print(f"confirm, two endpoints:    p50 {pct(two, .5):6.2f} ms  p99 {pct(two, .99):6.2f} ms"
          f"  (n={len(two)}, mean {statistics.mean(two):.2f})")  # fmt: skip
    s0, s2 = lat["stmt_none"], lat["stmt_two"]
    print(f"login statement, none:     p50 {pct(s0, 0.5):6.2f} ms  p99 {pct(s0, 0.99):6.2f} ms")
    print(f"login statement, two:      p50 {pct(s2, .5):6.2f} ms  p99 {pct(s2, .99):6.2f} ms"
          f"   (+{pct(s2, .5) - pct(s0, .5):.2f} ms)")  # fmt: skip
    delta = pct(two, 0.5) - pct(none, 0.5)
    print(f"added to confirm p50:      {delta:+.2f} ms   (goal: <= 1 ms) "
          f"{'OK' if delta <= 1 else 'MISSED'}")  # fmt: skip
    print_rate(args, rate)


def print_rate(args, rate) -> None:
    print(f"worker: {rate['delivered']} webhooks in {rate['seconds']:.2f} s = "
          f"{rate['rate']:.0f}/s (attempts {rate['attempts']}, {args.workers} worker processes"
          f" x concurrency {args.concurrency})"
          f"   (goal: >= 500/s) {'OK' if rate['rate'] >= 500 else 'MISSED'}")  # fmt: skip
    print(f"worker CPU per webhook:    {rate['worker_cpu_ms']:.2f} ms (receiver "
          f"{rate['receiver_cpu_ms']:.2f} ms); load average at the end {rate['load']:.1f} "
          f"on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
