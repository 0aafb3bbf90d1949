"""Everything the benchmarks run against, started and stopped by the suite.

Stores (DATABASE_URL / REDIS_URL, else embedded ones in a temporary directory),
a fresh database (dropped at the end), ``portal migrate``, ``portal
fake-wechat``, ``portal pool create bench``, and ``portal serve`` in
production mode; plus the bare Starlette app for the baseline. Every process
is started by us in its own session and stopped by its own pid (its process
group only if it does not stop in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from portal.wechat.fake import DEMO_APPID, DEMO_SECRET  # the fake's demo mini program

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
LOOPBACK = "127.0.0.1"
POOL_SLUG = "bench"
# The largest QR lifetime a tenant admin may set (sql/0001_init.sql allows 30..600 s):
# 10,000 tickets must stay pending from creation until the last confirm.
BENCH_QR_LIFETIME = 600


class StackError(RuntimeError):
    pass


def raise_nofile(want: int = 65536) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE: the hard limit too if we may, else soft up to hard."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(want, hard) if hard != resource.RLIM_INFINITY else want
    for limits in ((target, target), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"process exited early ({proc.returncode}); see {log}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f}s; see {log}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_get(port: int, host: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A tiny blocking GET (set-up only)."""
    with socket.create_connection((LOOPBACK, port), timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def stop_process(proc: subprocess.Popen | None, timeout: float = 40.0) -> None:
    """SIGTERM the process we started; its whole group (also ours) if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # we started it with start_new_session
        proc.wait(timeout=10)


def portal_cmd() -> list[str]:
    script = Path(sys.executable).with_name("portal")
    return [str(script)] if script.exists() else [sys.executable, "-m", "portal"]


def db_url_with_name(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


class GunicornServer:
    """A gunicorn master we started, and its workers."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def master(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def workers(self) -> list[psutil.Process]:
        return self.master.children()

    def connections_per_worker(self) -> dict[str, int]:
        """Established TCP connections each worker holds on the server port."""
        out = {}
        for w in sorted(self.workers(), key=lambda p: p.pid):
            with contextlib.suppress(psutil.Error):
                out[f"worker {w.pid}"] = sum(
                    1
                    for c in w.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
        return out

    def rss(self) -> dict[str, int]:
        """RSS in bytes: the master, each worker (by pid), and the total."""
        out = {"master": self.master.memory_info().rss}
        for w in self.workers():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[f"worker {w.pid}"] = w.memory_info().rss
        out["total"] = sum(out.values())
        return out

    def wait_ready(self, host: str, path: str, workers: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        ok = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"server exited ({self.proc.returncode}):\n{tail(self.log)}")
            try:
                status, _ = http_get(self.port, host, path)
            except OSError:
                status = 0
            ok = ok + 1 if status == 200 and len(self.workers()) == workers else 0
            if ok >= 10:  # several answers in a row, from whichever worker accepted them
                return
            time.sleep(0.1)
        raise StackError(f"server not ready after {timeout:.0f}s:\n{tail(self.log)}")

    def stop(self) -> None:
        stop_process(self.proc)


class Stack:
    """Use as a context manager; everything started is stopped on exit."""

    def __init__(
        self,
        *,
        workers: int,
        db_pool_max: int,
        verbose: bool = True,
        keep_logs: Path | None = None,
        redis_cluster=None,
    ) -> None:
        self.keep_logs = keep_logs
        # A Redis Cluster to use instead of REDIS_URL (bench_cluster: tests/rediscluster.py)
        self.redis_cluster = redis_cluster
        self.workers = workers
        self.db_pool_max = db_pool_max
        self.verbose = verbose
        self.tmp = Path(tempfile.mkdtemp(prefix="portal-bench-"))
        self.tmp.chmod(0o755)  # pgserver runs PostgreSQL as an unprivileged user
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self._exit = contextlib.ExitStack()
        self.stores = ""
        self.admin_db_url = ""
        self.db_name = ""
        self.db_url = ""
        self.redis_url = ""
        self.env: dict[str, str] = {}
        self.fake: subprocess.Popen | None = None
        self.fake_port = 0
        self.server: GunicornServer | None = None
        self.port = 0
        self.pool: dict = {}
        self.store_pids: dict[str, int | None] = {"postgres": None, "redis": None}

    def say(self, msg: str) -> None:
        if self.verbose:
            with contextlib.suppress(OSError):  # a closed stderr must not stop the teardown
                print(f"[setup] {msg}", file=sys.stderr, flush=True)

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._exit.close()
        finally:
            try:
                if self.keep_logs is not None:
                    shutil.rmtree(self.keep_logs, ignore_errors=True)
                    shutil.copytree(self.logs, self.keep_logs)
                    self.say(f"server logs kept in {self.keep_logs}")
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self) -> None:
        db_url = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        if self.redis_cluster is not None:
            redis_url = self.redis_cluster.url
        if not db_url or not redis_url:
            from portal.stores.embedded import EmbeddedStores

            self.say(
                "starting embedded stores"
                + (" (PostgreSQL)" if not db_url else "")
                + (" (Redis)" if not redis_url else "")
            )
            embedded = self._exit.enter_context(
                EmbeddedStores(self.tmp / "stores", postgres=not db_url, redis=not redis_url)
            )
            db_url = db_url or embedded.database_url
            redis_url = redis_url or embedded.redis_url
        self.stores = ", ".join(
            [
                "PostgreSQL: " + ("DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"),
                "Redis: "
                + (
                    f"a cluster of {len(self.redis_cluster.nodes)} nodes"
                    if self.redis_cluster is not None
                    else "REDIS_URL"
                    if os.environ.get("REDIS_URL")
                    else "embedded"
                ),
            ]
        )
        self.admin_db_url = db_url
        self.redis_url = redis_url
        self.store_pids = {
            "postgres": _postgres_pid(db_url, self.tmp / "stores" / "postgres"),
        }
        if self.redis_cluster is None:
            self.store_pids["redis"] = _redis_pid(
                redis_url, self.tmp / "stores" / "redis" / "redis.pid"
            )
        else:  # every node's CPU is the store's
            for node in self.redis_cluster.nodes:
                self.store_pids[f"redis {node.port}"] = node.proc.pid
        self.db_name = f"portal_bench_{os.getpid()}_{secrets.token_hex(3)}"
        asyncio.run(self._sql(self.admin_db_url, f'CREATE DATABASE "{self.db_name}"'))
        self._exit.callback(self._drop_db)
        self.db_url = db_url_with_name(self.admin_db_url, self.db_name)
        self.say(f"database {self.db_name}")

        self.fake_port = free_port()
        self.port = free_port()
        self.env = {
            **os.environ,
            "PORTAL_ENV": "prod",
            "PORTAL_SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "PORTAL_DATA_DIR": str(self.tmp / "data"),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "WECHAT_API_BASE": f"http://{LOOPBACK}:{self.fake_port}",
            "PORTAL_DEFAULT_MP_APPID": DEMO_APPID,
            "PORTAL_DEFAULT_MP_SECRET": DEMO_SECRET,
            "PORTAL_BASE_URL": f"http://localhost:{self.port}",
            "PORTAL_DB_POOL_MIN": "2",
            "PORTAL_DB_POOL_MAX": str(self.db_pool_max),
            # All the load comes from one address: limits high enough never to
            # trigger, but still counted, so their cost is in the figures.
            "PORTAL_RATE_QR": "1000000000/60",
            "PORTAL_RATE_MP_SESSION": "1000000000/60",
            "PORTAL_RATE_TOKEN": "1000000000/60",
            "PORTAL_RATE_QR_POOL": "1000000000/60",
            "PORTAL_RATE_QR_IMAGE": "1000000000/60",
            "PORTAL_RATE_WXACODE": "1000000000/60",
            "PORTAL_WAITERS_PER_IP": "0",  # the SSE benchmark's 10,000 streams share one
        }
        self.env.pop("PORTAL_ACCESS_LOG", None)
        self.env.pop("PORTAL_MAX_REQUESTS", None)

        self.say("portal migrate")
        self._run_cli("migrate")

        self.say(f"portal fake-wechat on {LOOPBACK}:{self.fake_port}")
        log = self.logs / "fake-wechat.log"
        self.fake = self._spawn(
            [*portal_cmd(), "fake-wechat", "--quiet", "--host", LOOPBACK,
             "--port", str(self.fake_port)],
            log,
        )  # fmt: skip
        self._exit.callback(stop_process, self.fake, 10)
        wait_port(self.fake_port, self.fake, 30, log)

        self.say("portal pool create bench --name Bench")
        self.pool = json.loads(self._run_cli("pool", "create", POOL_SLUG, "--name", "Bench"))
        asyncio.run(
            self._sql(
                self.db_url,
                f"UPDATE pools SET qr_lifetime = {BENCH_QR_LIFETIME} WHERE slug = '{POOL_SLUG}'",
            )
        )

        self.say(f"portal serve --workers {self.workers} --port {self.port} (PORTAL_ENV=prod)")
        log = self.logs / "portal.log"
        proc = self._spawn(
            [*portal_cmd(), "serve", "--host", LOOPBACK, "--workers", str(self.workers),
             "--port", str(self.port)],
            log,
        )  # fmt: skip
        self.server = GunicornServer(proc, self.port, log)
        self._exit.callback(self.server.stop)
        self.server.wait_ready(self.apex_host, "/readyz", self.workers)
        status, _ = http_get(self.port, self.pool_host, "/healthz")
        if status != 200:
            raise StackError(f"pool host answers {status}")

    # -- helpers -------------------------------------------------------------

    @property
    def apex_host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def pool_host(self) -> str:
        return f"{POOL_SLUG}.localhost:{self.port}"

    def _spawn(self, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        out = open(log, "ab")  # the child keeps its own copy
        try:
            return subprocess.Popen(  # noqa: S603 - our own commands
                argv,
                env=env or self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
                cwd=ROOT,
            )
        finally:
            out.close()

    def _run_cli(self, *args: str) -> str:
        r = subprocess.run(  # noqa: S603 - our own commands
            [*portal_cmd(), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )
        if r.returncode != 0:
            raise StackError(f"portal {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    @staticmethod
    async def _sql(url: str, statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def _drop_db(self) -> None:
        self.say(f"dropping database {self.db_name}")
        try:
            asyncio.run(
                self._sql(
                    self.admin_db_url, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'
                )
            )
        except Exception as exc:  # report, keep tearing down
            print(f"warning: could not drop {self.db_name}: {exc}", file=sys.stderr)

    def start_bare(self) -> GunicornServer:
        """The bare Starlette app under gunicorn, configured exactly like the portal."""
        port = free_port()
        log = self.logs / "bare.log"
        proc = self._spawn(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
             "--bind", f"{LOOPBACK}:{port}", "--workers", str(self.workers),
             "--pythonpath", str(BENCH_DIR), "bare_app:app"],
            log,
        )  # fmt: skip
        server = GunicornServer(proc, port, log)
        try:
            server.wait_ready(f"localhost:{port}", "/", self.workers)
        except BaseException:
            server.stop()
            raise
        return server

    def process_groups(self) -> dict[str, list[psutil.Process]]:
        """The processes whose CPU a benchmark reports, by role."""
        groups: dict[str, list[psutil.Process]] = {"gunicorn master": []}
        if self.server is not None:
            groups["gunicorn master"] = [self.server.master]
            for w in sorted(self.server.workers(), key=lambda p: p.pid):
                groups[f"portal worker {w.pid}"] = [w]
        groups["fake wechat"] = [psutil.Process(self.fake.pid)] if self.fake else []
        for store, pid in self.store_pids.items():
            procs = []
            with contextlib.suppress(psutil.Error, TypeError):
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            groups[store] = procs
        return groups


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tcp_listener(port: int) -> int | None:
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return c.pid
    return None


def _unix_listener(path: str) -> int | None:
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections(kind="unix"):
            if c.laddr == path and c.pid:
                return c.pid
    return None


def _postgres_pid(url: str, embedded_dir: Path) -> int | None:
    """The postmaster serving ``url`` (its backends are its children), if we can tell."""
    pid = _read_pid(embedded_dir / "postmaster.pid")
    if pid:
        return pid
    parts = urlsplit(url)
    port = parts.port or 5432
    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    host = query.get("host") or parts.hostname or ""
    if host.startswith("/"):
        return _unix_listener(f"{host}/.s.PGSQL.{port}")
    return _tcp_listener(port)


def _redis_pid(url: str, embedded_pidfile: Path) -> int | None:
    pid = _read_pid(embedded_pidfile)
    if pid:
        return pid
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return _unix_listener(parts.path)
    return _tcp_listener(parts.port or 6379)
