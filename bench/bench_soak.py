"""Benchmark 5: a soak run — realistic mixed traffic for a bounded time, with the
server's memory sampled throughout. Memory must stay flat: no growth that
would, over days, end in the OOM killer.

Visitors arrive at a steady rate (``rate`` per second, open loop). Each one,
like a person on a login page:

  POST /api/qrcode, then follows its ticket over SSE (most) or long polling
  (the rest, as old browsers and proxies do);
  then, by a fixed mix:
    60 %  scan and confirm on the phone, exchange on the page (a login;
          every 4th of them also refreshes its tokens at /oidc/token),
    10 %  scan, then cancel on the phone,
    30 %  walk away: the page is closed before anyone scans (the stream is
          dropped; the ticket is left to expire in Redis).

The server's RSS (gunicorn master + workers) is sampled every ``interval``
seconds. Reported: RSS after the warm-up, at the end, the highest, the
growth over the run's second half as MB per hour (least squares), and every
sample (drawn as a bar per sample in the printout).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter

from common import Unexpected, exchange, mp_session, scan
from loadclient import Connection, SSEStream
from metrics import CpuMeter, format_cpu
from stack import LOOPBACK, Stack

MIX = (("login", 0.60), ("cancel", 0.10), ("walk_away", 0.30))
SSE_SHARE = 0.8
WARMUP_S = 20.0


def _pick(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for kind, share in MIX:
        acc += share
        if x < acc:
            return kind
    return MIX[-1][0]


def _slope_mb_per_hour(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, in MB per hour."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return round(cov / var * 3600 / 1e6, 1)


def draw(samples: list[tuple[float, int]], width: int = 40) -> list[str]:
    """One text bar per sample, scaled from 0 to the highest RSS."""
    if not samples:
        return []
    top = max(m for _, m in samples)
    return [
        f"  {t:6.0f}s {m / 1e6:7.1f} MB |{'█' * max(1, round(m / top * width))}" for t, m in samples
    ]


async def run(stack: Stack, *, seconds: float, rate: float, interval: float) -> dict:
    print(
        f"Soak: {seconds:.0f}s of mixed traffic at {rate:g} visitors/s "
        f"after a {WARMUP_S:.0f}s warm-up; RSS every {interval:g}s",
        flush=True,
    )
    port, pool_host, apex_host = stack.port, stack.pool_host, stack.apex_host
    # A confidential client (a website's backend): only such a client may be granted
    # offline_access, so its logins get refresh tokens, which it refreshes with its secret.
    client = json.loads(
        stack._run_cli(
            "client", "create", "bench", "--name", "Soak",
            "--redirect-uri", "https://soak.example/callback",
        )
    )  # fmt: skip
    client_id = client["client_id"]
    basic = base64.b64encode(f"{client_id}:{client['client_secret']}".encode()).decode()
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    free_browsers: list[Connection] = []
    free_phones: list[Connection] = []

    def take(pool: list[Connection], host: str) -> Connection:
        return pool.pop() if pool else Connection(LOOPBACK, port, host)

    async def follow(ticket: str, secret: str, use_sse: bool, seen: asyncio.Queue) -> None:
        path = f"/api/qrcode/{ticket}/events?secret={secret}"
        if use_sse:
            stream = SSEStream(LOOPBACK, port, pool_host, path)
            try:
                await stream.open()
                async for ev in stream.events():
                    status = json.loads(ev.data)["status"]
                    seen.put_nowait(status)
                    if status in ("confirmed", "cancelled", "expired"):
                        return
            finally:
                stream.close()
        else:
            conn = Connection(LOOPBACK, port, pool_host)
            known = ""
            try:
                while True:
                    q = f"/api/qrcode/{ticket}/status?secret={secret}&wait=25&known={known}"
                    r = await conn.request("GET", q)
                    if r.status != 200:
                        raise Unexpected("long poll", r)
                    status = r.json()["status"]
                    if status != known:
                        seen.put_nowait(status)
                        known = status
                    if status in ("confirmed", "cancelled", "expired"):
                        return
            finally:
                conn.close()

    async def until(seen: asyncio.Queue, wanted: str) -> None:
        while await asyncio.wait_for(seen.get(), 30) != wanted:
            pass

    async def visitor(n: int) -> None:
        kind = _pick(rng)
        use_sse = rng.random() < SSE_SHARE
        browser = take(free_browsers, pool_host)
        phone = take(free_phones, apex_host)
        follower = None
        try:
            r = await browser.request("POST", "/api/qrcode", json_body={"client_id": client_id})
            if r.status != 201:
                raise Unexpected("create ticket", r)
            ticket, secret = r.json()["ticket"], r.json()["secret"]
            seen: asyncio.Queue[str] = asyncio.Queue()
            follower = asyncio.ensure_future(follow(ticket, secret, use_sse, seen))
            await until(seen, "pending")
            if kind == "walk_away":
                await asyncio.sleep(rng.uniform(0.5, 5))
                follower.cancel()  # the tab is closed
                outcomes[kind] += 1
                return
            token = await mp_session(phone, f"soak{n % 5000}")
            await scan(phone, ticket, token)
            await until(seen, "scanned")
            action = "confirm" if kind == "login" else "cancel"
            r = await phone.request(
                "POST",
                f"/api/mp/tickets/{ticket}/{action}",
                json_body={},
                headers={"Authorization": f"Bearer {token}"},
            )
            if r.status != 200:
                raise Unexpected(action, r)
            await until(seen, "confirmed" if kind == "login" else "cancelled")
            if kind == "login":
                tokens = await exchange(browser, ticket, secret)
                if n % 4 == 0:
                    if not tokens.get("refresh_token"):
                        errors["exchange: no refresh token"] += 1
                        return
                    body = f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}"
                    r = await browser.request(
                        "POST",
                        "/oidc/token",
                        body=body.encode(),
                        headers={
                            "Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": f"Basic {basic}",
                        },
                    )
                    if r.status != 200:
                        raise Unexpected("refresh", r)
                    outcomes["refresh"] += 1
            outcomes[kind] += 1
        except Unexpected as exc:
            errors[f"{exc.step}: HTTP {exc.status}"] += 1
        except Exception as exc:
            errors[type(exc).__name__] += 1
        finally:
            if follower is not None and not follower.done():
                follower.cancel()
            free_browsers.append(browser)
            free_phones.append(phone)

    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    end = t0 + WARMUP_S + seconds
    meter = CpuMeter(stack.process_groups)
    cpu: dict = {}

    async def sampler() -> None:
        next_at = t0 + WARMUP_S
        started = False
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if not started:
                meter.start()
                started = True
            now = time.monotonic()
            samples.append((round(now - t0 - WARMUP_S, 1), stack.server.rss()["total"]))
            if now >= end - 0.01:
                cpu.update(meter.stop())
                return
            next_at = min(next_at + interval, end)

    tasks: set[asyncio.Task] = set()
    sample_task = asyncio.ensure_future(sampler())
    n = 0
    while time.monotonic() < end:
        task = asyncio.ensure_future(visitor(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    await sample_task
    if tasks:
        await asyncio.wait(tasks, timeout=40)
    for conn in free_browsers + free_phones:
        conn.close()

    measured = [(t, m) for t, m in samples if t >= 0]
    half = [(t, m) for t, m in measured if t >= seconds / 2]
    start_rss = measured[0][1] if measured else 0
    end_rss = measured[-1][1] if measured else 0
    result = {
        "seconds": seconds,
        "visitors": n,
        "visitors_per_s": rate,
        "outcomes": dict(outcomes),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "rss_start_mb": round(start_rss / 1e6, 1),
        "rss_end_mb": round(end_rss / 1e6, 1),
        "rss_max_mb": round(max((m for _, m in measured), default=0) / 1e6, 1),
        "growth_mb_per_hour_second_half": _slope_mb_per_hour(half),
        "samples": [{"t_s": t, "rss_mb": round(m / 1e6, 2)} for t, m in measured],
        "cpu_cores": cpu,
    }
    print(
        f"  {n} visitors: {dict(outcomes)}; errors {result['errors']}"
        + (f" {dict(errors)}" if errors else ""),
        flush=True,
    )
    print(
        f"  RSS {result['rss_start_mb']} MB → {result['rss_end_mb']} MB "
        f"(max {result['rss_max_mb']} MB); second half "
        f"{result['growth_mb_per_hour_second_half']} MB/h",
        flush=True,
    )
    for line in draw(measured):
        print(line, flush=True)
    print(f"  CPU (cores): {format_cpu(cpu)}", flush=True)
    return result
