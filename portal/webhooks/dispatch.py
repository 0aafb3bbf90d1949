"""First attempts, in batches: the common path of a webhook costs no procrastinate job.

The outbox trigger (sql/0015) writes each delivery with ``dispatch = true`` and
notifies ``webhooks_dispatch`` at commit. A :class:`Dispatcher` in every ``portal
worker`` listens, claims such deliveries in batches (``FOR UPDATE SKIP LOCKED``:
workers never take the same one; ``claimed_at`` is a lease, so the claims of a
worker that died are taken again after ``LEASE`` seconds), sends them concurrently
over one pooled keep-alive aiohttp session (``outbound.guarded_session``: the SSRF
check on the address connected to; the signing, TIMEOUT and READ_LIMIT of
``webhooks.deliver``), and records the successes in one statement.
A failed first attempt is recorded as before and handed to ``webhooks.deliver``
(procrastinate) for the rest of the 24 h retry schedule; replays stay jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from portal import jobs
from portal.settings import Settings
from portal.web.outbound import AddressRefused, guarded_session
from portal.webhooks import tasks
from portal.webhooks.store import DELIVER_TASK, QUEUE, loopback_allowed

log = logging.getLogger("portal.webhooks")

CHANNEL = "webhooks_dispatch"
LEASE = 60.0  # seconds a claim holds; longer than an attempt (tasks.TIMEOUT) and its record
POLL = 1.0  # seconds between looks when no notification came (one may be missed)
FLUSH_AFTER = 0.05  # seconds a finished attempt may wait to be recorded with others

_CLAIM = """
WITH c AS (
    UPDATE webhook_deliveries SET claimed_at = now()
     WHERE id IN (SELECT id FROM webhook_deliveries
                   WHERE dispatch
                     AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => $2))
                   ORDER BY id LIMIT $1
                   FOR UPDATE SKIP LOCKED)
    RETURNING id, event_id, endpoint_id
)
SELECT c.id, c.event_id, ev.type, ev.data, ev.created_at,
       e.id AS endpoint_id, e.url, e.secret_enc, e.enabled
  FROM c
  JOIN events ev ON ev.id = c.event_id
  JOIN webhook_endpoints e ON e.id = c.endpoint_id
"""

# Successful first attempts, all at once: the attempts, the deliveries' state, and
# the endpoints' failure record cleared (as tasks._RECORD does for one).
_RECORD_OK = """
WITH a AS (
    INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt)
    SELECT u.id, u.status, u.latency, u.excerpt
      FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[]) AS u(id, status, latency, excerpt)
     WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = u.id)
), d AS (
    UPDATE webhook_deliveries
       SET status = 'succeeded', attempts = attempts + 1, last_attempt_at = now(),
           dispatch = false, claimed_at = NULL
     WHERE id = ANY ($1::bigint[]) AND dispatch
)
UPDATE webhook_endpoints SET failing_since = NULL
 WHERE id = ANY ($5::uuid[]) AND failing_since IS NOT NULL
"""

# Claimed for a disabled endpoint (disabled after the event): failed, not sent.
_DROP = """
UPDATE webhook_deliveries SET status = 'failed', dispatch = false, claimed_at = NULL
 WHERE id = ANY ($1::bigint[]) AND dispatch
