"""The benchmarks on a Redis Cluster, beside one Redis server (issue 22).

    python bench/run.py --redis both --only sse,rps,logins      # alternating rounds
    python bench/run.py --redis cluster --only logins            # the cluster alone

A Redis Cluster of three masters with a replica each is started here (the
machine's redis-server, ``tests/rediscluster.py``) in a temporary directory.
With ``--redis both`` the selected benchmarks run in ``--redis-rounds``
alternating rounds, single server then cluster, then cluster then single
server (each on a fresh stack: its own database, fake WeChat and ``portal
serve``), so that a machine getting busier or quieter meanwhile does not
favour one side. The table gives each round's figure, the medians, and the
cluster's median against the single server's: the goal is at most 10% worse
(throughputs and ratios ≥ 0.9 of the single server's, latencies ≤ 1.1 of it).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path

from metrics import wait_quiet
from stack import Stack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (benchmark, figure, how to read it from the benchmark's results, higher is better)
FIGURES = [
    ("rps", "POST /api/qrcode / bare", lambda r: r["create_ticket"]["ratio_to_bare"], True),
    ("rps", "GET …/status / bare", lambda r: r["status_read"]["ratio_to_bare"], True),
    ("rps", "POST /api/qrcode, worker CPU µs/req",
     lambda r: r["create_ticket"]["worker_cpu_us_per_request"], False),
    ("rps", "GET …/status, worker CPU µs/req",
     lambda r: r["status_read"]["worker_cpu_us_per_request"], False),
    ("logins", "logins per second", lambda r: r["logins_per_s"], True),
    ("logins", "errors", lambda r: r["errors"], None),
    ("sse", "confirm sent → event, p50 ms", lambda r: r["event_after_send_ms"]["p50_ms"], False),
    ("sse", "confirm sent → event, p99 ms", lambda r: r["event_after_send_ms"]["p99_ms"], False),
    ("sse", "lost events", lambda r: r["lost_events"], None),
    ("sse", "server RSS per waiter, kB", lambda r: r["kb_per_waiter"], None),
]  # fmt: skip
WORSE = 0.10


def main(args, run_benchmark, nofile) -> int:
    from tests import rediscluster

    if rediscluster.MISSING:
        print(f"error: {rediscluster.MISSING}", file=sys.stderr)
        return 2
    modes = ["single", "cluster"] if args.redis == "both" else ["cluster"]
    rounds = args.redis_rounds if args.redis == "both" else 1
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    others: dict[str, list[float]] = {m: [] for m in modes}
    failed = False
    t0 = time.monotonic()
    try:
        with rediscluster.running() as cluster:
            for rnd in range(rounds):
                order = modes if rnd % 2 == 0 else modes[::-1]
                for mode in order:
                    print(f"\n=== round {rnd + 1}/{rounds}: Redis {mode} ===", flush=True)
                    with Stack(
                        workers=args.workers,
                        db_pool_max=args.db_pool_max,
                        keep_logs=args.keep_logs,
                        redis_cluster=cluster if mode == "cluster" else None,
                    ) as stack:
                        results: dict = {}
                        for name in args.selected:
                            if args.wait_quiet > 0:
                                quiet = wait_quiet(stack.process_groups, args.wait_quiet)
                                others[mode].append(quiet["other_cores"] or 0.0)
                            try:
                                results[name] = run_benchmark(stack, name, args)
                            except Exception as exc:
                                failed = True
                                traceback.print_exc()
                                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                        runs[mode].append(results)
                    if mode == "cluster":
                        # The next stack starts on an empty cluster, as on an empty server.
                        import asyncio

                        asyncio.run(cluster.flushall())
    except KeyboardInterrupt:
        print("\ninterrupted: everything was stopped", file=sys.stderr)
        return 130
    rows = comparison(runs, args.selected)
    print_table(rows, modes, rounds, others)
    out = {
        "duration_s": round(time.monotonic() - t0, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "other_cores_before_each": others,
        "table": rows,
        "results": runs,
    }
    path = (
        args.output.with_name("cluster.json") if args.output.name == "latest.json" else args.output
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {path}")
    return 1 if failed else 0


def _value(results: dict, bench: str, read):
    r = results.get(bench)
    if not r or "error" in r:
        return None
    try:
        return read(r)
    except (KeyError, TypeError):
        return None


def comparison(runs: dict[str, list[dict]], selected: list[str]) -> list[dict]:
    rows = []
    for bench, figure, read, higher in FIGURES:
        if bench not in selected:
            continue
        row = {"benchmark": bench, "figure": figure}
        medians = {}
        for mode, results in runs.items():
            values = [_value(r, bench, read) for r in results]
            row[mode] = values
            known = [v for v in values if v is not None]
            medians[mode] = statistics.median(known) if known else None
            row[f"{mode}_median"] = medians[mode]
        single, clustered = medians.get("single"), medians.get("cluster")
        if single and clustered is not None and higher is not None:
            ratio = clustered / single
            row["cluster/single"] = round(ratio, 3)
            row["within 10%"] = ratio >= 1 - WORSE if higher else ratio <= 1 + WORSE
        elif higher is None and clustered is not None:
            row["cluster/single"] = None
            row["within 10%"] = None if single is None else clustered <= max(single, 0) or None
        rows.append(row)
    return rows


def print_table(rows: list[dict], modes: list[str], rounds: int, others) -> None:
    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    head = ["figure", *(f"{m} (rounds)" for m in modes), *(f"{m} median" for m in modes)]
    if len(modes) == 2:
        head += ["cluster/single", "≤10% worse?"]
    cells = []
    for r in rows:
        line = [r["figure"]]
        line += [", ".join(fmt(v) for v in r[m]) for m in modes]
        line += [fmt(r[f"{m}_median"]) for m in modes]
        if len(modes) == 2:
            ok = r.get("within 10%")
            line += [fmt(r.get("cluster/single")), {True: "yes", False: "NO", None: ""}[ok]]
        cells.append(line)
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(str(x).ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    busy = {m: max(v) if v else 0.0 for m, v in others.items()}
    print(
        f"{rounds} alternating round(s); other processes' cores before each benchmark, at most: "
        + ", ".join(f"{m} {v:.2f}" for m, v in busy.items())
    )
