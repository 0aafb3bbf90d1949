"""Benchmark 2: requests/s of ticket creation and status reads, against a bare app.

Three closed-loop runs at the same concurrency and duration, each after a
warm-up run that is not counted:

  (a) GET /  on bench/bare_app.py (one JSONResponse route) under gunicorn with
      the portal's worker class, worker count and gunicorn.conf.py;
  (b) POST /api/qrcode  on the pool host (body ``{}``);
  (c) GET /api/qrcode/{t}/status?secret=…  (no wait) cycling over 1,000 tickets.

The ratio is rps / bare rps. wrk drives the load when it is installed (far
less CPU per request than any Python client); else the bench's own client.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import bounded, create_ticket, run_async
from loadclient import Connection, ConnectionPool
from metrics import CpuMeter, format_cpu, percentile
from stack import LOOPBACK, Stack

STATUS_TICKETS = 1000

_LUA_COMMON = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_static(method: str, path: str, host: str, body: str | None) -> str:
    lines = [
        f'wrk.method = "{method}"',
        f"wrk.path = {json.dumps(path)}",
        f'wrk.headers["Host"] = "{host}"',
    ]
    if body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = {json.dumps(body)}")
    return "\n".join(lines) + "\n" + _LUA_COMMON


def _lua_paths(host: str, paths_file: Path) -> str:
    return (
        f"""
local reqs = {{}}
local i = 0
init = function(args)
  for line in io.lines("{paths_file}") do
    reqs[#reqs + 1] = wrk.format("GET", line, {{["Host"] = "{host}"}})
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""
        + _LUA_COMMON
    )


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _wrk(
    port: int, script: Path, connections: int, seconds: float, threads: int, spread=None
) -> dict:
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(script), f"http://{LOOPBACK}:{port}/",
    ]  # fmt: skip
    cpu0 = _children_cpu()
    proc = subprocess.Popen(  # noqa: S603 - wrk, our arguments
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = {}
    if spread is not None:
        time.sleep(min(1.0, seconds / 2))
        seen = spread()
    stdout, stderr = proc.communicate(timeout=seconds + 60)
    r = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    wrk_cpu = _children_cpu() - cpu0
    m = re.search(r"^BENCHJSON (.*)$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    out = json.loads(m.group(1))
    seconds_run = out["duration_us"] / 1e6
    errors = {k: out[k] for k in ("connect", "read", "write", "status", "timeout") if out[k]}
    return {
        "rps": round(out["requests"] / seconds_run, 1),
        "requests": out["requests"],
        "seconds": round(seconds_run, 2),
        "wrk_cpu_cores": round(wrk_cpu / seconds_run, 2),
        "connections_per_worker": seen,
        "errors": errors,
        "latency_ms": {k.replace("_us", "_ms"): round(out[k] / 1000, 2)
                       for k in ("p50_us", "p90_us", "p99_us", "max_us")},
    }  # fmt: skip


async def _python_load(
    port: int, host: str, requests: list[tuple[str, str, bytes | None]], connections: int,
    seconds: float, expect: int, spread=None,
) -> dict:  # fmt: skip
    """Closed loop: ``connections`` connections, each sending its next request on each answer."""
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    count = 0

    async def loop(k: int) -> None:
        nonlocal count
        conn = Connection(LOOPBACK, port, host, timeout=10)
        j = k
        headers = {"Content-Type": "application/json"}
        try:
            while time.monotonic() < stop_at:
                method, path, body = requests[j % len(requests)]
                j += connections
                t = time.monotonic()
                try:
                    r = await conn.request(method, path, body=body, headers=headers)
                except Exception as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.monotonic() - t)
                count += 1
                if r.status != expect:
                    errors[f"HTTP {r.status}"] += 1
        finally:
            conn.close()

    seen: dict = {}

    async def sample() -> None:
        await asyncio.sleep(min(1.0, seconds / 2))
        if spread is not None:
            seen.update(spread())

    t0 = time.monotonic()
    await asyncio.gather(sample(), *(loop(k) for k in range(connections)))
    dt = time.monotonic() - t0
    latencies.sort()
    return {
        "rps": round(count / dt, 1),
        "requests": count,
        "seconds": round(dt, 2),
        "errors": dict(errors),
        "connections_per_worker": seen,
        "latency_ms": {
            f"p{p}_ms": round((percentile(latencies, p) or 0) * 1000, 2) for p in (50, 90, 99)
        }
        | {"max_ms": round((latencies[-1] if latencies else 0) * 1000, 2)},
    }


class _Runner:
    def __init__(self, stack: Stack, tool: str, connections: int, seconds: float, warmup: float,
                 threads: int) -> None:  # fmt: skip
        self.stack = stack
        self.tool = tool
        self.connections = connections
        self.seconds = seconds
        self.warmup = warmup
        self.threads = threads
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-wrk-", dir=stack.tmp))

    def measure(self, name: str, server, host: str, method: str, path: str,
                body: bytes | None, expect: int, groups, paths: list[str] | None = None) -> dict:  # fmt: skip
        port = server.port
        if self.tool == "wrk":
            script = self.tmp / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".lua")
            if paths:
                paths_file = script.with_suffix(".paths")
                paths_file.write_text("\n".join(paths) + "\n")
                script.write_text(_lua_paths(host, paths_file))
            else:
                script.write_text(_lua_static(method, path, host, body.decode() if body else None))
            _wrk(port, script, self.connections, self.warmup, self.threads)
            meter = CpuMeter(groups)
            meter.start()
            result = _wrk(port, script, self.connections, self.seconds, self.threads,
                          server.connections_per_worker)  # fmt: skip
        else:
            reqs = [(method, p, body) for p in (paths or [path])]
            run_async(_python_load(port, host, reqs, self.connections, self.warmup, expect))
            meter = CpuMeter(groups)
            meter.start()
            result = run_async(
                _python_load(port, host, reqs, self.connections, self.seconds, expect,
                             server.connections_per_worker)
            )  # fmt: skip
        result["cpu_cores"] = meter.stop()
        cpu = result["cpu_cores"]
        workers = cpu.get("bare workers", cpu.get("portal workers", 0.0))
        # Worker CPU per request: less sensitive than req/s to other load on the machine.
        result["worker_cpu_us_per_request"] = (
            round(workers * result["seconds"] / result["requests"] * 1e6, 1)
            if result["requests"]
            else None
        )
        if "wrk_cpu_cores" in result:
            cpu = result["cpu_cores"]
            cpu["wrk"] = result.pop("wrk_cpu_cores")
            cpu["total"] = round(cpu["total"] + cpu["wrk"], 2)
            cpu["other processes"] = round(max(0.0, cpu["other processes"] - cpu["wrk"]), 2)
        err = f", errors {result['errors']}" if result["errors"] else ""
        print(
            f"  {name}: {result['rps']:.0f} req/s, "
            f"{result['worker_cpu_us_per_request']} µs worker CPU/request, "
            f"p50 {result['latency_ms']['p50_ms']} ms, "
            f"p99 {result['latency_ms']['p99_ms']} ms{err}",
            flush=True,
        )
        print(
            f"    CPU (cores): {format_cpu(result['cpu_cores'])}; connections per worker "
            f"{result.get('connections_per_worker')}",
            flush=True,
        )
        return result


