"""Benchmark 7: QR image requests per second per core (issue 16, finding 4).

``GET /api/qrcode/{t}.png`` (and ``.svg``) needs only the public ticket id. The
figure is the worker CPU per request (and so requests per second per core,
1 s / that CPU), closed loop over ``--qrimage-tickets`` tickets, each image
asked for many times, after a warm-up run that is not counted: what a browser
reloading its image, or an attacker replaying known ticket ids, costs. Before
issue 16 every request rendered the QR; since, the first renders it (once per
ticket and format, over all workers) and the rest are served from Redis. A
status read (``GET /api/qrcode/{t}/status``) over the same tickets is measured
the same way for comparison.

It sets up its own stack (bench/stack.py, as bench/run.py does) and prints
the figures, then one JSON line:

    .venv/bin/python bench/bench_qrimage.py [--seconds 10] [--tickets 200]

Against another checkout of the code (the server runs whatever ``portal``
PYTHONPATH gives it): ``PYTHONPATH=<checkout> .venv/bin/python bench/bench_qrimage.py``
(bench/README.md, "QR images").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from bench_rps import _Runner
from common import bounded, create_ticket, run_async
from loadclient import ConnectionPool
from stack import LOOPBACK, Stack


async def _tickets(stack: Stack, n: int) -> list[tuple[str, str]]:
    pool = ConnectionPool(LOOPBACK, stack.port, stack.pool_host, 16)
    try:
        return await bounded(n, lambda i: create_ticket(pool), 16)
    finally:
        pool.close()


def run(stack: Stack, *, connections: int, seconds: float, warmup: float, tickets: int,
        tool: str = "auto", threads: int = 1) -> dict:  # fmt: skip
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    print(
        f"QR images: {tool}, {connections} connections, {tickets} tickets, {seconds:.0f}s each "
        f"after a {warmup:.0f}s warm-up",
        flush=True,
    )
    runner = _Runner(stack, tool, connections, seconds, warmup, threads)
    made = run_async(_tickets(stack, tickets))
    results: dict = {"tool": tool, "connections": connections, "seconds": seconds,
                     "tickets": tickets}  # fmt: skip
    for key, name, paths in (
        ("png", "GET /api/qrcode/{t}.png", [f"/api/qrcode/{t}.png" for t, _ in made]),
        ("svg", "GET /api/qrcode/{t}.svg", [f"/api/qrcode/{t}.svg" for t, _ in made]),
        (
            "status",
            "GET /api/qrcode/{t}/status",
            [f"/api/qrcode/{t}/status?secret={s}" for t, s in made],
        ),
    ):
        r = runner.measure(
            name, stack.server, stack.pool_host, "GET", paths[0], None, 200,
            stack.process_groups, paths=paths,
        )  # fmt: skip
        cpu_us = r["worker_cpu_us_per_request"]
        r["rps_per_core"] = round(1e6 / cpu_us) if cpu_us else None
        print(f"    {name}: {r['rps_per_core']} requests/s per worker core", flush=True)
        results[key] = r
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run")
    p.add_argument("--connections", type=int, default=16, help="concurrency (default 16)")
    p.add_argument("--tickets", type=int, default=200, help="tickets cycled over (default 200)")
    p.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    args = p.parse_args(argv)
    with Stack(workers=args.workers, db_pool_max=10, keep_logs=None) as stack:
        results = run(stack, connections=args.connections, seconds=args.seconds,
                      warmup=args.warmup, tickets=args.tickets)  # fmt: skip
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
