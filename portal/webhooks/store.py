"""A pool's webhook endpoints and their deliveries. Every function takes the pool
id and touches that pool's rows only: another pool's endpoint or delivery is
"not found", whatever its id."""

from __future__ import annotations

import base64
import ipaddress
import secrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from portal import jobs
from portal.errors import NotFound, ValidationError
from portal.settings import Settings
from portal.stores.crypto import SecretBox
from portal.web.outbound import address_allowed
from portal.webhooks import EVENTS

MAX_ENDPOINTS_PER_POOL = 20
DELIVER_TASK = "webhooks.deliver"
QUEUE = "webhooks"

_ENDPOINT_COLUMNS = (
    "id, url, description, events, enabled, disabled_reason, disabled_at, failing_since, "
    "created_at, updated_at"
)


def loopback_allowed(settings: Settings) -> bool:
    """Endpoints on loopback: in dev mode, or with PORTAL_WEBHOOKS_ALLOW_LOOPBACK (tests)."""
    return settings.webhooks_allow_loopback or settings.is_dev


def secret_context(endpoint_id: uuid.UUID | str) -> str:
    return f"webhook_endpoint:{endpoint_id}"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_endpoint_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound("No such webhook endpoint.") from None


def check_url(settings: Settings, value: str) -> str:
    """An endpoint's URL: https (http only where loopback is allowed: dev, tests),
    no credentials, no fragment, and not a non-public literal address. A name is
    checked again, resolved, on every delivery (portal.web.outbound)."""
    url = (value or "").strip()
    if not url or len(url) > 2000:
        raise ValidationError(
            "url: give the endpoint's URL (at most 2000 characters).", error="invalid_url"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("url: not a valid URL.", error="invalid_url") from None
    loopback = loopback_allowed(settings)
    allowed_schemes = ("https", "http") if loopback else ("https",)
    if parts.scheme not in allowed_schemes or not parts.hostname:
        raise ValidationError("url: must be an https:// URL.", error="invalid_url")
    if parts.username or parts.password or parts.fragment:
        raise ValidationError("url: must not carry credentials or a fragment.", error="invalid_url")
    del port
    host = parts.hostname
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    local_name = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    if (literal is not None and not address_allowed(literal, allow_loopback=loopback)) or (
        literal is None and local_name and not loopback
    ):
        raise ValidationError(
            "url: must be a public address (not loopback, private or local).",
            error="url_not_public",
        )
    return url


def check_events(values: list[str] | tuple[str, ...]) -> list[str]:
    chosen = sorted(set(values or ()))
    if not chosen:
        raise ValidationError("events: choose at least one event.", error="invalid_events")
    unknown = [v for v in chosen if v not in EVENTS]
    if unknown:
        raise ValidationError(f"events: unknown event {unknown[0]!r}.", error="invalid_events")
    return chosen


def check_description(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > 200:
        raise ValidationError("description: at most 200 characters.", error="invalid_description")
    return text


def _endpoint(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d["id"] = str(d["id"])
    d["events"] = list(d["events"])
    return d


async def list_endpoints(conn, pool_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE pool_id = $1 "
        "ORDER BY created_at, id",
        pool_id,
    )
    return [_endpoint(r) for r in rows]


async def get_endpoint(conn, pool_id: int, endpoint_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE pool_id = $1 AND id = $2",
        pool_id,
        parse_endpoint_id(endpoint_id),
    )
    if row is None:
        raise NotFound("No such webhook endpoint.")
    return _endpoint(row)


async def create_endpoint(
    conn: asyncpg.Connection,
    settings: Settings,
    box: SecretBox,
    pool_id: int,
    *,
    url: str,
    events: list[str],
    description: str = "",
) -> tuple[dict[str, Any], str]:
    """The new endpoint and its signing secret (shown this once; stored sealed)."""
    url = check_url(settings, url)
    chosen = check_events(events)
    description = check_description(description)
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    async with conn.transaction():
        # The pool's row, locked: two creations at once cannot both pass the cap.
        await conn.execute("SELECT 1 FROM pools WHERE id = $1 FOR UPDATE", pool_id)
        count = await conn.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE pool_id = $1", pool_id
        )
        if count >= MAX_ENDPOINTS_PER_POOL:
            raise ValidationError(
                f"A pool has at most {MAX_ENDPOINTS_PER_POOL} webhook endpoints.",
                error="too_many_endpoints",
            )
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (id, pool_id, url, description, events, secret_enc) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}",
            endpoint_id,
            pool_id,
            url,
            description,
            chosen,
            box.encrypt(secret, secret_context(endpoint_id)),
        )
    return _endpoint(row), secret


