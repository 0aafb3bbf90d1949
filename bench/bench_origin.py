"""Micro-benchmark: what issue 20 costs the hot path (ticket creation) and the scan.

Ticket creation keeps where it was started raw (User-Agent, address, the
website's host, the device from a few substring tests) in the same Lua step;
nothing is parsed then. This measures, one process against the Redis in
``REDIS_URL`` (a spare database: it flushes nothing, its tickets expire):

- ``started_at`` per request (header reads, ``urlsplit``, ``device_of``), in µs;
- ``Tickets.create`` with the origin fields against the same script without
  them (the pre-issue-20 script), alternating rounds, µs per ticket;
- at scan time: ``describe`` with a User-Agent already parsed in this process,
  with a new one (ua-parser's regexes), and the ip2region lookup.

    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/bench_origin.py [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from starlette.requests import Request

from portal.scan import origin, qrapi, tickets
from portal.stores.crypto import SecretBox
from portal.stores.redismux import Multiplexer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import xdb

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
WITHOUT = tickets._CREATE.replace(
    ",\n  'ua', ARGV[11], 'ip', ARGV[12], 'site', ARGV[13], 'dev', ARGV[14], "
    "'ct', exp - tonumber(ARGV[4]) * 1000)",
    ")",
)


def _request() -> Request:
    headers = [
        (b"user-agent", CHROME.encode()),
        (b"origin", b"https://shop.example.com"),
        (b"content-type", b"application/json"),
    ]
    return Request({"type": "http", "method": "POST", "path": "/api/qrcode", "headers": headers})


def _per_call_us(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="tickets per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("set REDIS_URL to a spare database, e.g. redis://127.0.0.1:6379/14")
    assert WITHOUT != tickets._CREATE, "the script changed: update this benchmark"

    request = _request()
    print(
        f"started_at() per request: {_per_call_us(lambda: qrapi.started_at(request), 50_000):.2f} µs"
    )

    redis = aioredis.from_url(url, decode_responses=True)
    mux = Multiplexer(redis)
    box = SecretBox("b" * 48)
    new = tickets.Tickets(redis, box, mux)
    old = tickets.Tickets(redis, box, mux)
    old._create = redis.register_script(WITHOUT)
    origin_fields = qrapi.started_at(request)

    async def round_(t: tickets.Tickets, with_origin: bool) -> float:
        extra = origin_fields if with_origin else {}
        start = time.perf_counter()
        for _ in range(args.n // 50):
            await asyncio.gather(
                *(
                    t.create(pool_id=1, client_id="c", lifetime=60, address="203.0.113.9", **extra)
                    for _ in range(50)
                )
            )
        return (time.perf_counter() - start) / args.n * 1e6

    await round_(new, True)  # warm up: scripts loaded, connections open
    await round_(old, False)
    before, after = [], []
    for _ in range(args.rounds):
        before.append(await round_(old, False))
        after.append(await round_(new, True))
    b, a = statistics.median(before), statistics.median(after)
    print(
        f"Tickets.create, 50 at a time, median of {args.rounds} rounds of {args.n}: "
        f"before {b:.1f} µs, with the origin {a:.1f} µs per ticket ({a - b:+.1f} µs, "
        f"{(a - b) / b * 100:+.1f} %)"
    )
    await mux.aclose()
    await redis.aclose()

    found = tickets.Origin(1011, "ok", CHROME, "14.153.1.2", "shop.example.com", 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = xdb.write(
            Path(tmp) / "ip.xdb", [("14.153.0.0", "14.153.255.255", "中国|广东省|深圳市|电信|CN")]
        )
        origin.locator(str(path)).locate("14.153.1.2")  # loaded once per process
        cached = _per_call_us(
            lambda: origin.describe(found, xdb=str(path), client_name=None), 20_000
        )
        origin.browser_and_os.cache_clear()
        origin.browser_and_os(CHROME)  # the parser's rules compiled (first scan of a process)
        fresh_agents = [f"{CHROME} Build/{i}" for i in range(500)]
        start = time.perf_counter()
        for agent in fresh_agents:
            origin.browser_and_os(agent)
        fresh = (time.perf_counter() - start) / len(fresh_agents) * 1e6
        lookup = _per_call_us(lambda: origin.locator(str(path)).locate("14.153.1.2"), 50_000)
    print(
        f"at scan: describe() {cached:.1f} µs (User-Agent seen before in this process), "
        f"a new User-Agent's parse {fresh:.0f} µs, ip2region lookup {lookup:.1f} µs"
    )


if __name__ == "__main__":
    asyncio.run(main())
