"""``portal dev`` as a user runs it: a process of its own (in its own process
group, as a terminal's foreground job is), on free ports, its output in a file.

Used by tests/test_dev_command.py and tests/test_readme_quickstart.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from tests.support import free_port

# What a user's shell would not have set: the command must make its own.
_CLEARED = ("DATABASE_URL", "REDIS_URL", "WECHAT_API_BASE", "PORTAL_", "CI")


def dev_env(data_dir: Path | None, **values: str | None) -> dict[str, str]:
    """A user's environment (none of the portal's settings), with ``values``;
    ``data_dir`` None: the default, ``.portal`` in the command's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED)}
    if data_dir is not None:
        env["PORTAL_DATA_DIR"] = str(data_dir)
    env.update({k: v for k, v in values.items() if v is not None})
    return env


@contextlib.asynccontextmanager
async def scratch_database(stores, prefix: str = "portal_dev") -> AsyncIterator[str]:
    """A new, empty database on the suite's PostgreSQL server (``portal dev``
    migrates it and makes its demo pool there, apart from the suite's own)."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(stores.admin_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield stores.scratch_database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class DevCommand:
    """``python -m portal dev`` (or ``argv``), started in ``cwd`` with ``env``."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        port: int | None = None,
        wechat_port: int | None = None,
        cwd: Path | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.wechat_port = wechat_port or free_port()
        self.log = log
        argv = argv or [sys.executable, "-m", "portal", "dev"]
        argv += ["--port", str(self.port), "--wechat-port", str(self.wechat_port)]
        env = {**env, "PORTAL_BASE_URL": f"http://localhost:{self.port}"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def banner(self, label: str) -> str:
        """A value of the start-up banner (``  label:   value (note)``)."""
        match = re.search(rf"^  {re.escape(label)}:\s+(\S+)", self.output, re.M)
        assert match, f"no {label!r} in the banner:\n{self.output}"
        return match[1]

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(
                        f"http://127.0.0.1:{self.port}/readyz",
                        headers={"host": f"localhost:{self.port}"},
                    )
                    if r.status_code == 200:
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"portal dev did not start:\n{self.output}")
                await asyncio.sleep(0.2)

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"portal dev did not stop on Ctrl-C:\n{self.output}") from None

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"portal dev did not exit:\n{self.output}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
