"""A lean asyncio HTTP/1.1 client for the load generator.

httpx costs far more CPU per request than the server under test spends on a
small JSON route, and 10,000 open Server-Sent-Events streams need something
with almost no per-stream overhead. This client speaks just enough HTTP/1.1,
correctly: keep-alive connections, ``Content-Length`` and chunked bodies,
``Connection: close``, and an SSE reader on top of the chunked decoder.

Only for talking to the loopback server the benchmark starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
# The server closes idle keep-alive connections after 5 s (gunicorn keepalive):
# reconnect before reusing one idle longer than this, rather than race its close.
IDLE_REUSE_S = 3.0


class HTTPError(Exception):
    """The connection or the response was not valid HTTP/1.1 as expected."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes

    def json(self):
        return json.loads(self.body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"bad status line {lines[0]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise HTTPError(f"bad status line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HTTPError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError("the server closed the connection") from None
        raise HTTPError("connection closed inside the response head") from None
    except asyncio.LimitOverrunError:
        raise HTTPError("response head too large") from None
    return _parse_head(head[:-4])


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" for the last (after its trailers)."""
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise HTTPError("connection closed inside a chunked body")
    try:
        size = int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise HTTPError(f"bad chunk size line {line!r}") from None
    if size == 0:
        while True:  # trailers, then the empty line
            trailer = await reader.readline()
            if trailer in (b"\r\n", b""):
                return b""
    data = await reader.readexactly(size + 2)
    if data[-2:] != b"\r\n":
        raise HTTPError("chunk not followed by CRLF")
    return data[:-2]


def _build(method: str, path: str, host: str, headers: dict[str, str] | None, body: bytes | None):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if headers:
        lines.extend(f"{k}: {v}" for k, v in headers.items())
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Connection:
    """One keep-alive connection to (addr, port), sending ``Host: host``."""

    def __init__(self, addr: str, port: int, host: str, timeout: float = 30.0) -> None:
        self.addr = addr
        self.port = port
        self.host = host
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self.last_sent = 0.0  # time.monotonic() just before the last request was written

    async def _connect(self) -> None:
        self.close()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.addr, self.port, limit=MAX_HEADER_BYTES), self.timeout
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: object = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        if self._writer is None or time.monotonic() - self._last_used > IDLE_REUSE_S:
            await self._connect()
        try:
            return await asyncio.wait_for(self._exchange(method, path, headers, body), self.timeout)
        except BaseException:
            self.close()  # the connection's state is unknown now
            raise

    async def _exchange(self, method, path, headers, body) -> Response:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        data = _build(method, path, self.host, headers, body)
        self.last_sent = time.monotonic()
        writer.write(data)
        status, rheaders = await _read_head(reader)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif "chunked" in rheaders.get("transfer-encoding", "").lower():
            parts = []
            while chunk := await _read_chunk(reader):
                parts.append(chunk)
            data = b"".join(parts)
        elif "content-length" in rheaders:
            try:
                data = await reader.readexactly(int(rheaders["content-length"]))
            except asyncio.IncompleteReadError:
                raise HTTPError("connection closed inside the body") from None
        else:  # delimited by the end of the connection
            data = await reader.read()
            rheaders["connection"] = "close"
        if rheaders.get("connection", "").lower() == "close":
            self.close()
        else:
            self._last_used = time.monotonic()
        return Response(status, rheaders, data)


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    received: float  # time.monotonic() when the chunk carrying it was read


class SSEStream:
    """One ``GET`` answered by ``text/event-stream``, read event by event.

    ``open()`` sends the request and checks the response head; ``events()``
    yields each event (fields ``event`` and ``data``; comments and ``retry``
    are skipped) until the server ends the stream.
    """

    def __init__(self, addr: str, port: int, host: str, path: str) -> None:
        self.addr, self.port, self.host, self.path = addr, port, host, path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._chunked = False

    async def open(self, timeout: float = 30.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.addr, self.port, limit=MAX_HEADER_BYTES), timeout
        )
        self._writer.write(
            _build("GET", self.path, self.host, {"Accept": "text/event-stream"}, None)
        )
        status, headers = await asyncio.wait_for(_read_head(self._reader), timeout)
        if status != 200:
            raise HTTPError(f"SSE request answered {status}")
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise HTTPError(f"SSE answered content-type {headers.get('content-type')!r}")
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = self._reader
        assert reader is not None
        if self._chunked:
            while chunk := await _read_chunk(reader):
                yield chunk
        else:
            while chunk := await reader.read(65536):
                yield chunk

    async def events(self) -> AsyncIterator[SSEEvent]:
        buf = b""
        async for chunk in self._chunks():
            now = time.monotonic()
            buf += chunk
            if b"\r" in buf and not buf.endswith(b"\r"):
                buf = buf.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                event, data = "message", []
                for line in block.decode().split("\n"):
                    if not line or line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                if data:
                    yield SSEEvent(event, "\n".join(data), now)


class ConnectionPool:
    """A fixed set of keep-alive connections shared by many tasks."""

    def __init__(self, addr: str, port: int, host: str, size: int) -> None:
        self._free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self._free.put_nowait(Connection(addr, port, host))

    async def request(self, method: str, path: str, **kwargs) -> Response:
        conn = await self._free.get()
        try:
            return await conn.request(method, path, **kwargs)
        finally:
            self._free.put_nowait(conn)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()
