"""The process's one Redis pub/sub connection, fanned out to in-process handlers.

Every process subscribes to a few fixed channels (pool changes, ticket status
changes) on a single connection and dispatches each message to the handlers
registered for its channel. When the connection drops, the hub reconnects
with backoff, subscribes again and then runs the reconnect hooks: a message
published while it was away is lost, so whoever caches or waits must re-check.

On a Redis Cluster (``ShardedEventHub``) ticket changes go to shard channels,
one per pool tag (``hashtags.ticket_channel``), published by the master that
holds the pool's tickets (``SPUBLISH``). A process subscribes (``SSUBSCRIBE``)
to a pool's channel once it holds one of the pool's tickets (``follow``), on
one connection per master at most; pool changes are the shard channel
``portal:pools``. When a subscriber connection drops, or a slot moves (a
failover, a resharding: the node then unsubscribes us itself), the hub reads
the slot map again, subscribes on the slot's new master and runs the hooks
(``on_followed`` with the pool tag, ``on_reconnect`` for ``portal:pools``),
so a message lost meanwhile only delays a status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portal.stores import hashtags

log = logging.getLogger(__name__)

POOLS_CHANNEL = "portal:pools"
TICKETS_CHANNEL = "portal:tickets"

Handler = Callable[[dict[str, Any]], None]
ReconnectHook = Callable[[], Awaitable[None] | None]
FollowHook = Callable[[str], None]


class EventHub:
    def __init__(
        self, redis: aioredis.Redis, channels: tuple[str, ...] = (POOLS_CHANNEL, TICKETS_CHANNEL)
    ) -> None:
        self._redis = redis
        self._channels = channels
        self._handlers: dict[str, list[Handler]] = {c: [] for c in channels}
        self._reconnect_hooks: list[ReconnectHook] = []
        self._task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()
        self.reconnects = 0

    def on(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        self._reconnect_hooks.append(hook)

    def on_followed(self, hook: FollowHook) -> None:
        """Only the sharded hub calls these (every process hears every ticket here)."""

    def follow(self, ticket: str) -> None:
        """This process holds ``ticket``: every ticket's changes reach it already."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._redis.publish(channel, json.dumps(message, separators=(",", ":")))

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="portal-event-hub")
        await asyncio.wait_for(self.subscribed.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._channels)
                self.subscribed.set()
                if not first:
                    self.reconnects += 1
                    log.info("event hub re-subscribed after a lost connection")
                    await self._run_reconnect_hooks()
                first, delay = False, 0.1
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._dispatch(message)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.subscribed.clear()
                log.warning(
                    "event hub lost Redis (%s); reconnecting in %.1fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _run_reconnect_hooks(self) -> None:
        for hook in self._reconnect_hooks:
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                log.exception("event hub reconnect hook failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        try:
            data = json.loads(message["data"])
        except (TypeError, ValueError):
            log.warning("ignored a malformed event on %s", channel)
            return
        for handler in self._handlers.get(channel, ()):
            try:
                handler(data)
            except Exception:
                log.exception("event handler failed on %s", channel)


async def publish(client, channel: str, data: str) -> None:
    """Publish with any client from ``stores.redis.connect`` (the CLI's): a shard
    channel on a cluster, the classic one elsewhere."""
    if isinstance(client, RedisCluster):
        await client.execute_command("SPUBLISH", channel, data)
    else:
        await client.publish(channel, data)


_PING_S = 10.0


class _ShardLink:
    """One subscriber connection to one cluster node."""

    def __init__(self, hub: ShardedEventHub, node: ClusterNode) -> None:
        self.hub = hub
        self.node = node
        self.name = node.name
        self.channels: set[str] = set()  # asked for on this connection
        self.pending: collections.deque[str] = collections.deque()  # SSUBSCRIBEs unanswered
        self._conn = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._closing: asyncio.Future | None = None
        self.closed = False

    async def open(self) -> None:
        conn = self.node.connection_class(**self.node.connection_kwargs)
        await asyncio.wait_for(conn.connect(), 5)
        self._conn, self._writer = conn, conn._writer
        self._task = asyncio.ensure_future(self._read(conn._reader))

    def send(self, *args: object) -> None:
        from portal.stores.redismux import pack

        if self._writer is None or self.closed:
            raise RedisConnectionError("subscriber connection is closed")
        self._writer.write(pack(args))

    def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        self.pending.append(channel)
        self.send("SSUBSCRIBE", channel)  # one per command: a node refuses cross-slot lists

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        with contextlib.suppress(RedisConnectionError):
            self.send("SUNSUBSCRIBE", channel)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), _PING_S)
                except TimeoutError:
                    if loop.time() - last > 3 * _PING_S:
                        raise RedisConnectionError("no answer to PING") from None
                    self.send("PING")  # a dead peer without a reset is noticed
                    continue
                if not data:
                    raise RedisConnectionError("subscriber connection closed by Redis")
                last = loop.time()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if isinstance(reply, list) and len(reply) >= 3:
                        if reply[0] == "ssubscribe" and reply[1] in self.pending:
                            self.pending.remove(reply[1])
                        self.hub._reply(self, reply[0], reply[1], reply[2])
                    elif isinstance(reply, ResponseError) and self.pending:
                        # An SSUBSCRIBE refused (MOVED: the slot is elsewhere now).
                        self.hub._refused(self, self.pending.popleft(), reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event hub lost Redis node %s (%s)", self.name, type(exc).__name__)
        finally:
            self.close()
            self.hub._lost(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._conn is not None:
            self._closing = asyncio.ensure_future(self._conn.disconnect(nowait=True))
            self._closing.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    @property
    def done(self) -> bool:
        return all(t is None or t.done() for t in (self._task, self._closing))

    async def wait_closed(self) -> None:
        self.close()
        pending = [t for t in (self._task, self._closing) if t is not None]
        await asyncio.gather(*pending, return_exceptions=True)


class ShardedEventHub:
    """The event hub on a Redis Cluster (see the module's docstring): the same
    interface as EventHub, subscriptions per pool tag, one connection per node."""

    def __init__(
        self, cluster: RedisCluster, channels: tuple[str, ...] = (POOLS_CHANNEL, TICKETS_CHANNEL)
    ) -> None:
        self._cluster = cluster
        self._handlers: dict[str, list[Handler]] = {c: [] for c in channels}
        self._reconnect_hooks: list[ReconnectHook] = []
        self._follow_hooks: list[FollowHook] = []
        # shard channel -> the hub channel its messages are for
        self._wanted: dict[str, str] = {POOLS_CHANNEL: POOLS_CHANNEL}
        self._placed: dict[str, _ShardLink] = {}  # shard channel -> where it was asked for
        self._heard: set[str] = set()  # confirmed subscriptions
        self._ever: set[str] = set()  # channels confirmed at least once
        self._links: dict[str, _ShardLink] = {}
        self._retired: list[_ShardLink] = []  # closed, their connections still closing
        self._dirty = asyncio.Event()
        self._stale_map = False  # read the slot map again before placing channels
        self._task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()
        self.reconnects = 0

    @property
    def connections(self) -> int:
        return sum(1 for link in self._links.values() if not link.closed)

    @property
    def channels(self) -> int:
        return len(self._heard)

    def on(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        self._reconnect_hooks.append(hook)

    def on_followed(self, hook: FollowHook) -> None:
        """``hook(tag)`` once the pool tag's channel is heard (again): whoever cached
        or waits on its tickets re-checks them, a change may have been missed."""
        self._follow_hooks.append(hook)

    def follow(self, ticket: str) -> None:
        channel = hashtags.ticket_channel(ticket)
        if channel not in self._wanted:
            self._wanted[channel] = TICKETS_CHANNEL
            self._dirty.set()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await publish(self._cluster, channel, json.dumps(message, separators=(",", ":")))

    async def start(self, timeout: float = 10.0) -> None:
        self._dirty.set()
        self._task = asyncio.create_task(self._run(), name="portal-event-hub")
        await asyncio.wait_for(self.subscribed.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        links, self._links = [*self._links.values(), *self._retired], {}
        self._retired = []
        await asyncio.gather(*(link.wait_closed() for link in links), return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                if self._stale_map:
                    self._stale_map = False
                    await self._cluster.nodes_manager.initialize()
                await self._place()
                delay = 0.1
            except (
                RedisConnectionError,
                RedisTimeoutError,
                RedisClusterException,
                OSError,
                KeyError,  # a slot missing from the map (not read yet)
            ) as exc:
                log.warning(
                    "event hub cannot subscribe (%s); again in %.1fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                with contextlib.suppress(Exception):
                    await self._cluster.nodes_manager.initialize()
                self._dirty.set()

    async def _place(self) -> None:
        """Subscribe every wanted channel on its slot's master."""
        nodes = self._cluster.nodes_manager
        for channel in list(self._wanted):
            node = nodes.get_node_from_slot(key_slot(channel.encode()))
            placed = self._placed.get(channel)
            if placed is not None and not placed.closed and placed.name == node.name:
                continue
            if placed is not None and not placed.closed:  # the slot moved
                placed.unsubscribe(channel)
            self._heard.discard(channel)
            link = self._links.get(node.name)
            if link is None or link.closed:
                if link is not None:
                    self._retired.append(link)
                link = _ShardLink(self, node)
                await link.open()
                self._links[node.name] = link
            link.subscribe(channel)
            self._placed[channel] = link
        for name, link in list(self._links.items()):  # connections left with nothing
            if not link.channels and not link.closed:
                link.close()
            if link.closed:
                self._retired.append(self._links.pop(name))
        self._retired = [old for old in self._retired if not old.done]

    def _reply(self, link: _ShardLink, kind: str, channel: str, data: Any) -> None:
        if kind == "smessage":
            self._dispatch({"channel": self._wanted.get(channel), "data": data})
        elif kind == "ssubscribe":
            if self._placed.get(channel) is link:
                self._confirmed(channel)
        elif kind == "sunsubscribe":
            link.channels.discard(channel)
            if self._placed.get(channel) is link:  # the node dropped us: the slot moved
                self._replace(channel)

    def _refused(self, link: _ShardLink, channel: str, error: Exception) -> None:
        log.info("event hub: %s refused %s (%s)", link.name, channel, str(error)[:80])
        link.channels.discard(channel)
        if self._placed.get(channel) is link:
            self._replace(channel)

    def _replace(self, channel: str) -> None:
        """Subscribe ``channel`` again, where a fresh slot map says."""
        del self._placed[channel]
        self._heard.discard(channel)
        self._stale_map = True
        self._dirty.set()

    def _confirmed(self, channel: str) -> None:
        self._heard.add(channel)
        again = channel in self._ever
        self._ever.add(channel)
        if channel == POOLS_CHANNEL:
            self.subscribed.set()
            if again:
                self.reconnects += 1
                log.info("event hub re-subscribed after a lost connection")
                task = asyncio.ensure_future(self._run_reconnect_hooks())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return
        tag = channel[len(hashtags.TICKETS_SHARD_PREFIX) + 1 : -1]
        for hook in self._follow_hooks:
            try:
                hook(tag)
            except Exception:
                log.exception("event hub follow hook failed")

    def _lost(self, link: _ShardLink) -> None:
        for channel in list(link.channels):
            if self._placed.get(channel) is link:
                del self._placed[channel]
                self._heard.discard(channel)
        if POOLS_CHANNEL not in self._heard:
            self.subscribed.clear()
        self._stale_map = True
        self._dirty.set()

    _run_reconnect_hooks = EventHub._run_reconnect_hooks
    _dispatch = EventHub._dispatch


def event_hub(redis) -> EventHub | ShardedEventHub:
    """The process's hub for a client from ``stores.redis.connect``."""
    if isinstance(redis, RedisCluster):
        return ShardedEventHub(redis)
    return EventHub(redis)
