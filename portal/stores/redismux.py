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
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_closing: set[asyncio.Task] = set()  # disconnects under way (the loop keeps only weak refs)


def pack(args: Sequence[object]) -> bytes:
    """A command in RESP: an array of bulk strings (from str, bytes, int or float)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif arg is None or arg is True or arg is False:  # redis-py refuses these too
            raise TypeError(f"cannot send {arg!r} to Redis")
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


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

    def _flush(self) -> None:
        out, self._out = self._out, []
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

    def __init__(self, redis: aioredis.Redis, *, timeout: float = 5.0) -> None:
        self._pool = redis.connection_pool
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

    async def evalsha(self, script, keys: Sequence[object], args: Sequence[object]) -> Any:
        """Run a script registered with redis-py (``redis.register_script``) by its
        SHA, loading it the first time this Redis has not seen it (a restarted
        or flushed Redis)."""
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
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
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