async def _status_tickets(stack: Stack, n: int) -> list[str]:
    pool = ConnectionPool(LOOPBACK, stack.port, stack.pool_host, 32)
    try:
        made = await bounded(n, lambda i: create_ticket(pool), 32)
    finally:
        pool.close()
    return [f"/api/qrcode/{t}/status?secret={s}" for t, s in made]


def run(stack: Stack, *, connections: int, seconds: float, warmup: float, tool: str = "auto",
        threads: int = 1) -> dict:  # fmt: skip
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    print(
        f"Requests/s: {tool}, {connections} connections, {seconds:.0f}s each after a "
        f"{warmup:.0f}s warm-up",
        flush=True,
    )
    runner = _Runner(stack, tool, connections, seconds, warmup, threads)
    results: dict = {"tool": tool, "connections": connections, "seconds": seconds,
                     "wrk_threads": threads if tool == "wrk" else None}  # fmt: skip

    bare = stack.start_bare()
    try:

        def bare_groups():
            g = stack.process_groups()
            g["bare workers"] = bare.workers()
            g["bare master"] = [bare.master]
            return g

        results["bare_get"] = runner.measure(
            "bare GET /", bare, f"localhost:{bare.port}", "GET", "/", None, 200, bare_groups
        )
    finally:
        bare.stop()

    results["create_ticket"] = runner.measure(
        "POST /api/qrcode", stack.server, stack.pool_host, "POST", "/api/qrcode", b"{}", 201,
        stack.process_groups,
    )  # fmt: skip
    paths = run_async(_status_tickets(stack, STATUS_TICKETS))
    results["status_read"] = runner.measure(
        "GET /api/qrcode/{t}/status", stack.server, stack.pool_host, "GET", paths[0], None, 200,
        stack.process_groups, paths=paths,
    )  # fmt: skip
    bare_rps = results["bare_get"]["rps"]
    bare_cpu = results["bare_get"]["worker_cpu_us_per_request"]
    for key in ("create_ticket", "status_read"):
        r = results[key]
        r["ratio_to_bare"] = round(r["rps"] / bare_rps, 3) if bare_rps else None
        r["cpu_ratio_to_bare"] = (
            round(bare_cpu / r["worker_cpu_us_per_request"], 3)
            if bare_cpu and r["worker_cpu_us_per_request"]
            else None
        )
    return results
