"""The worker's side of webhooks: ``webhooks.deliver`` (one attempt at one delivery)
and ``webhooks.prune`` (the delivery log's retention)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from procrastinate import JobContext
from standardwebhooks import Webhook

from portal import jobs
from portal.stores.crypto import SecretBox
from portal.web.outbound import AddressNotAllowed, guarded_client
from portal.webhooks.store import DELIVER_TASK, QUEUE, loopback_allowed, secret_context

log = logging.getLogger("portal.webhooks")

tasks = jobs.Tasks()

# 5 s, 15 s, 45 s, ... three times longer each time, at most 4 h apart, for 24 h.
RETRY = jobs.exponential(first=5, factor=3, cap=4 * 3600, give_up_after=24 * 3600)
TIMEOUT = 10.0  # seconds for a whole attempt's response
READ_LIMIT = 4096  # bytes of a response read
EXCERPT = 500  # characters of a response kept in the log
KEEP_DAYS = 30  # the delivery log's retention
USER_AGENT = "wechat-scan-portal-webhooks/1"

_LOAD = """
SELECT d.id, d.status, d.event_id, ev.type, ev.data, ev.created_at,
       e.id AS endpoint_id, e.url, e.secret_enc, e.enabled
  FROM webhook_deliveries d
  JOIN events ev ON ev.id = d.event_id
  JOIN webhook_endpoints e ON e.id = d.endpoint_id
 WHERE d.id = $1
"""

# The attempt, the delivery's state and the endpoint's failure record, in one
# statement. An endpoint failing for webhooks_disable_after_days is disabled.
_RECORD = """
WITH attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, status_code, error, latency_ms, response_excerpt, replay)
    VALUES ($1, $2, $3, $4, $5, $6)
), delivery AS (
    UPDATE webhook_deliveries
       SET attempts = attempts + 1, last_attempt_at = now(),
           status = CASE WHEN $7 THEN 'succeeded' WHEN $8 THEN 'failed' ELSE status END
     WHERE id = $1
)
UPDATE webhook_endpoints
   SET failing_since = CASE WHEN $7 THEN NULL ELSE coalesce(failing_since, now()) END,
       enabled = enabled AND ($7 OR failing_since IS NULL
                              OR failing_since > now() - make_interval(days => $10)),
       disabled_reason = CASE
           WHEN enabled AND NOT $7 AND failing_since <= now() - make_interval(days => $10)
           THEN 'failing' ELSE disabled_reason END,
       disabled_at = CASE
           WHEN enabled AND NOT $7 AND failing_since <= now() - make_interval(days => $10)
           THEN now() ELSE disabled_at END
 WHERE id = $9
RETURNING enabled
"""


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx: procrastinate tries again later (RETRY)."""


_clients: dict[tuple[int, bool], httpx.AsyncClient] = {}


def _client(allow_loopback: bool) -> httpx.AsyncClient:
    key = (id(asyncio.get_running_loop()), allow_loopback)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = guarded_client(
            allow_loopback=allow_loopback,
            timeout=TIMEOUT,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )
    return client


async def close_clients() -> None:
    """Close this event loop's HTTP clients (the worker calls it when it stops)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _clients if k[0] == loop_id]:
        await _clients.pop(key).aclose()


@functools.lru_cache(maxsize=4)
def _box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key)


@functools.lru_cache(maxsize=1024)
def _secret(secret_key: str, endpoint_id: uuid.UUID, sealed: bytes) -> str:
    """An endpoint's signing secret, opened once per process (and per rotation)."""
    return _box(secret_key).decrypt(sealed, secret_context(endpoint_id)).decode()


def payload(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The body: the Standard Webhooks envelope (type, timestamp, data)."""
    stamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": event_type, "timestamp": stamp, "data": data})


def signed_headers(secret: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
    }


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]):
    """(status code or None, error or None, response excerpt or None). The whole
    attempt, answer included, has TIMEOUT seconds: a receiver dripping its answer
    byte by byte does not hold a worker's slot longer."""
    try:
        async with asyncio.timeout(TIMEOUT):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                received = b""
                async for chunk in response.aiter_raw():
                    received += chunk
                    if len(received) >= READ_LIMIT:
                        break
                excerpt = received[:READ_LIMIT].decode("utf-8", "replace")[:EXCERPT]
                return response.status_code, None, excerpt
    except AddressNotAllowed:
        return None, "address not allowed: the URL is not on a public address", None
    except (httpx.TimeoutException, TimeoutError):
        return None, f"timeout: no answer within {TIMEOUT:g} s", None
    except httpx.HTTPError as exc:
        return None, f"connection failed: {type(exc).__name__}", None


@tasks.task(DELIVER_TASK, retry=RETRY, queue=QUEUE, pass_context=True)
async def deliver(
    context: JobContext, *, delivery_id: int, replay: bool = False, prior_attempts: int = 0
) -> None:
    """One attempt. ``prior_attempts``: tries made before this job (the dispatcher's
    first attempt, portal/webhooks/dispatch.py), counted in the retry schedule."""
    res = jobs.resources()
    row = await res.db.fetchrow(_LOAD, delivery_id)
    if row is None:  # the endpoint, its pool or the log's entry is gone
        return
    if row["status"] != "pending":  # done already (a rerun after a worker stopped)
        return
    last_try = context.job.attempts + prior_attempts + 1 >= RETRY.max_attempts
    if not row["enabled"] and not replay:  # a replay is an admin's explicit try
        await res.db.execute(
            "UPDATE webhook_deliveries SET status = 'failed' WHERE id = $1", delivery_id
        )
        return
    secret = _secret(res.settings.secret_key, row["endpoint_id"], row["secret_enc"])
    body = payload(row["type"], row["created_at"], row["data"])
    msg_id = str(row["event_id"])
    headers = signed_headers(secret, msg_id, body, datetime.now(UTC))
    started = time.perf_counter()
    status, error, excerpt = await _post(
        _client(loopback_allowed(res.settings)), row["url"], body, headers
    )
    latency_ms = round((time.perf_counter() - started) * 1000)
    ok = status is not None and 200 <= status < 300
    if status is not None and not ok:
        error = f"HTTP {status}"
    still_enabled = await res.db.fetchval(
        _RECORD,
        delivery_id,
        status,
        error,
        latency_ms,
        excerpt,
        replay,
        ok,
        last_try,
        row["endpoint_id"],
        res.settings.webhooks_disable_after_days,
    )
    if ok:
        return
    if not still_enabled:
        log.warning("webhook endpoint %s disabled: failing for days", row["endpoint_id"])
        await res.db.execute(
            "UPDATE webhook_deliveries SET status = 'failed' WHERE id = $1", delivery_id
        )
        return
    if not last_try:
        raise DeliveryFailed(f"delivery {delivery_id}: {error}")


@tasks.periodic("webhooks.prune", cron="41 4 * * *")
async def prune(*, timestamp: int) -> None:
    """Events, deliveries and attempts older than KEEP_DAYS go."""
    res = jobs.resources()
    await res.db.execute(
        "DELETE FROM events WHERE created_at < now() - make_interval(days => $1)", KEEP_DAYS
    )
