"""The process's one Redis pub/sub connection, fanned out to in-process handlers.

Every process subscribes to a few fixed channels (pool changes, ticket status
changes) on a single connection and dispatches each message to the handlers
registered for its channel. When the connection drops, the hub reconnects
with backoff, subscribes again and then runs the reconnect hooks: a message
published while it was away is lost, so whoever caches or waits must re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

POOLS_CHANNEL = "portal:pools"
TICKETS_CHANNEL = "portal:tickets"

Handler = Callable[[dict[str, Any]], None]
ReconnectHook = Callable[[], Awaitable[None] | None]


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
