"""Benchmark 1: many concurrent SSE waiters, and how fast a confirm reaches them.

1. Mini-program sessions for N distinct WeChat users (``sse0`` … ``sseN-1``) and
   N tickets are made first (not timed).
2. Server RSS is read (master + workers), then a separate process opens N
   ``GET /api/qrcode/{t}/events?secret=`` streams (the kernel spreads them over
   the workers) and waits for each one's first ``pending`` event. RSS is read
   again: (after - before) / N is the memory per waiter.
3. Every ticket is scanned (not timed; each waiter sees ``scanned``).
4. The tickets are confirmed at a steady rate. For each: t_sent just before
   the confirm request is written, t_resp when its response is read, and
   t_event when the waiter's stream delivers ``"status":"confirmed"``.
   Latency = t_event - t_sent (includes the confirm's own processing) and
   t_event - t_resp (may be negative: the event can beat the response).
5. A waiter whose confirm succeeded but which saw no ``confirmed`` within the
   grace period is a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from collections import Counter

import sse_waiters
from common import Unexpected, bounded, confirm_args, create_ticket, mp_session, paced
from loadclient import Connection, ConnectionPool
from metrics import CpuMeter, format_cpu, summary_ms
from stack import LOOPBACK, Stack

SETUP_CONCURRENCY = 64
GRACE_S = 10.0  # a confirmed event later than this after its confirm counts as lost


async def _recv(conn, timeout: float):
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, conn.poll, timeout):
        raise TimeoutError(f"the waiter process did not answer within {timeout:.0f}s")
    return conn.recv()


async def run(
    stack: Stack,
    *,
    waiters: int,
    rate: float,
    scan_rate: float,
    confirm_connections: int,
    open_concurrency: int,
) -> dict:
    n = waiters
    port = stack.port
    assert stack.server is not None
    apex = ConnectionPool(LOOPBACK, port, stack.apex_host, SETUP_CONCURRENCY)
    pool = ConnectionPool(LOOPBACK, port, stack.pool_host, SETUP_CONCURRENCY)
    print(f"SSE waiters: {n} waiters, confirms at {rate:.0f}/s", flush=True)
    tokens = await bounded(
        n, lambda i: mp_session(apex, f"sse{i}"), SETUP_CONCURRENCY, "mini-program sessions"
    )
    tickets = await bounded(n, lambda i: create_ticket(pool), SETUP_CONCURRENCY, "tickets")
    apex.close()
    pool.close()

    await asyncio.sleep(1.0)
    rss_before = stack.server.rss()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=sse_waiters.main, args=(child, LOOPBACK, port, stack.pool_host), daemon=True
    )
    proc.start()
    child.close()
    try:
        parent.send(("open", tickets, open_concurrency))
        kind, connected = await _recv(parent, 60 + n / 50)
        assert kind == "connected"
        print(
            f"  waiters connected: {connected['ok']}/{n} in {connected['seconds']}s"
            + (f", errors {connected['errors']}" if connected["failed"] else ""),
            flush=True,
        )
        await asyncio.sleep(2.0)
        rss_with = stack.server.rss()
        spread = stack.server.connections_per_worker()
        per_worker_before = {k: v for k, v in rss_before.items() if k.startswith("worker")}
        per_worker_with = {k: v for k, v in rss_with.items() if k.startswith("worker")}
        grown = rss_with["total"] - rss_before["total"]
        kb_per_waiter = grown / max(connected["ok"], 1) / 1000
        print(
            f"  server RSS {rss_before['total'] / 1e6:.1f} MB -> {rss_with['total'] / 1e6:.1f} MB"
            f" = {kb_per_waiter:.1f} kB per waiter; connections per worker {spread}",
            flush=True,
        )

        # Scans: not timed, but paced like real phones; each waiter sees "scanned".
        _, _, scan_outcome = await paced(
            n,
            scan_rate,
            [Connection(LOOPBACK, port, stack.apex_host) for _ in range(confirm_connections)],
            lambda conn, i: conn.request(
                "POST",
                f"/api/mp/tickets/{tickets[i][0]}/scan",
                headers={"Authorization": f"Bearer {tokens[i]}"},
            ),
        )
        scan_errors = Counter(o for o in scan_outcome if o != "ok")
        print(
            f"  scans: {n - sum(scan_errors.values())}/{n} ok at {scan_rate:.0f}/s"
            + (f", errors {dict(scan_errors)}" if scan_errors else ""),
            flush=True,
        )
        await asyncio.sleep(1.0)
        to_confirm = [i for i in range(n) if scan_outcome[i] == "ok"]

        # -- the timed part: confirms at a steady rate ---------------------------
        meter = CpuMeter(stack.process_groups)
        meter.start()

        def confirm(conn: Connection, j: int):
            i = to_confirm[j]
            args, kwargs = confirm_args(tickets[i][0], tokens[i])
            return conn.request(*args, **kwargs)

        c_sent, c_answered, c_outcome = await paced(
            len(to_confirm),
            rate,
            [Connection(LOOPBACK, port, stack.apex_host) for _ in range(confirm_connections)],
            confirm,
        )
        sent = [0.0] * n
        answered = [0.0] * n
        outcome = ["not scanned"] * n
        for j, i in enumerate(to_confirm):
            sent[i], answered[i], outcome[i] = c_sent[j], c_answered[j], c_outcome[j]
        ok_sent = [sent[i] for i in range(n) if outcome[i] == "ok"]
        send_seconds = max(ok_sent) - min(ok_sent) if len(ok_sent) > 1 else 0.0
        parent.send(("collect", time.monotonic() + GRACE_S))
        kind, records = await _recv(parent, GRACE_S + 60)
        cpu = meter.stop()
        assert kind == "results"
    finally:
        with contextlib.suppress(Exception):
            parent.close()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)

    from_send, from_resp = [], []
    lost = 0
    stream_errors: Counter[str] = Counter()
    confirm_errors = Counter(o for o in outcome if o not in ("ok", "not scanned"))
    broken_before_confirm = 0
    for i, (ticket, _) in enumerate(tickets):
        rec = records[ticket]
        if "error" in rec:
            stream_errors[rec["error"][:70]] += 1
        if outcome[i] != "ok":
            continue
        t_event = rec.get("confirmed")
        if t_event is None or t_event - sent[i] > GRACE_S:
            lost += 1
            if "error" in rec and rec.get("ended", rec.get("failed_at", 0)) < sent[i]:
                broken_before_confirm += 1
            continue
        from_send.append(t_event - sent[i])
        from_resp.append(t_event - answered[i])
    confirm_latency = [answered[i] - sent[i] for i in range(n) if outcome[i] == "ok"]
    result = {
        "waiters": n,
        "connected": connected["ok"],
        "connect_failed": connected["failed"],
        "connect_errors": connected["errors"],
        "connect_seconds": connected["seconds"],
        "open_concurrency": open_concurrency,
        "rss_before_bytes": rss_before,
        "rss_with_waiters_bytes": rss_with,
        "rss_per_worker_before": per_worker_before,
        "rss_per_worker_with_waiters": per_worker_with,
        "kb_per_waiter": round(kb_per_waiter, 2),
        "connections_per_worker": spread,
        "confirm_rate_target": rate,
        "confirm_rate_achieved": round((len(ok_sent) - 1) / send_seconds, 1)
        if send_seconds
        else None,
        "confirms_ok": outcome.count("ok"),
        "confirm_errors": dict(confirm_errors),
        "confirm_response_ms": summary_ms(confirm_latency),
        "event_after_send_ms": summary_ms(from_send),
        "event_after_response_ms": summary_ms(from_resp),
        "scan_rate": scan_rate,
        "scan_errors": dict(scan_errors),
        "lost_events": lost,
        "lost_events_stream_broken_before_confirm": broken_before_confirm,
        "stream_errors": dict(stream_errors),
        "streams_seen_final": sum(1 for r in records.values() if "final" in r),
        "cpu_cores_during_confirms": cpu,
    }
    s, r = result["event_after_send_ms"], result["event_after_response_ms"]
    print(
        f"  confirms {result['confirms_ok']}/{n} ok at {result['confirm_rate_achieved']}/s; "
        f"event after send p50 {s['p50_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms; "
        f"after response p50 {r['p50_ms']} p99 {r['p99_ms']} ms; lost {lost}",
        flush=True,
    )
    print(f"  CPU (cores) during confirms: {format_cpu(cpu)}", flush=True)
    if confirm_errors:
        print(f"  confirm errors: {dict(confirm_errors)}", flush=True)
    return result


__all__ = ["Unexpected", "run"]
