"""A real Redis Cluster for tests and benchmarks: three masters with a replica
each (``redis-server --cluster-enabled yes``, joined by ``redis-cli --cluster
create``), on free ports in a directory of its own, stopped at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis.asyncio as aioredis

from tests.support import RedisProcess

MISSING = (
    "Redis Cluster tests need redis-server and redis-cli (Redis 7) on PATH"
    if not (shutil.which("redis-server") and shutil.which("redis-cli"))
    else ""
)


class ClusterNodeProcess(RedisProcess):
    """One node: the machine's redis-server (Redis 7: sharded pub/sub), in its own
    session (a test's signals do not reach it), killed without a goodbye on demand."""

    def __init__(self, workdir: Path, index: int, node_timeout_ms: int) -> None:
        node = workdir / f"node{index}"
        args = ["--appendonly", "no", "--cluster-enabled", "yes"]
        args += ["--cluster-config-file", str(node / "nodes.conf")]
        args += ["--cluster-node-timeout", str(node_timeout_ms)]
        # Failover follows the one replica however far it lags (tests kill masters).
        args += ["--cluster-replica-validity-factor", "0"]
        super().__init__(workdir, f"node{index}", args, executable="redis-server")

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a master lost without a goodbye."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.alive:
            super().stop()


class Cluster:
    """``masters`` masters with ``replicas`` replicas each."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        self.workdir = workdir
        self.nodes = [
            ClusterNodeProcess(workdir, i, node_timeout_ms) for i in range(masters * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        return f"redis+cluster://{seeds}"

    async def start(self) -> Cluster:
        for node in self.nodes:
            await node.ready()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        proc = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "create", *addrs,
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.decode()[-2000:]}")
        await self.wait_healthy()
        return self

    async def wait_healthy(self, timeout: float = 30) -> None:
        """Every live node says the cluster is ok, every slot is served, and every
        master's replica is in sync."""
        deadline = time.monotonic() + timeout
        while True:
            if await self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy")
            await asyncio.sleep(0.1)

    async def _healthy(self) -> bool:
        try:
            for node in self.nodes:
                if not node.alive:
                    continue
                async with aioredis.Redis(port=node.port, decode_responses=True) as r:
                    info = await r.execute_command("CLUSTER", "INFO")
                    if "cluster_state:ok" not in info:
                        return False
                    repl = await r.info("replication")
                    if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                        return False
            return True
        except (OSError, aioredis.RedisError):
            return False

    async def master_of(self, key: str) -> ClusterNodeProcess:
        """The node that serves ``key``'s slot now."""
        for node in self.nodes:
            if not node.alive:
                continue
            async with aioredis.Redis(port=node.port, decode_responses=True) as r:
                slot = await r.execute_command("CLUSTER", "KEYSLOT", key)
                for start, end, master, *_ in await r.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no live node")

    async def masters(self) -> list[ClusterNodeProcess]:
        out = []
        for node in self.nodes:
            if node.alive:
                async with aioredis.Redis(port=node.port) as r:
                    if (await r.info("replication"))["role"] == "master":
                        out.append(node)
        return out

    async def flushall(self) -> None:
        for node in await self.masters():
            async with aioredis.Redis(port=node.port) as r:
                await r.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def running(masters: int = 3) -> Iterator[Cluster]:
    """A cluster for the whole of a synchronous scope (a session fixture)."""
    workdir = Path(tempfile.mkdtemp(prefix="portal-cluster-"))
    cluster = Cluster(workdir, masters=masters)
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def store_urls(db_url: str) -> Iterator[tuple[str, str]]:
    """The suite's stores with Redis a cluster of its own (``PORTAL_TEST_REDIS=cluster``,
    ``make test-cluster``): ``DATABASE_URL``'s PostgreSQL, or an embedded one."""
    from portal.stores.embedded import EmbeddedStores, remove_data_dir

    if MISSING:
        raise RuntimeError(MISSING)
    with running() as cluster:
        if db_url:
            yield db_url, cluster.url
            return
        data_dir = Path(tempfile.mkdtemp(prefix="portal-test-"))
        try:
            with EmbeddedStores(data_dir, postgres=True, redis=False) as embedded:
                yield embedded.database_url, cluster.url
        finally:
            remove_data_dir(data_dir)


async def flushed_client(url: str):
    """A test's client of the suite's Redis (one server or a cluster), emptied."""
    from portal.stores import redis as redisconn

    if redisconn.is_cluster_url(url):
        client = redisconn.connect(url, max_connections=8, decode_responses=True)
        await client.flushall(target_nodes=client.PRIMARIES)
        return client
    client = aioredis.from_url(url, decode_responses=True)
    await client.flushdb()
    return client


async def move_slot(cluster: Cluster, slot: int, to: ClusterNodeProcess) -> None:
    """Migrate one hash slot, its keys included, to the master ``to`` (what
    ``redis-cli --cluster reshard`` does for each slot it moves)."""

    async def node_id(node: ClusterNodeProcess) -> str:
        async with aioredis.Redis(port=node.port, decode_responses=True) as r:
            return await r.execute_command("CLUSTER", "MYID")

    src = None
    for node in await cluster.masters():
        async with aioredis.Redis(port=node.port, decode_responses=True) as r:
            if await r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) or any(
                start <= slot <= end and int(m[1]) == node.port
                for start, end, m, *_ in await r.execute_command("CLUSTER", "SLOTS")
            ):
                src = node
                break
    assert src is not None and src is not to
    src_id, dst_id = await node_id(src), await node_id(to)
    async with (
        aioredis.Redis(port=src.port, decode_responses=True) as s,
        aioredis.Redis(port=to.port, decode_responses=True) as d,
    ):
        await d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := await s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await s.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        # The new owner first, then the old one, then the others (as redis-cli does).
        others = [n for n in await cluster.masters() if n is not to and n is not src]
        for node in (to, src, *others):
            async with aioredis.Redis(port=node.port) as r:
                await r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
