"""Benchmark 3: whole scan logins per second.

N virtual users run at once, each a distinct WeChat user (``user0`` …), each
looping over one complete login:

  browser: POST /api/qrcode                         (pool host)
  phone:   POST /api/mp/session  {appid, code}      (apex host; a fresh wx.login
           code ``userK.<random>`` each time: the fake WeChat accepts each once)
  phone:   POST /api/mp/tickets/{t}/scan
  phone:   POST /api/mp/tickets/{t}/confirm
  browser: POST /api/qrcode/{t}/exchange {secret}   → ID and access tokens

The browser and the phone each keep one keep-alive connection per user.
After a warm-up (not counted), logins that *finish* inside the measured
window count; logins/s = that count / window. Any unexpected answer is an
error (the user goes on with a new login).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

from common import Unexpected, create_ticket, exchange, mp_session, scan
from loadclient import Connection
from metrics import CpuMeter, format_cpu, summary_ms
from stack import LOOPBACK, Stack

STEPS = ("create", "session", "scan", "confirm", "exchange")


async def run(stack: Stack, *, users: int, seconds: float, warmup: float) -> dict:
    print(
        f"Scan logins: {users} concurrent users, {seconds:.0f}s after a {warmup:.0f}s warm-up",
        flush=True,
    )
    port = stack.port
    t_start = time.monotonic()
    w0 = t_start + warmup
    w1 = w0 + seconds
    done: list[tuple[float, float]] = []  # (start, end) of each successful login
    errors: list[tuple[float, str]] = []
    step_times: list[list[float]] = []  # per successful login, seconds per step

    async def user(k: int) -> None:
        browser = Connection(LOOPBACK, port, stack.pool_host)
        phone = Connection(LOOPBACK, port, stack.apex_host)
        name = f"user{k}"
        try:
            while time.monotonic() < w1:
                t0 = time.monotonic()
                marks = [t0]
                try:
                    ticket, secret = await create_ticket(browser)
                    marks.append(time.monotonic())
                    token = await mp_session(phone, name)
                    marks.append(time.monotonic())
                    await scan(phone, ticket, token)
                    marks.append(time.monotonic())
                    r = await phone.request(
                        "POST",
                        f"/api/mp/tickets/{ticket}/confirm",
                        json_body={},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if r.status != 200 or r.json().get("status") != "confirmed":
                        raise Unexpected("confirm", r)
                    marks.append(time.monotonic())
                    await exchange(browser, ticket, secret)
                    marks.append(time.monotonic())
                except Unexpected as exc:
                    errors.append((time.monotonic(), f"{exc.step}: HTTP {exc.status}"))
                    await asyncio.sleep(0.01)
                    continue
                except Exception as exc:
                    errors.append((time.monotonic(), type(exc).__name__))
                    await asyncio.sleep(0.01)
                    continue
                done.append((t0, marks[-1]))
                step_times.append([b - a for a, b in itertools.pairwise(marks)])
        finally:
            browser.close()
            phone.close()

    meter = CpuMeter(stack.process_groups)
    cpu: dict = {}
    spread: dict = {}

    async def measure_cpu() -> None:
        await asyncio.sleep(max(0.0, w0 - time.monotonic()))
        meter.start()
        spread.update(stack.server.connections_per_worker())
        await asyncio.sleep(max(0.0, w1 - time.monotonic()))
        cpu.update(meter.stop())

    await asyncio.gather(measure_cpu(), *(user(k) for k in range(users)))
    in_window = [(a, b) for a, b in done if w0 <= b < w1]
    steps = [st for (a, b), st in zip(done, step_times, strict=True) if w0 <= b < w1]
    window_errors = Counter(e for t, e in errors if w0 <= t < w1)
    warmup_errors = Counter(e for t, e in errors if t < w0)
    result = {
        "users": users,
        "seconds": seconds,
        "logins": len(in_window),
        "logins_per_s": round(len(in_window) / seconds, 1),
        "login_ms": summary_ms([b - a for a, b in in_window]),
        "step_ms": {name: summary_ms([st[j] for st in steps]) for j, name in enumerate(STEPS)},
        "errors": sum(window_errors.values()),
        "error_kinds": dict(window_errors),
        "warmup_logins": sum(1 for _, b in done if b < w0),
        "warmup_errors": dict(warmup_errors),
        "cpu_cores": cpu,
        # CPU spent per login (ms): by the portal workers, and by everything of ours
        # (workers, PostgreSQL, Redis, fake WeChat, this load generator).
        "cpu_ms_per_login": {
            "portal workers": round(
                cpu.get("portal workers", 0) * seconds / len(in_window) * 1e3, 2
            )
            if in_window
            else None,
            "postgres": round(cpu.get("postgres", 0) * seconds / len(in_window) * 1e3, 2)
            if in_window
            else None,
            "all ours": round(cpu.get("total", 0) * seconds / len(in_window) * 1e3, 2)
            if in_window
            else None,
        },
        "connections_per_worker": spread,
    }
    lat = result["login_ms"]
    print(
        f"  {result['logins_per_s']} logins/s ({result['logins']} in {seconds:.0f}s); "
        f"login p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms; errors {result['errors']}"
        + (f" {dict(window_errors)}" if window_errors else ""),
        flush=True,
    )
    print(
        "  per step p50/p99 ms: "
        + ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in result["step_ms"].items()),
        flush=True,
    )
    print(f"  CPU (cores): {format_cpu(cpu)}; connections per worker {spread}", flush=True)
    return result
