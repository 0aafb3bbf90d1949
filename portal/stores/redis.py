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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


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


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelURL:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise BadRedisURL(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(DEFAULT_SENTINEL_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRedisURL(f"sentinel address {item!r} is not HOST[:PORT]")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise BadRedisURL("give the master's service name (and optionally the db): /SERVICE[/DB]")
    service = unquote(path[0])
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise BadRedisURL(f"database {path[1]!r} is not a number")
        db = int(path[1])
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
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
    """A client owning its connection pool (``aclose()`` closes both)."""
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