async def update_endpoint(
    conn,
    settings: Settings,
    pool_id: int,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    """Change what is given. Enabling an endpoint (again) clears its failure record."""
    sets, args = ["updated_at = now()"], [pool_id, parse_endpoint_id(endpoint_id)]

    def put(expr: str, value: Any) -> None:
        args.append(value)
        sets.append(expr.replace("?", f"${len(args)}"))

    if url is not None:
        put("url = ?", check_url(settings, url))
    if events is not None:
        put("events = ?", check_events(events))
    if description is not None:
        put("description = ?", check_description(description))
    if enabled is True:
        sets.append("enabled = true, disabled_reason = NULL, disabled_at = NULL")
        sets.append("failing_since = NULL")
    elif enabled is False:
        sets.append(
            "enabled = false, disabled_reason = 'admin', "
            "disabled_at = CASE WHEN enabled THEN now() ELSE disabled_at END"
        )
    row = await conn.fetchrow(
        f"UPDATE webhook_endpoints SET {', '.join(sets)} WHERE pool_id = $1 AND id = $2 "
        f"RETURNING {_ENDPOINT_COLUMNS}",
        *args,
    )
    if row is None:
        raise NotFound("No such webhook endpoint.")
    return _endpoint(row)


async def rotate_secret(conn, box: SecretBox, pool_id: int, endpoint_id: str) -> str:
    eid = parse_endpoint_id(endpoint_id)
    secret = new_secret()
    done = await conn.fetchval(
        "UPDATE webhook_endpoints SET secret_enc = $3, updated_at = now() "
        "WHERE pool_id = $1 AND id = $2 RETURNING true",
        pool_id,
        eid,
        box.encrypt(secret, secret_context(eid)),
    )
    if not done:
        raise NotFound("No such webhook endpoint.")
    return secret


async def delete_endpoint(conn, pool_id: int, endpoint_id: str) -> None:
    done = await conn.fetchval(
        "DELETE FROM webhook_endpoints WHERE pool_id = $1 AND id = $2 RETURNING true",
        pool_id,
        parse_endpoint_id(endpoint_id),
    )
    if not done:
        raise NotFound("No such webhook endpoint.")


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, d.status, d.attempts, d.last_attempt_at, d.created_at, "
    "ev.type AS event_type"
)


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d["endpoint_id"] = str(d["endpoint_id"])
    d["event_id"] = str(d["event_id"])
    return d


async def list_deliveries(
    conn, pool_id: int, endpoint_id: str, *, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """An endpoint's deliveries, newest first; ``before``: a delivery id, for the next page."""
    await get_endpoint(conn, pool_id, endpoint_id)
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id "
        "WHERE d.pool_id = $1 AND d.endpoint_id = $2 AND ($3::bigint IS NULL OR d.id < $3) "
        "ORDER BY d.id DESC LIMIT $4",
        pool_id,
        parse_endpoint_id(endpoint_id),
        before,
        max(1, min(limit, 200)),
    )
    return [_delivery(r) for r in rows]


async def get_delivery(conn, pool_id: int, delivery_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS}, ev.data AS event_data, ev.created_at AS event_created_at "
        "FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id "
        "WHERE d.pool_id = $1 AND d.id = $2",
        pool_id,
        delivery_id,
    )
    if row is None:
        raise NotFound("No such delivery.")
    delivery = _delivery(row)
    attempts = await conn.fetch(
        "SELECT id, attempted_at, status_code, error, latency_ms, response_excerpt, replay "
        "FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
    delivery["attempts_log"] = [dict(a) for a in attempts]
    return delivery


async def replay(conn: asyncpg.Connection, pool_id: int, delivery_id: int) -> int:
    """Send a delivery again (the same webhook-id and payload, a new signature): one
    more attempt now, retried as any delivery. A replay already waiting is not doubled."""
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE webhook_deliveries SET status = 'pending' "
            "WHERE pool_id = $1 AND id = $2 RETURNING id",
            pool_id,
            delivery_id,
        )
        if found is None:
            raise NotFound("No such delivery.")
        await jobs.defer(
            conn,
            DELIVER_TASK,
            queue=QUEUE,
            queueing_lock=f"webhooks.replay:{delivery_id}",
            delivery_id=delivery_id,
            replay=True,
        )
    return delivery_id


async def failing_endpoints(conn, pool_id: int) -> list[dict[str, Any]]:
    """Endpoints the portal disabled for failing: the console's notice."""
    return [
        e
        for e in await list_endpoints(conn, pool_id)
        if not e["enabled"] and e["disabled_reason"] == "failing"
    ]


def as_json(endpoint: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as the API shows it (times in ISO 8601)."""
    out = dict(endpoint)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
