"""Benchmark 7: the portal's OIDC endpoints side by side with oidc-provider.

The peer is ``oidc-provider`` (npm, the reference Node.js OpenID Provider,
version ``PEER_VERSION``), installed by this benchmark into a cache directory
(``$XDG_CACHE_HOME/portal-bench``, else ``~/.cache/portal-bench``) and run by
``bench/peer_oidc.mjs``: node cluster workers as many as the portal's, RS256,
refresh-token rotation, JWT access tokens (so a refresh signs twice on both
sides), every grant and token in the benchmark's PostgreSQL database through
a small adapter (one row per model; the portal stores refresh tokens there).

Each round measures, closed loop over ``connections`` keep-alive connections
for ``seconds`` after a 1 s warm-up, on one side then the other (the order
alternates between rounds): refresh grants (each presenting the newest
refresh token of its connection's user), userinfo, discovery and JWKS. The
figures: requests/s and the server workers' CPU per request (the ratio the
load generator, which shares the machine, distorts least), with "others"
(CPU used meanwhile by processes that are not ours).

Skipped, saying why, where ``node`` or ``npm`` is missing or the install fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import psutil
from bench_token import _login
from loadclient import Connection
from metrics import CpuMeter
from stack import BENCH_DIR, LOOPBACK, Stack, free_port, stop_process, wait_port

PEER_VERSION = "9.13.3"  # oidc-provider
PG_VERSION = "8.23.1"  # node-postgres, the peer's PostgreSQL driver
ENDPOINTS = ("refresh", "userinfo", "discovery", "jwks")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "portal-bench" / f"oidc-provider-{PEER_VERSION}"


def install() -> tuple[Path | None, str]:
    """The directory the peer runs from, or None and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, f"{'node' if not node else 'npm'} is not installed"
    where = cache_dir()
    installed = where / "node_modules" / "oidc-provider" / "package.json"
    try:
        if json.loads(installed.read_text()).get("version") != PEER_VERSION:
            raise FileNotFoundError
    except (OSError, ValueError):
        where.mkdir(parents=True, exist_ok=True)
        print(f"  installing oidc-provider@{PEER_VERSION} into {where} (npm)", flush=True)
        r = subprocess.run(  # noqa: S603 - npm, our arguments
            [npm, "install", "--prefix", str(where), "--no-audit", "--no-fund", "--loglevel=error",
             "--no-save", f"oidc-provider@{PEER_VERSION}", f"pg@{PG_VERSION}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if r.returncode != 0:
            return None, f"npm install failed ({r.returncode}): {r.stderr.strip()[-300:]}"
    # ESM resolves packages from the script's own directory: run a copy there.
    shutil.copyfile(BENCH_DIR / "peer_oidc.mjs", where / "peer_oidc.mjs")
    return where, ""


def _private_jwk() -> str:
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, private=True)
    return json.dumps(
        {**key.as_dict(private=True), "kid": key.thumbprint(), "alg": "RS256", "use": "sig"}
    )


class Peer:
    def __init__(self, stack: Stack, where: Path) -> None:
        self.stack = stack
        self.where = where
        self.port = free_port()
        self.host = f"{LOOPBACK}:{self.port}"
        self.log = stack.logs / "peer.log"
        self.node = shutil.which("node") or "node"
        self.secret = secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            "DATABASE_URL": stack.db_url,
            "PEER_ISSUER": f"http://{self.host}",
            "PEER_PORT": str(self.port),
            "PEER_WORKERS": str(stack.workers),
            "PEER_JWK": _private_jwk(),
            "PEER_SECRET": self.secret,
            "NODE_ENV": "production",
        }
        self.proc: subprocess.Popen | None = None

    def seed(self, n: int) -> dict:
        r = subprocess.run(  # noqa: S603 - node, our script
            [self.node, "peer_oidc.mjs", "seed", str(n)],
            env=self.env, cwd=self.where, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"peer seed failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def start(self) -> None:
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - node, our script
                [self.node, "peer_oidc.mjs", "serve"], env=self.env, cwd=self.where,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        finally:
            out.close()
        wait_port(self.port, self.proc, 30, self.log)
        deadline = time.monotonic() + 30
        while len(self.workers()) < self.stack.workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children() if self.proc else []
        except psutil.Error:
            return []

    def stop(self) -> None:
        stop_process(self.proc)

    def groups(self) -> dict[str, list[psutil.Process]]:
        g = {
            k: v
            for k, v in self.stack.process_groups().items()
            if not k.startswith("portal worker")
        }
        g["gunicorn master"] = []  # idle meanwhile; its CPU is not the peer's
        g["peer primary"] = [psutil.Process(self.proc.pid)] if self.proc else []
        for w in self.workers():
            g[f"peer worker {w.pid}"] = [w]
        return g


Step = Callable[[Connection, int], Awaitable[bool]]


async def _closed_loop(port: int, host: str, connections: int, seconds: float, step: Step) -> dict:
    stop_at = time.monotonic() + seconds
    count = 0
    errors: Counter[str] = Counter()

    async def loop(k: int) -> None:
        nonlocal count
        conn = Connection(LOOPBACK, port, host, timeout=10)
        try:
            while time.monotonic() < stop_at:
                try:
                    ok = await step(conn, k)
                except Exception as exc:
                    errors[type(exc).__name__] += 1
                    return
                count += 1
                if not ok:
                    errors["unexpected answer"] += 1
                    return  # a refresh chain is broken: this connection stops
        finally:
            conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(loop(k) for k in range(connections)))
    return {"requests": count, "seconds": time.monotonic() - t0, "errors": dict(errors)}


