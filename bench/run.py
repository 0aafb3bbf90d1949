#!/usr/bin/env python3
"""Run the portal's benchmark suite and print one table.

    python bench/run.py                 # everything (about 5 minutes)
    python bench/run.py --quick         # small sizes: a smoke run in under a minute
    python bench/run.py --only sse      # one benchmark (sse, rps, logins, token, soak, signin, peer, wechat; comma-separated)

It sets up everything itself (stores, a fresh database, migrations, the fake
WeChat, a pool, ``portal serve`` in production mode) and tears it all down at
the end, on Ctrl-C too. Results also go to bench/results/latest.json.
See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench_logins  # noqa: E402
import bench_peer  # noqa: E402
import bench_rps  # noqa: E402
import bench_signin  # noqa: E402
import bench_soak  # noqa: E402
import bench_sse  # noqa: E402
import bench_token  # noqa: E402
import bench_wechat_call  # noqa: E402
import psutil  # noqa: E402
from common import run_async  # noqa: E402
from metrics import wait_quiet  # noqa: E402
from stack import LOOPBACK, Stack, raise_nofile  # noqa: E402

BENCHMARKS = ("sse", "rps", "logins", "token", "soak", "signin", "peer", "wechat")

GOALS = {
    "sse_p50": 10.0,  # ms, confirm sent → event received
    "sse_p99": 50.0,
    "sse_kb": 25.0,  # kB (1000 bytes) of server RSS per waiter
    "ratio": 0.4,
    "logins": 300.0,  # per second
    # Soak: RSS growth over the second half of the run, MB per hour (flat memory).
    "soak_mb_per_hour": 10.0,
    # Sign-in storm: POST /api/qrcode p99 (ms) while the console is stormed.
    "signin_qrcode_p99": bench_signin.GOAL_P99_MS,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only these benchmarks: sse, rps, logins, token, soak, signin, peer, wechat (comma-separated, repeatable)",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and short runs (smoke test, < 1 minute)"
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument(
        "--db-pool-max", type=int, default=20, help="PORTAL_DB_POOL_MAX per worker (default 20)"
    )
    g = p.add_argument_group("sse: concurrent waiters")
    g.add_argument("--waiters", type=int, help="SSE streams held open (default 10000; quick 1000)")
    g.add_argument(
        "--confirm-rate", type=float, help="confirms per second (default 300; quick 200)"
    )
    g.add_argument(
        "--scan-rate",
        type=float,
        default=500.0,
        help="scans per second before the confirms (not timed; default 500)",
    )
    g.add_argument(
        "--open-concurrency", type=int, default=50, help="streams being opened at once (default 50)"
    )
    g.add_argument(
        "--confirm-connections",
        type=int,
        default=32,
        help="connections the confirms are sent over (default 32)",
    )
    g = p.add_argument_group("rps: ticket creation and status reads vs a bare app")
    g.add_argument(
        "--rps-seconds", type=float, help="measured seconds per run (default 12; quick 3)"
    )
    g.add_argument("--rps-warmup", type=float, help="warm-up seconds per run (default 3; quick 1)")
    g.add_argument("--rps-connections", type=int, default=64, help="concurrency (default 64)")
    g.add_argument(
        "--rps-tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load tool (default: wrk when installed)",
    )
    g.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    g = p.add_argument_group("logins: whole scan logins per second")
    g.add_argument("--login-users", type=int, default=32, help="concurrent users (default 32)")
    g.add_argument("--login-seconds", type=float, help="measured seconds (default 20; quick 5)")
    g.add_argument("--login-warmup", type=float, help="warm-up seconds (default 3; quick 1)")
    g = p.add_argument_group("soak: mixed traffic for a bounded time, memory sampled")
    g.add_argument("--soak-seconds", type=float, help="measured seconds (default 600; quick 30)")
    g.add_argument(
        "--soak-rate", type=float, default=40.0, help="visitors arriving per second (default 40)"
    )
    g.add_argument(
        "--soak-interval", type=float, help="seconds between RSS samples (default 30; quick 5)"
    )
    g = p.add_argument_group("signin: a console sign-in storm beside POST /api/qrcode")
    g.add_argument(
        "--signin-storm",
        type=int,
        help="parallel wrong passwords per storm (default 200; quick 60)",
    )
    g.add_argument(
        "--signin-interval",
        type=float,
        default=0.02,
        help="seconds between the browser's POST /api/qrcode (default 0.02)",
    )
    g = p.add_argument_group("peer: the OIDC endpoints side by side with oidc-provider (npm)")
    g.add_argument(
        "--peer-seconds", type=float, help="seconds per endpoint and side (default 3; quick 2)"
    )
    g.add_argument("--peer-rounds", type=int, help="alternating rounds (default 2; quick 1)")
    g.add_argument("--peer-connections", type=int, default=32, help="concurrency (default 32)")
    g = p.add_argument_group("redis: on a Redis Cluster, beside one server (bench_cluster.py)")
    g.add_argument(
        "--redis",
        choices=("single", "cluster", "both"),
        default="single",
        help="single: REDIS_URL or an embedded server (default); cluster: a Redis Cluster\n"
        "of 3 masters and 3 replicas started here; both: alternating rounds of each,\n"
        "one comparison table (e.g. --redis both --only sse,rps,logins)",
    )
    g.add_argument(
        "--redis-rounds",
        type=int,
        default=2,
        help="alternating rounds with --redis both (default 2)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        metavar="S",
        help="before each benchmark, wait up to S seconds for other processes on the\n"
        "machine to go quiet (< 0.15 cores); 0: don't wait (default 60)",
    )
    p.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="copy the servers' logs (portal, fake WeChat, bare app) to DIR at the end",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=BENCH_DIR / "results" / "latest.json",
        help="JSON results file (default bench/results/latest.json)",
    )
    args = p.parse_args(argv)  # fmt: skip

    only = [b.strip() for item in args.only for b in item.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    args.selected = [b for b in BENCHMARKS if not only or b in only]
    q = args.quick

    def default(name: str, full, quick) -> None:
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)

    default("waiters", 10000, 1000)
    default("confirm_rate", 300.0, 200.0)
    default("rps_seconds", 12.0, 3.0)
    default("rps_warmup", 3.0, 1.0)
    default("login_seconds", 20.0, 5.0)
    default("login_warmup", 3.0, 1.0)
    default("soak_seconds", 600.0, 30.0)
    default("soak_interval", 30.0, 5.0)
    default("signin_storm", 200, 60)
    default("peer_seconds", 3.0, 2.0)
    default("peer_rounds", 2, 1)
    return args


def code_version() -> dict:
    """The commit benchmarked and whether the tree had changes (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            r = subprocess.run(  # noqa: S603
                ["git", *args],  # noqa: S607
                cwd=BENCH_DIR.parent,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    server = ("portal/", "sql/", "deploy/", "pyproject.toml")
    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:].startswith(server)
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_server_changes": changed}


def machine(stack: Stack | None, nofile: tuple[int, int]) -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "stores": stack.stores if stack else None,
        "rlimit_nofile": list(nofile),
    }


