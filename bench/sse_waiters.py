"""The browsers of the SSE benchmark: one process holding every event stream.

It runs apart from the process that sends the confirms, so the moment an
event is read is not delayed by the sender's own work. The two talk over a
multiprocessing pipe:

  parent → ("open", [(ticket, secret), ...], open_concurrency)
  child  → ("connected", {"ok", "failed", "errors", "seconds"})
  parent → ("collect", deadline_monotonic)   # after the last confirm was sent
  child  → ("results", {ticket: {"pending", "scanned", "confirmed", "error"}}, stats)

Timestamps are ``time.monotonic()``: CLOCK_MONOTONIC, one clock for every
process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter


async def _follow(stream, ticket: str, rec: dict, first: asyncio.Event) -> None:
    try:
        async for ev in stream.events():
            if ev.event != "status":
                continue
            status = json.loads(ev.data)["status"]
            rec.setdefault(status, ev.received)
            if status == "pending":
                first.set()
            if status in ("confirmed", "cancelled", "expired"):
                rec["final"] = status
        rec["ended"] = time.monotonic()  # the server closed the stream (after a final status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
        rec["failed_at"] = time.monotonic()
    finally:
        first.set()
        stream.close()


async def _run(conn, addr: str, port: int, host: str) -> None:
    from loadclient import SSEStream

    loop = asyncio.get_running_loop()
    try:
        kind, pairs, open_concurrency = await loop.run_in_executor(None, conn.recv)
    except EOFError:
        return
    assert kind == "open"
    records: dict[str, dict] = {t: {} for t, _ in pairs}
    tasks: list[asyncio.Task] = []
    sem = asyncio.Semaphore(open_concurrency)
    errors: Counter[str] = Counter()

    async def open_one(ticket: str, secret: str) -> bool:
        rec = records[ticket]
        async with sem:
            stream = SSEStream(addr, port, host, f"/api/qrcode/{ticket}/events?secret={secret}")
            try:
                await stream.open()
            except Exception as exc:
                stream.close()
                rec["error"] = f"open: {type(exc).__name__}: {exc}"[:200]
                errors[f"{type(exc).__name__}: {exc}"[:80]] += 1
                return False
            first = asyncio.Event()
            tasks.append(asyncio.create_task(_follow(stream, ticket, rec, first)))
            try:
                await asyncio.wait_for(first.wait(), 30)
            except TimeoutError:
                rec["error"] = "no first event within 30 s"
                errors["no first event"] += 1
                return False
            if "pending" not in rec:
                errors[f"first event not pending: {rec}"[:80]] += 1
                return False
            return True

    t0 = time.monotonic()
    oks = await asyncio.gather(*(open_one(t, s) for t, s in pairs))
    seconds = time.monotonic() - t0
    ok = sum(oks)
    conn.send(
        ("connected", {"ok": ok, "failed": len(pairs) - ok, "errors": dict(errors),
                       "seconds": round(seconds, 2)})
    )  # fmt: skip

    try:
        kind, deadline = await loop.run_in_executor(None, conn.recv)
    except EOFError:  # the parent gave up
        return
    assert kind == "collect"
    # Wait until every stream saw a final status (the server then ends it) or the deadline.
    while time.monotonic() < deadline:
        if all("final" in r or "error" in r for r in records.values()):
            break
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("results", records))


def main(conn, addr: str, port: int, host: str) -> None:
    """Entry point of the child process (multiprocessing, spawn)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stack import raise_nofile

    raise_nofile()
    try:
        import uvloop

        uvloop.run(_run(conn, addr, port, host))
    except ImportError:
        asyncio.run(_run(conn, addr, port, host))
    finally:
        conn.close()