class Side:
    """What one provider is asked: its host, paths, credentials and tokens."""

    def __init__(self, name: str, port: int, host: str, paths: dict[str, str], auth: str,
                 refresh: list[str], access: list[str], groups) -> None:  # fmt: skip
        self.name, self.port, self.host, self.paths, self.auth = name, port, host, paths, auth
        self.refresh, self.access, self.groups = refresh, access, groups

    def step(self, endpoint: str) -> Step:
        path = self.paths[endpoint]
        if endpoint == "refresh":
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": self.auth,
            }

            async def refresh(conn: Connection, k: int) -> bool:
                body = urlencode({"grant_type": "refresh_token", "refresh_token": self.refresh[k]})
                r = await conn.request("POST", path, body=body.encode(), headers=headers)
                if r.status != 200:
                    return False
                answer = r.json()
                self.refresh[k] = answer["refresh_token"]
                return bool(answer.get("id_token")) and answer["access_token"].count(".") == 2

            return refresh
        if endpoint == "userinfo":

            async def userinfo(conn: Connection, k: int) -> bool:
                headers = {"Authorization": f"Bearer {self.access[k % len(self.access)]}"}
                return (await conn.request("GET", path, headers=headers)).status == 200

            return userinfo

        async def get(conn: Connection, k: int) -> bool:
            return (await conn.request("GET", path)).status == 200

        return get


def _measure(side: Side, endpoint: str, connections: int, seconds: float) -> dict:
    from common import run_async

    step = side.step(endpoint)
    run_async(_closed_loop(side.port, side.host, connections, 1.0, step))  # warm-up
    meter = CpuMeter(side.groups)
    meter.start()
    r = run_async(_closed_loop(side.port, side.host, connections, seconds, step))
    cpu = meter.stop()
    workers = sum(v for k, v in cpu.items() if k.startswith("peer worker ")) or cpu.get(
        "portal workers", 0.0
    )
    n = max(r["requests"], 1)
    return {
        "rps": round(r["requests"] / r["seconds"], 1),
        "requests": r["requests"],
        "errors": r["errors"],
        "worker_cpu_us": round(workers * r["seconds"] / n * 1e6, 1),
        "postgres_cpu_us": round(cpu.get("postgres", 0.0) * r["seconds"] / n * 1e6, 1),
        "workers_cores": round(workers, 2),
        "load_generator_cores": cpu.get("load generator"),
        "others_cores": cpu.get("other processes"),
    }