def _met(value, goal, *, at_most: bool) -> bool | None:
    if value is None:
        return None
    return value <= goal if at_most else value >= goal


def table_rows(results: dict, args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []

    def row(bench, figure, value, unit="", goal="", met=None):
        rows.append({"benchmark": bench, "figure": figure, "value": value, "unit": unit,
                     "goal": goal, "met": met})  # fmt: skip

    def cpu_rows(bench, cpu: dict, when: str) -> None:
        workers = cpu.get("bare workers", cpu.get("portal workers", 0.0))
        label = f"CPU, cores ({when})" if when else "CPU, cores"
        row(bench, label,
            f"workers {workers:.2f}, all ours {cpu['total']:.2f}, "
            f"others {cpu['other processes']:.2f}")  # fmt: skip

    if "sse" in results:
        r = results["sse"]
        b = f"1. SSE waiters ({r['waiters'] if 'waiters' in r else args.waiters})"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            s, a = r["event_after_send_ms"], r["event_after_response_ms"]
            row(
                b,
                "waiters connected",
                f"{r['connected']}/{r['waiters']}",
                "",
                f"{r['waiters']}",
                r["connected"] == r["waiters"],
            )
            row(
                b,
                "confirm sent → event, p50",
                s["p50_ms"],
                "ms",
                f"≤ {GOALS['sse_p50']:g} ms",
                _met(s["p50_ms"], GOALS["sse_p50"], at_most=True),
            )
            row(b, "confirm sent → event, p90", s["p90_ms"], "ms")
            row(
                b,
                "confirm sent → event, p99",
                s["p99_ms"],
                "ms",
                f"≤ {GOALS['sse_p99']:g} ms",
                _met(s["p99_ms"], GOALS["sse_p99"], at_most=True),
            )
            row(b, "confirm sent → event, max", s["max_ms"], "ms")
            row(b, "confirm response → event, p50", a["p50_ms"], "ms")
            row(b, "confirm response → event, p99", a["p99_ms"], "ms")
            row(b, "confirm response time, p50", r["confirm_response_ms"]["p50_ms"], "ms")
            row(
                b,
                "confirms sent at",
                r["confirm_rate_achieved"],
                "/s",
                f"target {r['confirm_rate_target']:g}/s",
            )
            row(
                b,
                "confirm errors",
                sum(r["confirm_errors"].values()),
                "",
                "0",
                not r["confirm_errors"],
            )
            row(b, "lost events", r["lost_events"], "", "0", r["lost_events"] == 0)
            row(
                b,
                "server RSS per waiter",
                r["kb_per_waiter"],
                "kB",
                f"≤ {GOALS['sse_kb']:g} kB",
                _met(r["kb_per_waiter"], GOALS["sse_kb"], at_most=True),
            )
            row(
                b,
                "server RSS with waiters",
                round(r["rss_with_waiters_bytes"]["total"] / 1e6, 1),
                "MB",
            )
            cpu_rows(b, r["cpu_cores_during_confirms"], "during confirms")
    if "rps" in results:
        r = results["rps"]
        b = f"2. Requests/s ({r.get('tool', '?')}, c={r.get('connections', '?')})"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            row(b, "bare Starlette GET", r["bare_get"]["rps"], "req/s")
            row(b, "bare: worker CPU per request", r["bare_get"]["worker_cpu_us_per_request"], "µs")
            for key, label in (("create_ticket", "POST /api/qrcode"),
                               ("status_read", "GET …/status")):  # fmt: skip
                x = r[key]
                row(b, label, x["rps"], "req/s")
                row(
                    b,
                    f"{label} / bare",
                    x["ratio_to_bare"],
                    "",
                    f"≥ {GOALS['ratio']:g}",
                    _met(x["ratio_to_bare"], GOALS["ratio"], at_most=False),
                )
                row(
                    b,
                    f"{label}: worker CPU per request",
                    x["worker_cpu_us_per_request"],
                    "µs",
                    f"(bare/this: {x['cpu_ratio_to_bare']})",
                )
            errs = sum(
                sum(r[k]["errors"].values()) for k in ("bare_get", "create_ticket", "status_read")
            )
            row(b, "errors (non-2xx, socket)", errs, "", "0", errs == 0)
            for key, label in (("bare_get", "bare"), ("create_ticket", "create"),
                               ("status_read", "status")):  # fmt: skip
                cpu_rows(b, r[key]["cpu_cores"], label)
    if "logins" in results:
        r = results["logins"]
        b = f"3. Scan logins ({r.get('users', args.login_users)} users)"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            row(
                b,
                "logins per second",
                r["logins_per_s"],
                "/s",
                f"≥ {GOALS['logins']:g}/s",
                _met(r["logins_per_s"], GOALS["logins"], at_most=False),
            )
            row(b, "whole login, p50", r["login_ms"]["p50_ms"], "ms")
            row(b, "whole login, p99", r["login_ms"]["p99_ms"], "ms")
            row(b, "errors", r["errors"], "", "0", r["errors"] == 0)
            per = r["cpu_ms_per_login"]
            row(b, "CPU per login, ms", f"workers {per['portal workers']}, postgres "
                f"{per['postgres']}, all ours {per['all ours']}")  # fmt: skip
            cpu_rows(b, r["cpu_cores"], "")
    if "token" in results:
        r = results["token"]
        b = "4. Token endpoint (refresh grants)"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            for alg in ("RS256", "ES256"):
                x = r[alg]
                row(b, f"{alg}: grants per second", x["grants_per_s"], "/s")
                row(
                    b,
                    f"{alg}: grant p50 / p99",
                    f"{x['latency_ms']['p50_ms']} / {x['latency_ms']['p99_ms']}",
                    "ms",
                )
                row(b, f"{alg}: errors", x["errors"], "", "0", x["errors"] == 0)
                cpu_rows(b, x["cpu_cores"], alg)
    if "peer" in results:
        r = results["peer"]
        b = "7. OIDC vs oidc-provider (portal/peer)"
        if "error" in r or "skipped" in r:
            row(b, "skipped" if "skipped" in r else "error", r.get("skipped") or r["error"],
                met=None if "skipped" in r else False)  # fmt: skip
        else:
            for endpoint, s in r["summary"].items():
                row(b, f"{endpoint}: req/s ratio", f"{s['rps_ratio']} ({s['portal_rps']:.0f} / "
                    f"{s['peer_rps']:.0f} /s)", "", "≥ 1.2", _met(s["rps_ratio"], 1.2, at_most=False))  # fmt: skip
                row(b, f"{endpoint}: worker CPU ratio", f"{s['cpu_ratio']} ({s['portal_worker_cpu_us']:.0f}"
                    f" / {s['peer_worker_cpu_us']:.0f} µs per request)", "", "≥ 1.2",
                    _met(s["cpu_ratio"], 1.2, at_most=False))  # fmt: skip
                row(b, f"{endpoint}: errors", s["errors"], "", "0", s["errors"] == 0)
    if "wechat" in results:
        r = results["wechat"]
        b = "9. One WeChat call (code2session), client CPU"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            for variant, x in r.items():
                if not isinstance(x, dict) or "best_us" not in x:
                    continue  # machine_before
                row(b, variant, f"best {x['best_us']:.0f}, median {x['median_us']:.0f}",
                    "µs per call")  # fmt: skip
    if "soak" in results:
        r = results["soak"]
        b = f"5. Soak ({r.get('seconds', args.soak_seconds):.0f} s mixed traffic)"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            row(b, "visitors", f"{r['visitors']} ({r['visitors_per_s']:g}/s)")
            row(b, "outcomes", ", ".join(f"{k} {v}" for k, v in r["outcomes"].items()))
            row(b, "errors", r["errors"], "", "0", r["errors"] == 0)
            row(b, "server RSS start → end (max)",
                f"{r['rss_start_mb']} → {r['rss_end_mb']} ({r['rss_max_mb']})", "MB")  # fmt: skip
            growth = r["growth_mb_per_hour_second_half"]
            row(
                b,
                "RSS growth, second half",
                growth,
                "MB/h",
                f"≤ {GOALS['soak_mb_per_hour']:g} MB/h",
                _met(growth, GOALS["soak_mb_per_hour"], at_most=True),
            )
            cpu_rows(b, r["cpu_cores"], "")
    if "signin" in results:
        r = results["signin"]
        b = f"6. Sign-in storm ({r.get('storm', args.signin_storm)} wrong passwords)"
        if "error" in r:
            row(b, "error", r["error"], met=False)
        else:
            goal = GOALS["signin_qrcode_p99"]
            for key, label in (("baseline", "no storm"), ("one_address", "one address"),
                               ("many_addresses", "many addresses")):  # fmt: skip
                x = r[key]
                q = x["qrcode_ms"]
                during = key != "baseline"
                row(b, f"{label}: POST /api/qrcode p50 / p99 / max",
                    f"{q['p50_ms']} / {q['p99_ms']} / {q['max_ms']}", "ms",
                    f"p99 < {goal:g} ms" if during else "",
                    _met(q["p99_ms"], goal, at_most=True) if during else None)  # fmt: skip
                if during:
                    statuses = ", ".join(f"{k}: {v}" for k, v in x["storm_statuses"].items())
                    row(b, f"{label}: storm answers ({x['storm_seconds']} s)", statuses, "",
                        "no 5xx", x["storm_5xx_or_no_answer"] == 0)  # fmt: skip
                errs = x["qrcode_errors"]
                row(b, f"{label}: POST /api/qrcode errors", errs, "", "0", errs == 0)
                cpu_rows(b, x["cpu_cores"], label)
    return rows


def print_table(rows: list[dict], info: dict, code: dict) -> None:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    cells = [
        (r["benchmark"], r["figure"], f"{fmt(r['value'])} {r['unit']}".strip(), r["goal"],
         {True: "yes", False: "NO", None: ""}[r["met"]])
        for r in rows
    ]  # fmt: skip
    head = ("benchmark", "figure", "measured", "goal", "met?")
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    last = None
    for c in cells:
        shown = list(c)
        if c[0] == last:
            shown[0] = ""
        last = c[0]
        print("  ".join(str(x).ljust(w) for x, w in zip(shown, widths, strict=True)).rstrip())
    print(line)
    print(
        f"machine: {info['cpu_model']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['memory_gib']} GiB; Python {info['python']}; {info['stores']}; "
        f"RLIMIT_NOFILE {info['rlimit_nofile'][0]}"
    )
    changed = code["uncommitted_server_changes"]
    print(
        f"code: {code['commit'] or '?'}"
        + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")
    )


def run_benchmark(stack: Stack, name: str, args: argparse.Namespace) -> dict:
    """One benchmark on a running stack: its results."""
    if name == "sse":
        return run_async(
            bench_sse.run(
                stack,
                waiters=args.waiters,
                rate=args.confirm_rate,
                scan_rate=args.scan_rate,
                confirm_connections=args.confirm_connections,
                open_concurrency=args.open_concurrency,
            )
        )
    elif name == "rps":
        return bench_rps.run(
            stack,
            connections=args.rps_connections,
            seconds=args.rps_seconds,
            warmup=args.rps_warmup,
            tool=args.rps_tool,
            threads=args.wrk_threads,
        )
    elif name == "logins":
        return run_async(
            bench_logins.run(
                stack,
                users=args.login_users,
                seconds=args.login_seconds,
                warmup=args.login_warmup,
            )
        )
    elif name == "soak":
        return run_async(
            bench_soak.run(
                stack,
                seconds=args.soak_seconds,
                rate=args.soak_rate,
                interval=args.soak_interval,
            )
        )
    elif name == "signin":
        return run_async(
            bench_signin.run(
                stack,
                storm=args.signin_storm,
                interval=args.signin_interval,
                baseline=3.0 if args.quick else 10.0,
            )
        )
    elif name == "peer":
        return bench_peer.run(
            stack,
            connections=args.peer_connections,
            seconds=args.peer_seconds,
            rounds=args.peer_rounds,
        )
    elif name == "wechat":
        base = f"http://{LOOPBACK}:{stack.fake_port}"
        quick = args.quick
        return bench_wechat_call.run(base, calls=300 if quick else 1000, rounds=2 if quick else 6)
    elif name == "token":
        return run_async(
            bench_token.run(
                stack,
                users=args.login_users,
                seconds=args.login_seconds,
                warmup=args.login_warmup,
            )
        )
    raise ValueError(f"unknown benchmark {name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    if nofile[0] < 30000:
        print(
            f"note: RLIMIT_NOFILE is {nofile[0]} (hard {nofile[1]}), below 30000; "
            "enough for 10,000 waiters (one process holds them), not for much more",
            file=sys.stderr,
        )
    needed = args.waiters + 1000 if "sse" in args.selected else 2000
    if nofile[0] < needed:
        print(f"error: RLIMIT_NOFILE {nofile[0]} < {needed} needed", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the run (and tear everything down) even when we were
    # started with SIGINT ignored, as background jobs of a script are.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.redis != "single":
        import bench_cluster

        return bench_cluster.main(args, run_benchmark, nofile)
    started = time.time()
    t0 = time.monotonic()
    results: dict = {}
    failed = False
    info = machine(None, nofile)
    code = code_version()  # what the server will load (it reads the code when it starts)
    try:
        with Stack(
            workers=args.workers, db_pool_max=args.db_pool_max, keep_logs=args.keep_logs
        ) as stack:
            info = machine(stack, nofile)
            for name in args.selected:
                print(flush=True)
                quiet = {"other_cores": None, "waited_s": 0, "quiet": None}
                if args.wait_quiet > 0:
                    quiet = wait_quiet(stack.process_groups, args.wait_quiet)
                    if not quiet["quiet"]:
                        print(
                            f"warning: other processes use {quiet['other_cores']:.2f} cores "
                            f"after {quiet['waited_s']:.0f}s of waiting; the figures will suffer",
                            file=sys.stderr,
                        )
                try:
                    results[name] = run_benchmark(stack, name, args)
                except Exception as exc:
                    failed = True
                    traceback.print_exc()
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                results[name]["machine_before"] = quiet
                if stack.server is not None and stack.server.proc.poll() is not None:
                    raise RuntimeError(f"the portal server died; see its log:\n{stack.server.log}")
            print(flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything was stopped", file=sys.stderr)
        return 130

    rows = table_rows(results, args)
    code_after = code_version()
    if code_after != code:
        code["changed_during_run"] = code_after
        print("warning: the code changed during the run (see code in the JSON)", file=sys.stderr)
    print_table(rows, info, code)
    out = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": info,
        "code": code,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "goals": GOALS,
        "table": rows,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {args.output}")
    # A missed goal is a result, not a failure: the exit status says only whether all ran.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
