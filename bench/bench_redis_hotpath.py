"""The hot path's Redis cost on one server and on a Redis Cluster, in one process.

    .venv/bin/python bench/bench_redis_hotpath.py [--n 20000] [--rounds 6] [--concurrency 64]

What the HTTP benchmarks cannot show on a shared machine (their figures move
by ±20% with other processes' load): the CPU this process spends per ticket
operation through the shared connection(s) — ``Multiplexer`` on one
redis-server, ``ClusterMultiplexer`` on a cluster of three masters with a
replica each — and the operations per second. Each round creates ``n``
tickets (``Tickets.create``: the creation script with its rate limits), reads
each once from Redis (``Tickets.state``: the status script), and runs ``n/8``
whole confirmations (scan, claim, confirm, exchange: on the cluster the confirm
and the exchange wait for a replica, ``WAIT 1``), ``concurrency``
at a time. Rounds alternate between the two; the medians are compared. CPU is
this process's own (``time.process_time``), so other processes' load changes
it little; the operations per second also include Redis's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _round(tickets, n: int, concurrency: int) -> dict[str, tuple[float, float]]:
    """{operation: (µs of CPU per op, ops per second)}."""
    out = {}
    sem = asyncio.Semaphore(concurrency)

    async def timed(name: str, coros) -> list:
        async def one(c):
            async with sem:
                return await c

        c0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(c) for c in coros))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        out[name] = (cpu / len(results) * 1e6, len(results) / wall)
        return results

    made = await timed(
        "create",
        (tickets.create(pool_id=1, client_id="bench", lifetime=120, address=f"10.0.{i % 250}.1")
         for i in range(n)),
    )  # fmt: skip
    await timed("status", (tickets.state(t.ticket) for t in made))

    async def login(t, k: int) -> None:
        await tickets.scan(t.ticket, "wxapp", f"openid{k}")
        claim = await tickets.claim(t.ticket, "wxapp", f"openid{k}")
        token = claim[0] if isinstance(claim, tuple) else claim
        await tickets.confirm(t.ticket, "wxapp", f"openid{k}", claim=token, user_id="u",
                              auth_time=1, nickname="", avatar_url="")  # fmt: skip
        await tickets.exchange(t.ticket, t.secret)

    await timed("login (4 scripts)", (login(t, k) for k, t in enumerate(made[: n // 8])))
    return out


async def _make(url: str):
    from portal.scan.tickets import Tickets
    from portal.stores import redis as redisconn
    from portal.stores.crypto import SecretBox
    from portal.stores.redismux import multiplexer

    redis = redisconn.connect(url, max_connections=8, decode_responses=True)
    mux = multiplexer(redis)
    return redis, mux, Tickets(redis, SecretBox("b" * 48), mux)


async def main(n: int, rounds: int, concurrency: int) -> None:
    from tests import rediscluster
    from tests.support import RedisProcess

    work = Path(tempfile.mkdtemp(prefix="portal-hotpath-"))
    single = RedisProcess(work, "single", [])
    cluster = rediscluster.Cluster(work / "cluster")
    try:
        await single.ready()
        await cluster.start()
        sides = {"single": await _make(single.url), "cluster": await _make(cluster.url)}
        figures: dict[str, dict[str, list]] = {s: {} for s in sides}
        for rnd in range(rounds):
            order = list(sides) if rnd % 2 == 0 else list(sides)[::-1]
            for side in order:
                result = await _round(sides[side][2], n, concurrency)
                for op, value in result.items():
                    figures[side].setdefault(op, []).append(value)
                print(f"round {rnd + 1} {side}: " + ", ".join(
                    f"{op} {cpu:.1f} µs {rate:,.0f}/s" for op, (cpu, rate) in result.items()),
                    flush=True)  # fmt: skip
        print()
        print(f"{'operation':<20} {'single µs CPU':>14} {'cluster µs CPU':>15} {'ratio':>6}"
              f" {'single ops/s':>13} {'cluster ops/s':>14} {'ratio':>6}")  # fmt: skip
        for op in figures["single"]:
            s_cpu = statistics.median(v[0] for v in figures["single"][op])
            c_cpu = statistics.median(v[0] for v in figures["cluster"][op])
            s_rate = statistics.median(v[1] for v in figures["single"][op])
            c_rate = statistics.median(v[1] for v in figures["cluster"][op])
            print(f"{op:<20} {s_cpu:>14.1f} {c_cpu:>15.1f} {c_cpu / s_cpu:>6.2f}"
                  f" {s_rate:>13,.0f} {c_rate:>14,.0f} {c_rate / s_rate:>6.2f}")  # fmt: skip
        print(f"medians of {rounds} alternating rounds; n={n}, concurrency {concurrency}")
        for redis, mux, _ in sides.values():
            await mux.aclose()
            await redis.aclose()
    finally:
        single.stop()
        cluster.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="tickets per round (default 20000)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    p.add_argument("--concurrency", type=int, default=64, help="operations at once (default 64)")
    a = p.parse_args()
    asyncio.run(main(a.n, a.rounds, a.concurrency))
