"""The Redis client of a process, from ``REDIS_URL``: one server, or a master
found through Redis Sentinel.

Plain URLs are redis-py's own (``redis://``, ``rediss://``, ``unix://``).
For Sentinel::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTIONS]

- the hosts are the sentinels (port 26379 when left out), ``SERVICE`` the
  master's name in their configuration, ``DB`` the database number (0);
- the user and password are the master's; ``sentinel_password`` (and
  ``sentinel_username``) in the query authenticate to the sentinels;
- ``ssl=true`` in the query connects to the master over TLS.

After a failover the sentinels name a new master; connections to the old one
are dropped and the next command (and the pub/sub hub, which re-subscribes by
itself) connects to the new one.

For a Redis Cluster (docs/deploy.md, "Redis Cluster")::

    redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][?ssl=true]

- the hosts are seed nodes (port 6379 when left out): one is enough, the
  others are tried when it does not answer; the client learns every node and
  slot from them and follows the cluster's changes (failovers, resharding);
- a cluster has one database: no ``/DB``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PORT = 6379


class BadRedisURL(ValueError):
    pass


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_kwargs: dict = field(default_factory=dict)
    ssl: bool = False


@dataclass(frozen=True)
class ClusterURL:
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def is_cluster(client: object) -> bool:
    """Whether a client from ``connect`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def _hosts(hostlist: str, default_port: int, what: str) -> list[tuple[str, int]]:
    hosts = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRedisURL(f"{what} address {item!r} is not HOST[:PORT]")
        hosts.append((host, int(port)))
    return hosts


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, _, pw = userinfo.partition(":")
    return unquote(user) or None, unquote(pw) or None


def parse_cluster_url(url: str) -> ClusterURL:
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        raise BadRedisURL(f"not a {CLUSTER_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    nodes = _hosts(hostlist, DEFAULT_PORT, "cluster node")
    if parts.path.strip("/"):
        raise BadRedisURL("a Redis Cluster has one database: remove the /DB from the URL")
    username, password = _credentials(userinfo)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    ssl = query.get("ssl", "").lower() in ("1", "true", "yes")
    return ClusterURL(nodes, username, password, ssl)


def parse_sentinel_url(url: str) -> SentinelURL:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise BadRedisURL(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = _hosts(hostlist, DEFAULT_SENTINEL_PORT, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise BadRedisURL("give the master's service name (and optionally the db): /SERVICE[/DB]")
    service = unquote(path[0])
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise BadRedisURL(f"database {path[1]!r} is not a number")
        db = int(path[1])
    username, password = _credentials(userinfo)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sentinel_kwargs = {}
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"]
    if "sentinel_username" in query:
        sentinel_kwargs["username"] = query["sentinel_username"]
    ssl = query.get("ssl", "").lower() in ("1", "true", "yes")
    return SentinelURL(sentinels, service, db, username, password, sentinel_kwargs, ssl)


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections follow the current master) with the blocking
    pool's behaviour when all connections are busy: wait, don't fail."""


class _SentinelRedis(aioredis.Redis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:  # and the connections to the sentinels themselves
            await self.connection_pool.sentinel_manager.aclose()


def connect(url: str, *, max_connections: int, timeout: float = 5, **options) -> aioredis.Redis:
    """A client owning its connection pool (``aclose()`` closes both); for a
    ``redis+cluster://`` URL a ``RedisCluster``, with ``max_connections`` per node."""
    if is_cluster_url(url):
        return connect_cluster(url, max_connections=max_connections, timeout=timeout, **options)
    if not is_sentinel(url):
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **options
        )
        return aioredis.Redis.from_pool(pool)
    cfg = parse_sentinel_url(url)
    sentinel_kwargs = {
        "socket_connect_timeout": options.get("socket_connect_timeout", 5),
        "socket_timeout": 5,
        **cfg.sentinel_kwargs,
    }
    sentinel = Sentinel(cfg.sentinels, sentinel_kwargs=sentinel_kwargs)
    master_options = dict(options, db=cfg.db, username=cfg.username, password=cfg.password)
    if cfg.ssl:
        master_options["ssl"] = True
    client = sentinel.master_for(
        cfg.service,
        redis_class=_SentinelRedis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout,
        **master_options,
    )
    return client  # owns its pool (master_for uses from_pool)


class _Cluster(RedisCluster):
    """The portal never lists keys, but whoever does (an operator's script, a test)
    asks every master, not one node."""

    async def keys(self, pattern="*", **kwargs):
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return await super().keys(pattern, **kwargs)


def connect_cluster(
    url: str, *, max_connections: int, timeout: float = 5, **options
) -> RedisCluster:
    cfg = parse_cluster_url(url)
    options.pop("health_check_interval", None)  # the cluster client checks its nodes itself
    if cfg.ssl:
        options["ssl"] = True
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cfg.nodes],
        username=cfg.username,
        password=cfg.password,
        max_connections=max_connections,
        # A node that does not answer (failing over) is a 503 for this request, soon,
        # not a request held for the whole failover: one more try after the slot map
        # is read again (it may name the promoted replica), then the next request.
        retry=Retry(NoBackoff(), 1),
        socket_timeout=timeout,
        **options,
    )
