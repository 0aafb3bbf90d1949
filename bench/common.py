"""What several benchmarks do: play the mini program and the browser over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from loadclient import Connection, ConnectionPool, Response
from stack import DEMO_APPID

T = TypeVar("T")


class Unexpected(Exception):
    """The portal answered something the benchmark did not expect."""

    def __init__(self, step: str, r: Response) -> None:
        self.step = step
        self.status = r.status
        super().__init__(f"{step}: HTTP {r.status} {r.body[:200]!r}")


def expect(step: str, r: Response, status: int) -> Response:
    if r.status != status:
        raise Unexpected(step, r)
    return r


async def bounded(
    n: int,
    fn: Callable[[int], Awaitable[T]],
    concurrency: int,
    label: str = "",
    *,
    tolerate: bool = False,
) -> list[T]:
    """fn(0..n-1) with at most ``concurrency`` at once, results in order.

    A failure raises (after the others finish) unless ``tolerate``: then its
    exception takes its place in the results.
    """
    out: list = [None] * n
    next_i = 0
    failed = 0

    async def worker() -> None:
        nonlocal next_i, failed
        while next_i < n:
            i = next_i
            next_i += 1
            try:
                out[i] = await fn(i)
            except Exception as exc:
                out[i] = exc
                failed += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    if label:
        dt = time.monotonic() - t0
        err = f", {failed} FAILED" if failed else ""
        print(f"  {label}: {n} in {dt:.1f}s ({n / max(dt, 1e-9):.0f}/s){err}", flush=True)
    if failed and not tolerate:
        first = next(x for x in out if isinstance(x, Exception))
        raise RuntimeError(f"{label or 'setup'}: {failed} of {n} failed; first: {first}") from first
    return out


async def paced(
    n: int,
    rate: float,
    connections: list[Connection],
    fn: Callable[[Connection, int], Awaitable[Response]],
    expect: int = 200,
) -> tuple[list[float], list[float], list[str]]:
    """fn(conn, i) for i in 0..n-1 started at a steady ``rate`` per second (open
    loop), each on a free connection of ``connections`` (it waits for one when
    all are busy). → (t_sent, t_answered, outcome) per i; t_sent is taken just
    before the request is written, outcome is "ok" or what went wrong."""
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for c in connections:
        free.put_nowait(c)
    sent = [0.0] * n
    answered = [0.0] * n
    outcome = [""] * n

    async def one(i: int) -> None:
        conn = await free.get()
        try:
            r = await fn(conn, i)
            answered[i] = time.monotonic()
            sent[i] = conn.last_sent
            outcome[i] = "ok" if r.status == expect else f"HTTP {r.status}"
        except Exception as exc:
            outcome[i] = type(exc).__name__
        finally:
            free.put_nowait(conn)

    tasks = []
    t0 = time.monotonic() + 0.05
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    for c in connections:
        c.close()
    return sent, answered, outcome


def wx_code(user: str) -> str:
    """A fresh wx.login code: the fake WeChat logs in ``user`` for it, once."""
    return f"{user}.{secrets.token_hex(6)}"


async def create_ticket(conn: Connection | ConnectionPool) -> tuple[str, str]:
    r = expect("create ticket", await conn.request("POST", "/api/qrcode", json_body={}), 201)
    body = r.json()
    return body["ticket"], body["secret"]


async def mp_session(conn: Connection | ConnectionPool, user: str) -> str:
    r = await conn.request(
        "POST", "/api/mp/session", json_body={"appid": DEMO_APPID, "code": wx_code(user)}
    )
    return expect("mp session", r, 200).json()["session_token"]


async def scan(conn: Connection | ConnectionPool, ticket: str, token: str) -> None:
    r = await conn.request(
        "POST", f"/api/mp/tickets/{ticket}/scan", headers={"Authorization": f"Bearer {token}"}
    )
    expect("scan", r, 200)


def confirm_args(ticket: str, token: str) -> tuple[tuple, dict]:
    return (
        ("POST", f"/api/mp/tickets/{ticket}/confirm"),
        {"json_body": {}, "headers": {"Authorization": f"Bearer {token}"}},
    )


async def exchange(conn: Connection | ConnectionPool, ticket: str, secret: str) -> dict:
    r = await conn.request("POST", f"/api/qrcode/{ticket}/exchange", json_body={"secret": secret})
    body = expect("exchange", r, 200).json()
    if not body.get("id_token") or not body.get("access_token"):
        raise Unexpected("exchange (no tokens)", r)
    return body


def run_async(coro):
    """Run on uvloop when it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
