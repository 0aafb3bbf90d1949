"""``portal serve`` as in production (gunicorn, two uvicorn workers): /metrics
sums the workers (Prometheus multiprocess mode), every log line on stderr is
JSON with its request id, and a stop (TERM) or a graceful reload (HUP) ends
the open SSE streams at once instead of holding the workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from portal.obs import metrics
from portal.tenants import pools
from tests.support import ServeProcess, free_port, serve_env
from tests.test_observability import parse_metrics, value


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log: Path
    metrics_dir: Path

    def client(self, slug: str | None = None, **kwargs) -> httpx.AsyncClient:
        host = f"{slug}.localhost:{self.port}" if slug else f"localhost:{self.port}"
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers={"host": host}, timeout=10, **kwargs
        )

    def lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)  # the gunicorn master (`portal serve` execs it)


@pytest.fixture
async def served(db, redis_client, box, stores, fake_wechat, secret_key, tmp_path):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    port = free_port()
    env = serve_env(
        stores,
        fake_wechat,
        secret_key,
        f"http://localhost:{port}",
        tmp_path / "data",
        PORTAL_ACCESS_LOG="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    env.pop("PORTAL_LOG_FORMAT", None)
    log = tmp_path / "serve.log"
    server = ServeProcess(env, log, port=port, workers=2)
    try:
        await server.ready(f"localhost:{port}")
        yield Served(server.proc, port, log, tmp_path / "metrics")
    finally:
        server.stop()


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def open_stream(
    pc: httpx.AsyncClient, ticket: dict, timeout: float = 5
) -> tuple[asyncio.Task, list[str]]:
    """An SSE stream read to its end in a task; returns once its first event came."""
    seen: list[str] = []
    first = asyncio.Event()

    async def read() -> None:
        url = f"/api/qrcode/{ticket['ticket']}/events"
        async with pc.stream("GET", url, headers={"x-ticket-secret": ticket["secret"]}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():  # RemoteProtocolError if cut short
                seen.append(line)
                first.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), timeout)
    return task, seen


async def test_metrics_sum_the_workers_and_logs_are_json_lines(served):
    # Fresh connections until both workers have created tickets.
    created: list[str] = []
    pids: set[int] = set()
    for _ in range(200):
        async with served.client("acme") as pc:
            r = await pc.post("/api/qrcode", json={})
            assert r.status_code == 201
            created.append(r.headers["x-request-id"])
        if len(created) % 5 == 0:
            await asyncio.sleep(0.1)  # the access lines reach the log file
            pids = {
                line["pid"]
                for line in served.json_lines()
                if line["request_id"] in created and line["logger"] == "uvicorn.access"
            }
            if len(pids) == 2:
                break
    assert len(pids) == 2, "the kernel gave every connection to one worker"

    # Each worker writes what it counted to the shared files within half a second
    # (metrics.Tally): wait that long, then every scrape must report the sum.
    await asyncio.sleep(metrics.TALLY.interval + 0.3)
    for _ in range(4):  # whichever worker answers the scrape, it reports the sum
        async with served.client() as apex:
            r = await apex.get("/metrics")
        assert r.status_code == 200
        samples = parse_metrics(r.text)
        assert value(samples, "portal_tickets_created_total") == len(created)
        count = value(
            samples,
            "portal_http_request_duration_seconds_count",
            site="pool",
            route="/api/qrcode",
            method="POST",
            status="201",
        )
        assert count == len(created)

    lines = served.json_lines()  # raises if any line is not JSON
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # the master's too
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {line["request_id"] for line in access} >= set(created)
    assert all(line["request_id"] for line in access)


async def test_a_stop_ends_open_streams_at_once(served):
    async with served.client("acme") as pc:
        t = (await pc.post("/api/qrcode", json={})).json()
        stream, seen = await open_stream(pc, t)
        assert list(served.metrics_dir.glob("gauge_livesum_*.db"))
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        await asyncio.wait_for(stream, 3)  # ended with its last chunk, not cut
        ended = time.monotonic() - started
        assert "retry: 2000" in seen and any('"status":"pending"' in s for s in seen)
    served.proc.wait(timeout=10)
    stopped = time.monotonic() - started
    assert ended < 2, ended
    assert stopped < 6, stopped  # not gunicorn's graceful_timeout (30 s)
    # child_exit marked the workers dead: their live gauges are gone.
    assert not list(served.metrics_dir.glob("gauge_livesum_*.db"))
    log = served.log.read_text()
    assert "Shutting down: Master" in log


async def test_a_graceful_reload_moves_streams_to_the_new_workers(served):
    async with served.client("acme") as pc, served.client() as apex:
        t = (await pc.post("/api/qrcode", json={})).json()
        # Its count reaches the shared files within the tally's interval (metrics.Tally).
        await asyncio.sleep(metrics.TALLY.interval + 0.3)
        before = parse_metrics((await apex.get("/metrics")).text)
        stream, lines = await open_stream(pc, t)
        started = time.monotonic()
        served.signal(signal.SIGHUP)
        await asyncio.wait_for(stream, 5)  # the old worker ended it cleanly
        assert time.monotonic() - started < 4
    # The browser reconnects (a new connection: the old worker closed its idle
    # ones) after the pause the stream asked for, as EventSource does: by then
    # every old worker has stopped accepting (each notices its SIGTERM within
    # uvicorn's 0.1 s tick; one reconnecting at once could reach an old worker
    # that had not yet, and be cut off). A new worker serves it; nothing was lost.
    retry = next(int(line.split(":")[1]) for line in lines if line.startswith("retry:"))
    assert retry == 2000
    await asyncio.sleep(retry / 1000)
    async with served.client("acme") as pc, served.client() as apex:
        again, seen = await open_stream(pc, t, timeout=20)
        assert any('"status":"pending"' in s for s in seen)
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await again
        after = parse_metrics((await apex.get("/metrics")).text)
        assert value(after, "portal_tickets_created_total") == value(
            before, "portal_tickets_created_total"
        )
        assert served.proc.poll() is None
