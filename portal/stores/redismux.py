"""One Redis connection per process that every request shares, commands pipelined.

The ticket scripts are the product's hot path: every QR code shown, every
status read, scan, confirm and exchange is one of them. Through redis-py's
pooled client each costs about 150 µs of Python per call (taking a connection
from the pool, its retry and timeout wrappers, packing and parsing one reply at
a time) — more than everything else such a request does. Here the commands of
all concurrent requests go out on one connection, written together once per
turn of the event loop, and the replies are parsed by hiredis as they stream
back in order: about 15 µs a command, and under load one system call serves
many requests.

redis-py still opens the connection (TLS, Unix sockets, AUTH, SELECT and
whatever else the ``REDIS_URL`` asks for, exactly as the rest of the app
connects); this takes over the connection's byte streams once it is ready.

Failures stay clear and bounded: a command without a reply after ``timeout``
seconds, or a lost connection, fails every command in flight with redis-py's
``TimeoutError`` / ``ConnectionError`` (the app answers 503) and the next
command reconnects.

On a Redis Cluster (``ClusterMultiplexer``) there is one such connection per
master the process talks to, and each command goes to the master of its key's
slot (``execute``: the key is the command's first argument; ``evalsha``: the
script's keys, which must share a slot). A ``MOVED`` reply (a failover or a
resharding moved the slot) refreshes the slot map and sends the command again;
``ASK`` follows a slot being migrated; ``CLUSTERDOWN``/``TRYAGAIN``, or a
master that cannot be reached, are the same ``ConnectionError`` (503) while the
slot map is refreshed in the background, so the next request finds the
promoted replica. ``durable=True`` writes are followed by ``WAIT 1`` on the
same connection: they return once a replica has them, so a master lost right
after cannot take them along. They go on a second connection to their master,
so that the WAIT holds up only them, not the reads queued behind it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from hiredis import pack_command as _pack_command
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_closing: set[asyncio.Task] = set()  # disconnects under way (the loop keeps only weak refs)


def pack(args: Sequence[object]) -> bytes:
    """A command in RESP: an array of bulk strings (from str, bytes, int or float;
    ``TypeError`` for anything else, None and booleans included, as redis-py).
    hiredis packs it in C: a third of the Python loop's time for a ticket script's
    twenty arguments (bench/README.md, Redis Cluster)."""
    return _pack_command(args if type(args) is tuple else tuple(args))


class NotSent(RedisConnectionError):
    """No connection could be opened: the command never left this process."""


def _error(reply: Exception) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Link:
    """One open connection: writes queued per loop turn, replies matched in order."""

    def __init__(
        self, owner: Multiplexer, conn: AbstractConnection, decode: bool, timeout: float
    ) -> None:
        reader, writer = conn._reader, conn._writer  # redis-py's, once connected
        if reader is None or writer is None:
            raise RedisConnectionError("Redis connection is not open")
        self.conn = conn
        self._owner = owner
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader(
            encoding="utf-8" if decode else None, replyError=ResponseError
        )
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._waiting: collections.deque[tuple[asyncio.Future, float]] = collections.deque()
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        # The WAIT that ends this turn's batch (durable writes), with its arguments.
        self._batch_wait: tuple[asyncio.Future, int, int] | None = None
        self.closed: Exception | None = None
        self._task = asyncio.ensure_future(self._read())

    def send(self, command: bytes) -> asyncio.Future:
        if self.closed is not None:
            raise self.closed
        future = self._loop.create_future()
        self._waiting.append((future, self._loop.time()))
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(command)
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._check_time)
        return future

    def wait_after(self, replicas: int, wait_ms: int) -> asyncio.Future:
        """The reply of a ``WAIT`` sent after every command of this turn's batch:
        one WAIT covers all the writes before it on the connection, so the
        durable writes of a batch share one (and the connection is held up once)."""
        if self.closed is not None:
            raise self.closed
        if self._batch_wait is None:
            self._batch_wait = (self._loop.create_future(), replicas, wait_ms)
            if not self._out:
                self._loop.call_soon(self._flush)
        return self._batch_wait[0]

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._batch_wait is not None:
            future, replicas, wait_ms = self._batch_wait
            self._batch_wait = None
            self._waiting.append((future, self._loop.time()))
            out.append(pack(("WAIT", replicas, wait_ms)))
        if out and self.closed is None:
            self._owner.writes += 1
            try:
                self._writer.write(b"".join(out))
            except Exception as exc:  # the transport is gone
                self.close(RedisConnectionError(f"Error writing to Redis: {exc}"))

    async def _read(self) -> None:
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    raise RedisConnectionError("Connection closed by the Redis server")
                self._parser.feed(data)
                while (reply := self._parser.gets()) is not False:
                    if not self._waiting:
                        raise RedisConnectionError("Redis sent a reply nobody asked for")
                    future, _ = self._waiting.popleft()
                    if future.done():  # its caller went away; the reply is dropped
                        continue
                    if isinstance(reply, ResponseError):
                        future.set_exception(_error(reply))
                        if str(reply).startswith("READONLY"):
                            # A replica now (a failover): reconnect, and through
                            # Sentinel find the new master.
                            raise RedisConnectionError("Redis is read-only (failed over)")
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            self.close(RedisConnectionError("Redis connection closed"))
            raise
        except RedisConnectionError as exc:
            self.close(exc)
        except Exception as exc:  # protocol or socket error
            self.close(RedisConnectionError(f"Error reading from Redis: {exc}"))

    def _check_time(self) -> None:
        self._timer = None
        if not self._waiting or self.closed is not None:
            return
        oldest = self._waiting[0][1]
        due = oldest + self._timeout
        if self._loop.time() >= due:
            self.close(RedisTimeoutError(f"Redis did not answer within {self._timeout:g} s"))
        else:
            self._timer = self._loop.call_at(due, self._check_time)

    def close(self, error: Exception) -> None:
        if self.closed is not None:
            return
        self.closed = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        if self._batch_wait is not None:  # not written yet
            waiting.append((self._batch_wait[0], 0.0))
            self._batch_wait = None
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        # redis-py closes its streams and forgets them (no "unclosed connection" later).
        task = asyncio.ensure_future(self.conn.disconnect(nowait=True))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        if self._task is not asyncio.current_task():
            self._task.cancel()


class Multiplexer:
    """Send commands over the one shared connection, (re)connecting when needed."""

    cluster = False

    def __init__(self, redis: aioredis.Redis | None, *, timeout: float = 5.0, pool=None) -> None:
        # ``pool``: what opens the connection (redis-py's pool, or a cluster node's).
        self._pool = pool if pool is not None else redis.connection_pool
        self._decode = bool(self._pool.connection_kwargs.get("decode_responses", False))
        self._timeout = timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Task | None = None
        self._closed = False
        self.writes = 0  # writes to the socket, each carrying one or more commands

    async def execute(self, *args: object) -> Any:
        command = pack(args)
        link = self._link
        if link is None or link.closed is not None:
            link = await self._connect()
        return await link.send(command)

    def make_durable(self, *scripts) -> None:
        """Scripts whose writes must reach a replica before they answer: a cluster's
        concern (ClusterMultiplexer); one server or Sentinel keeps Redis's usual
        asynchronous replication."""

    async def execute_after(self, first: Sequence[object], *args: object) -> Any:
        """``first`` then this command, next to each other on the connection
        (``ASKING`` before a command sent to a slot's importing node)."""
        link = self._link
        if link is None or link.closed is not None:
            link = await self._connect()
        _quiet(link.send(pack(first)))
        return await link.send(pack(args))

    async def execute_durable(self, args: Sequence[object], replicas: int, wait_ms: int) -> Any:
        """The command, then ``WAIT`` for ``replicas`` replicas to have it (at most
        ``wait_ms``; one WAIT for all the durable writes of a turn): its reply comes
        back once it is on a replica, or the wait ran out (logged: the write is
        then only on the master)."""
        link = self._link
        if link is None or link.closed is not None:
            link = await self._connect()
        reply = link.send(pack(args))
        acked = link.wait_after(replicas, wait_ms)
        try:
            result = await reply
        except BaseException:
            _quiet(acked)
            raise
        if await acked < replicas:
            log.warning("a write reached no replica within %d ms (WAIT)", wait_ms)
        return result

    async def evalsha(
        self, script, keys: Sequence[object], args: Sequence[object], *, durable: bool = False
    ) -> Any:
        """Run a script registered with redis-py (``redis.register_script``) by its
        SHA, loading it the first time this Redis has not seen it (a restarted
        or flushed Redis). ``durable`` matters only on a cluster (ClusterMultiplexer)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.script, len(keys), *keys, *args)

    async def _connect(self) -> _Link:
        if self._closed:
            raise RedisConnectionError("The Redis multiplexer is closed")
        if self._connecting is None:  # one attempt, shared by everyone who asks meanwhile
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._link = task.result()

    async def _open(self) -> _Link:
        conn = self._pool.make_connection()
        try:
            await asyncio.wait_for(conn.connect(), self._timeout)
        except TimeoutError:
            await conn.disconnect()
            raise RedisTimeoutError("Timed out connecting to Redis") from None
        except (OSError, RedisConnectionError) as exc:
            await conn.disconnect()
            raise NotSent(f"Error connecting to Redis: {exc}") from exc
        return _Link(self, conn, self._decode, self._timeout)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        link, self._link = self._link, None
        if link is not None:
            link.close(RedisConnectionError("The Redis multiplexer is closed"))
            with contextlib.suppress(BaseException):
                await link._task
        if _closing:
            await asyncio.gather(*_closing, return_exceptions=True)


def _quiet(future: asyncio.Future) -> None:
    """A reply nobody reads: its error (if any) is retrieved, not warned about."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


class _NodePool:
    """What a Multiplexer needs of a pool, for one cluster node."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self.connection_kwargs = node.connection_kwargs

    def make_connection(self) -> AbstractConnection:
        return self._node.connection_class(**self.connection_kwargs)


_TAG_SLOTS: dict[str, int] = {}  # hash tag -> slot (ClusterMultiplexer.slot)
_TAG_SLOTS_MAX = 65536
_CLUSTER_BUSY = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN")
_REFRESH_GAP_S = 0.2


class ClusterMultiplexer:
    """The Multiplexer of a Redis Cluster: one pipelined connection per master,
    each command sent to its key's master (see the module's docstring)."""

    cluster = True

    def __init__(
        self,
        cluster: RedisCluster,
        *,
        timeout: float = 5.0,
        wait_replicas: int = 1,
        wait_ms: int = 500,
    ) -> None:
        self._cluster = cluster
        self._nodes = cluster.nodes_manager
        self._timeout = timeout
        self._wait_replicas = wait_replicas
        self._wait_ms = wait_ms
        # (node name, durable) -> its connection. Durable writes have a connection of
        # their own per master: the WAIT after them holds up every command behind it
        # on its connection, and the status reads that wake the waiting pages (and
        # everything else) must not queue behind a replica's acknowledgement.
        self._muxes: dict[tuple[str, bool], Multiplexer] = {}
        self._durable: set[str] = set()
        self._refreshing: asyncio.Task | None = None
        self._refreshed_at = 0.0
        self._closed = False

    @property
    def writes(self) -> int:
        return sum(m.writes for m in self._muxes.values())

    @staticmethod
    def slot(key: object) -> int:
        # Not redis-py's Encoder: its checks cost more than the hash itself. A key
        # with a hash tag (every ticket key, a pool's limits) is looked up by its
        # tag: the hot path names a few thousand tags, not millions of keys.
        if isinstance(key, str):
            start = key.find("{")
            if start > -1:
                end = key.find("}", start + 1)
                if end > start + 1:
                    tag = key[start + 1 : end]
                    slot = _TAG_SLOTS.get(tag)
                    if slot is None:
                        if len(_TAG_SLOTS) >= _TAG_SLOTS_MAX:
                            _TAG_SLOTS.clear()
                        slot = _TAG_SLOTS[tag] = key_slot(tag.encode())
                    return slot
            return key_slot(key.encode())
        return key_slot(key if isinstance(key, bytes) else str(key).encode())

    async def execute(self, *args: object) -> Any:
        """A command whose key is its first argument (GET, SET, EXISTS...)."""
        return await self._run(self.slot(args[1]), args)

    def make_durable(self, *scripts) -> None:
        self._durable.update(s.sha for s in scripts)

    async def evalsha(
        self, script, keys: Sequence[object], args: Sequence[object], *, durable: bool = False
    ) -> Any:
        durable = durable or script.sha in self._durable
        slot = self.slot(keys[0])
        if len(keys) > 1 and any(self.slot(k) != slot for k in keys[1:]):
            # A programming error: give the keys one hash tag.
            raise ValueError(f"the keys of a script must share a hash slot: {list(keys)}")
        try:
            return await self._run(
                slot, ("EVALSHA", script.sha, len(keys), *keys, *args), durable=durable
            )
        except NoScriptError:  # this master has not seen it (new, restarted, promoted)
            return await self._run(
                slot, ("EVAL", script.script, len(keys), *keys, *args), durable=durable
            )

    def _node(self, slot: int) -> ClusterNode:
        try:
            return self._nodes.get_node_from_slot(slot)
        except (RedisClusterException, KeyError):  # no master has it now (or no map yet)
            self.refresh_soon()
            raise RedisConnectionError(f"No Redis Cluster node serves slot {slot} now") from None

    def _mux(self, node: ClusterNode, durable: bool = False) -> Multiplexer:
        mux = self._muxes.get((node.name, durable))
        if mux is None:
            if self._closed:
                raise RedisConnectionError("The Redis multiplexer is closed")
            mux = self._muxes[(node.name, durable)] = Multiplexer(
                None, timeout=self._timeout, pool=_NodePool(node)
            )
        return mux

    async def _run(self, slot: int, args: Sequence[object], *, durable: bool = False) -> Any:
        asking: ClusterNode | None = None
        if not self._nodes.slots_cache:  # a client nobody has used yet: read the map first
            await self._cluster.initialize()
        for _ in range(5):
            node = asking or self._node(slot)
            mux = self._mux(node, durable and asking is None)
            try:
                if asking is not None:
                    return await mux.execute_after(("ASKING",), *args)
                if durable:
                    return await mux.execute_durable(args, self._wait_replicas, self._wait_ms)
                return await mux.execute(*args)
            except NotSent:
                # Never sent: a master that is gone (failing over). With a fresh slot
                # map naming another master it is sent there; else a 503.
                await self.refresh()
                if self._node(slot).name == node.name:
                    raise
            except (RedisConnectionError, RedisTimeoutError):
                self.refresh_soon()  # maybe sent: never sent twice, the request fails
                raise
            except NoScriptError:
                raise
            except ResponseError as exc:
                message = str(exc)
                if message.startswith("MOVED "):
                    await self._nodes.move_slot(MovedError(message[6:]))
                    asking = None
                elif message.startswith("ASK "):
                    host, port = message.split()[2].rsplit(":", 1)
                    asking = self._nodes.get_node(host=host, port=int(port))
                    if asking is None:
                        await self.refresh()
                elif message.startswith(_CLUSTER_BUSY):
                    self.refresh_soon()
                    raise RedisConnectionError(f"Redis Cluster: {message}") from None
                else:
                    raise
        raise RedisConnectionError("Redis Cluster kept redirecting the command")

    def refresh_soon(self) -> None:
        """Re-read the slot map in the background (at most every 0.2 s)."""
        loop = asyncio.get_running_loop()
        if self._refreshing is None and loop.time() - self._refreshed_at > _REFRESH_GAP_S:
            self._refreshing = asyncio.ensure_future(self._refresh())

    async def refresh(self) -> None:
        self.refresh_soon()
        if self._refreshing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            await self._nodes.initialize()
        except Exception as exc:  # no node answered: the next error tries again
            log.warning("could not refresh the Redis Cluster's slot map (%s)", type(exc).__name__)
        finally:
            self._refreshed_at = asyncio.get_running_loop().time()
            self._refreshing = None
        # Connections to nodes that left the map are closed.
        live = {n.name for n in self._nodes.nodes_cache.values()}
        for gone in [k for k in self._muxes if k[0] not in live]:
            await self._muxes.pop(gone).aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(BaseException):
                await self._refreshing
        muxes, self._muxes = list(self._muxes.values()), {}
        for mux in muxes:
            await mux.aclose()


def multiplexer(redis) -> Multiplexer | ClusterMultiplexer:
    """The process's shared connection(s) for a client from ``stores.redis.connect``."""
    if isinstance(redis, RedisCluster):
        return ClusterMultiplexer(redis)
    return Multiplexer(redis)