"""

_HAND_OVER = "UPDATE webhook_deliveries SET dispatch = false, claimed_at = NULL WHERE id = $1"
_GIVE_UP = (
    "UPDATE webhook_deliveries SET status = 'failed', dispatch = false, claimed_at = NULL "
    "WHERE id = $1"
)


class Dispatcher:
    """Delivers first attempts until :meth:`stop` (or, with ``wait=False``, until
    nothing is left to claim)."""

    def __init__(
        self, settings: Settings, db: asyncpg.Pool, *, concurrency: int, wait: bool = True
    ) -> None:
        self.settings = settings
        self.db = db
        self.concurrency = max(1, concurrency)
        self.batch = max(1, self.concurrency // 4)  # claim when this many slots are free
        self.wait = wait
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task] = set()
        self._done: list[tuple[dict[str, Any], int | None, str | None, str | None, int]] = []
        self._oldest_done = 0.0
        self._session: aiohttp.ClientSession | None = None

    def stop(self) -> None:
        """No new claim; what is being sent finishes (``run`` then returns)."""
        self._stopping = True
        self._wake.set()

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def run(self, grace: float = 30.0) -> None:
        listener = await self.db.acquire() if self.wait else None
        try:
            if listener is not None:
                await listener.add_listener(CHANNEL, self._notified)
            await self._loop()
        finally:
            if self._inflight:
                _, pending = await asyncio.wait(self._inflight, timeout=grace)
                for task in pending:  # left to the lease: another worker sends it again
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._flush()
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(CHANNEL, self._notified)
                await self.db.release(listener)
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if self._done and (
                not self._inflight
                or len(self._done) >= self.batch
                or time.monotonic() - self._oldest_done >= FLUSH_AFTER
            ):
                await self._flush()
            free = self.concurrency - len(self._inflight)
            claimed = 0
            if free >= self.batch or (free > 0 and not self._inflight):
                try:
                    claimed = await self._claim(free)
                except (asyncpg.PostgresError, OSError) as exc:
                    log.warning("webhook dispatch: claiming failed (%s); trying again", exc)
                    await asyncio.sleep(POLL)
                    continue
            if not self.wait and not claimed and not self._inflight and not self._done:
                return
            if claimed and claimed == free:
                continue  # more may be waiting
            timeout = FLUSH_AFTER if self._done else POLL
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _claim(self, n: int) -> int:
        rows = await self.db.fetch(_CLAIM, n, LEASE)
        disabled = [r["id"] for r in rows if not r["enabled"]]
        if disabled:
            await self.db.execute(_DROP, disabled)
        for row in rows:
            if row["enabled"]:
                task = asyncio.create_task(self._send(self._http(), dict(row)))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
        return len(rows)

    def _http(self) -> aiohttp.ClientSession:
        """One pooled keep-alive session per dispatcher (aiohttp: about a third of
        httpx's CPU per request here; httpcore's pool also looks at every connection
        for every request it places)."""
        if self._session is None:
            self._session = guarded_session(
                allow_loopback=loopback_allowed(self.settings), limit=self.concurrency
            )
        return self._session

    def _finished(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _send(self, client, row: dict[str, Any]) -> None:
        secret = tasks._secret(self.settings.secret_key, row["endpoint_id"], row["secret_enc"])
        body = tasks.payload(row["type"], row["created_at"], row["data"])
        headers = tasks.signed_headers(secret, str(row["event_id"]), body, datetime.now(UTC))
        started = time.perf_counter()
        status, error, excerpt = await _post(client, row["url"], body, headers)
        latency_ms = round((time.perf_counter() - started) * 1000)
        if not self._done:
            self._oldest_done = time.monotonic()
        self._done.append((row, status, error, excerpt, latency_ms))

    async def _flush(self) -> None:
        done, self._done = self._done, []
        ok = [d for d in done if d[1] is not None and 200 <= d[1] < 300]
        if ok:
            try:
                await self.db.execute(
                    _RECORD_OK,
                    [d[0]["id"] for d in ok],
                    [d[1] for d in ok],
                    [d[4] for d in ok],
                    [d[3] for d in ok],
                    list({d[0]["endpoint_id"] for d in ok}),
                )
            except (asyncpg.PostgresError, OSError) as exc:
                # Unrecorded: their claims lapse and they are sent again (at least once).
                log.warning("webhook dispatch: recording %d attempts failed: %s", len(ok), exc)
        for row, status, error, excerpt, latency_ms in done:
            if status is not None and 200 <= status < 300:
                continue
            try:
                await self._failed(row, status, error, excerpt, latency_ms)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("webhook dispatch: recording delivery %s failed: %s", row["id"], exc)

    async def _failed(self, row, status, error, excerpt, latency_ms) -> None:
        """Recorded as tasks.deliver records an attempt; the retries become a job."""
        if status is not None:
            error = f"HTTP {status}"
        async with self.db.acquire() as conn, conn.transaction():
            still_enabled = await conn.fetchval(
                tasks._RECORD,
                row["id"],
                status,
                error,
                latency_ms,
                excerpt,
                False,
                False,
                False,
                row["endpoint_id"],
                self.settings.webhooks_disable_after_days,
            )
            if not still_enabled:
                if still_enabled is not None:
                    log.warning(
                        "webhook endpoint %s disabled: failing for days", row["endpoint_id"]
                    )
                await conn.execute(_GIVE_UP, row["id"])
                return
            await conn.execute(_HAND_OVER, row["id"])
            await jobs.defer(
                conn,
                DELIVER_TASK,
                queue=QUEUE,
                at=datetime.now(UTC) + timedelta(seconds=tasks.RETRY.wait_after(0)),
                delivery_id=row["id"],
                prior_attempts=1,
            )


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]):
    """tasks._post over aiohttp: (status code or None, error or None, excerpt or None),
    the whole attempt within tasks.TIMEOUT, at most READ_LIMIT bytes read."""
    try:
        async with asyncio.timeout(tasks.TIMEOUT):
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                received = b""
                while len(received) < tasks.READ_LIMIT:
                    chunk = await response.content.read(tasks.READ_LIMIT - len(received))
                    if not chunk:
                        break
                    received += chunk
                excerpt = received.decode("utf-8", "replace")[: tasks.EXCERPT]
                return response.status, None, excerpt
    except AddressRefused:
        return None, "address not allowed: the URL is not on a public address", None
    except TimeoutError:
        return None, f"timeout: no answer within {tasks.TIMEOUT:g} s", None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return None, f"connection failed: {type(exc).__name__}", None