async def _portal_tokens(stack: Stack, users: int) -> tuple[list[str], list[str]]:
    client_id, secret = stack.pool["default_client_id"], stack.pool["default_client_secret"]
    auth = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    refresh = list(await asyncio.gather(*(_login(stack, 1000 + k) for k in range(users))))
    access = []
    conn = Connection(LOOPBACK, stack.port, stack.pool_host)
    try:
        for k in range(users):  # one refresh each: an access token for userinfo
            body = urlencode({"grant_type": "refresh_token", "refresh_token": refresh[k]}).encode()
            r = await conn.request("POST", "/oidc/token", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})  # fmt: skip
            answer = r.json()
            refresh[k], access = answer["refresh_token"], [*access, answer["access_token"]]
    finally:
        conn.close()
    return refresh, access


def run(stack: Stack, *, connections: int, seconds: float, rounds: int) -> dict:
    print(
        f"OIDC vs oidc-provider {PEER_VERSION}: {rounds} rounds, {connections} connections, "
        f"{seconds:.0f}s per endpoint and side after 1s",
        flush=True,
    )
    where, why = install()
    if where is None:
        print(f"  skipped: {why}", flush=True)
        return {"skipped": why}
    from common import run_async

    peer = Peer(stack, where)
    seeded = peer.seed(connections)
    peer.start()
    try:
        refresh, access = run_async(_portal_tokens(stack, connections))
        client_id, secret = stack.pool["default_client_id"], stack.pool["default_client_secret"]
        portal = Side(
            "portal", stack.port, stack.pool_host,
            {"refresh": "/oidc/token", "userinfo": "/oidc/userinfo",
             "discovery": "/.well-known/openid-configuration", "jwks": "/oidc/jwks"},
            "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode(),
            refresh, access, stack.process_groups,
        )  # fmt: skip
        other = Side(
            "peer", peer.port, peer.host,
            {"refresh": "/token", "userinfo": "/me",
             "discovery": "/.well-known/openid-configuration", "jwks": "/jwks"},
            "Basic " + base64.b64encode(f"bench-jwt:{peer.secret}".encode()).decode(),
            list(seeded["refresh"]), list(seeded["access"]), peer.groups,
        )  # fmt: skip
        figures: dict = {e: {"portal": [], "peer": []} for e in ENDPOINTS}
        for n in range(rounds):
            order = (portal, other) if n % 2 == 0 else (other, portal)
            for endpoint in ENDPOINTS:
                for side in order:
                    m = _measure(side, endpoint, connections, seconds)
                    figures[endpoint][side.name].append(m)
                    err = f", errors {m['errors']}" if m["errors"] else ""
                    print(
                        f"  round {n + 1} {endpoint:9} {side.name:6}: {m['rps']:8.0f} req/s, "
                        f"{m['worker_cpu_us']:7.1f} µs worker CPU/request, others "
                        f"{m['others_cores']}{err}",
                        flush=True,
                    )
    finally:
        peer.stop()
    summary = {}
    for endpoint, sides in figures.items():
        mine, theirs = sides["portal"], sides["peer"]
        rps = statistics.median(m["rps"] for m in mine), statistics.median(m["rps"] for m in theirs)
        cpu = (
            statistics.median(m["worker_cpu_us"] for m in mine),
            statistics.median(m["worker_cpu_us"] for m in theirs),
        )
        summary[endpoint] = {
            "portal_rps": rps[0],
            "peer_rps": rps[1],
            "rps_ratio": round(rps[0] / rps[1], 2) if rps[1] else None,
            "portal_worker_cpu_us": cpu[0],
            "peer_worker_cpu_us": cpu[1],
            # > 1: the portal's workers spend less CPU per request than the peer's.
            "cpu_ratio": round(cpu[1] / cpu[0], 2) if cpu[0] else None,
            "errors": sum(sum(m["errors"].values()) for m in mine + theirs),
        }
        s = summary[endpoint]
        print(
            f"  {endpoint:9}: portal/peer {s['rps_ratio']} by req/s "
            f"({s['portal_rps']:.0f} / {s['peer_rps']:.0f}), {s['cpu_ratio']} by worker CPU "
            f"per request ({s['portal_worker_cpu_us']:.0f} / {s['peer_worker_cpu_us']:.0f} µs)",
            flush=True,
        )
    return {"peer": f"oidc-provider {PEER_VERSION}", "connections": connections,
            "seconds": seconds, "rounds": figures, "summary": summary}  # fmt: skip
