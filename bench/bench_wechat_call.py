#!/usr/bin/env python3
"""What one WeChat API call costs the calling process: CPU per call.

    python bench/bench_wechat_call.py                 # every variant, alternating rounds
    python bench/bench_wechat_call.py --variant client --calls 300   # one (e.g. under callgrind)

The fake WeChat runs in its own process (``portal fake-wechat``) so that only the
client's side is counted. Each variant makes the same call, ``jscode2session``
(a GET whose query carries the AppSecret, answered with JSON labelled text/plain),
one after the other over one keep-alive connection, and parses the answer:

- ``httpx``: ``httpx.AsyncClient.request`` as the WeChat client used it until
  issue 23 (the stack it was profiled with: httpx → httpcore → anyio);
- ``httpcore``: httpcore's ``AsyncConnectionPool`` directly (httpx's own pool,
  without httpx's request/response models, hooks, cookies and redirects);
- ``aiohttp``: ``aiohttp.ClientSession`` with a pooled ``TCPConnector``;
- ``client``: :meth:`portal.wechat.client.WeChatClient.code2session` as it is now
  (retries, redaction, metrics, error mapping included);
- ``client-httpx``: the same given an ``httpx.AsyncClient`` (``http=``), as the
  client called WeChat before issue 23.

CPU is ``time.process_time()`` of this process per call, the best and the median
of ``--rounds`` rounds, the variants' order rotating each round. For instruction
counts (repeatable on a loaded machine), run one variant under callgrind twice,
with ``--calls N`` and ``--calls 0``, and divide the difference by N (see
bench/README.md, issue 23).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal.wechat.fake import DEMO_APPID, DEMO_SECRET  # noqa: E402

VARIANTS = ("httpx", "httpcore", "aiohttp", "client", "client-httpx")
PATH = "/sns/jscode2session"


def _params(n: int) -> dict[str, str]:
    # "user.anything" is a code the fake accepts once for "user": a new one each call.
    return {
        "appid": DEMO_APPID,
        "secret": DEMO_SECRET,
        "js_code": f"bench.{os.getpid()}.{n}.{time.monotonic_ns()}",
        "grant_type": "authorization_code",
    }


async def _variant(name: str, base: str):
    """(call(n) coroutine function, aclose) for one variant."""
    url = base + PATH
    if name == "httpx":
        import httpx

        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))

        async def call(n: int) -> dict:
            response = await http.request("GET", url, params=_params(n))
            return json.loads(response.content)

        return call, http.aclose
    if name == "httpcore":
        import httpcore

        pool = httpcore.AsyncConnectionPool(max_connections=100, max_keepalive_connections=20)
        timeouts = {"timeout": {"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 5.0}}

        async def call(n: int) -> dict:
            target = f"{url}?{urlencode(_params(n))}"
            response = await pool.request("GET", target, extensions=timeouts)
            return json.loads(response.content)

        return call, pool.aclose
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=5.0, connect=2.0),
        )

        async def call(n: int) -> dict:
            async with session.get(url, params=_params(n)) as response:
                return json.loads(await response.read())

        return call, session.close
    if name in ("client", "client-httpx"):
        import httpx
        from redis.asyncio import Redis

        from portal.wechat.client import WeChatClient

        redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        http = None
        if name == "client-httpx":
            http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        client = WeChatClient(base, redis, http)

        async def call(n: int) -> dict:
            p = _params(n)
            session = await client.code2session(p["appid"], p["secret"], p["js_code"])
            return {"openid": session.openid}

        async def aclose() -> None:
            await client.aclose()
            if http is not None:
                await http.aclose()
            await redis.aclose()

        return call, aclose
    raise ValueError(name)


async def measure(base: str, variants: list[str], calls: int, rounds: int, warmup: int) -> dict:
    made = {name: await _variant(name, base) for name in variants}
    for call, _ in made.values():  # open the connection, warm the caches
        for n in range(warmup):
            assert "openid" in await call(-1 - n)
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name in order:
            call = made[name][0]
            started = time.process_time()
            for n in range(calls):
                await call(n)
            per_call[name].append((time.process_time() - started) / calls * 1e6)
    for _, aclose in made.values():
        await aclose()
    return {
        name: {"best_us": min(v), "median_us": statistics.median(v), "rounds": v}
        for name, v in per_call.items()
    }


def start_fake() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = ["fake-wechat", "--quiet", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "portal.cli", *fake],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the fake WeChat did not start") from None
            time.sleep(0.05)


def run(base: str | None = None, *, calls: int = 1000, rounds: int = 6, warmup: int = 50,
        variants: list[str] | None = None) -> dict:  # fmt: skip
    """The figures for bench/run.py (``--only wechat``): starts its own fake unless
    ``base`` is given."""
    variants = variants or [v for v in VARIANTS if _available(v)]
    proc = None
    if base is None:
        proc, base = start_fake()
    try:
        return asyncio.run(measure(base, variants, calls, rounds, warmup))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def _available(name: str) -> bool:
    if name == "aiohttp":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            return False
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    p.add_argument("--calls", type=int, default=1000, help="calls per round (default 1000)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--base", help="a running fake WeChat's URL (default: start one)")
    args = p.parse_args()
    if args.calls == 0:  # the callgrind baseline: set up and warm up only
        args.rounds, args.calls = 0, 1
    result = run(args.base, calls=args.calls, rounds=args.rounds, warmup=args.warmup,
                 variants=args.variant)  # fmt: skip
    for name, r in result.items():
        if r["rounds"]:
            print(f"{name:9} best {r['best_us']:7.1f} µs  median {r['median_us']:7.1f} µs CPU/call")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
