"""Personal data as China's Personal Information Protection Law (PIPL) requires
(issue 19, part 5; docs/privacy.md): one user's deletion and export, the
retention of login events, and a whole pool's deletion.

Each change is one transaction with its audit row (portal.audit). The console
calls these; the management API calls the same functions for its routes
(``delete_user``, ``export_user``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from portal import audit, jobs
from portal.errors import NotFound, PortalError, ValidationError
from portal.oidc import tokens
from portal.tenants.pools import Pool

__all__ = [
    "DEFAULT_IP_RETENTION_DAYS",
    "DEFAULT_LOGIN_RETENTION_DAYS",
    "ConfirmationMismatch",
    "RetentionResult",
    "apply_retention",
    "delete_pool",
    "delete_user",
    "export_user",
    "set_retention",
]

# sql/0010_audit_privacy.sql's defaults and limits.
DEFAULT_LOGIN_RETENTION_DAYS = 180
DEFAULT_IP_RETENTION_DAYS = 30
RETENTION_MIN, RETENTION_MAX = 1, 3650

_AVATAR_RE = re.compile(r"/avatars/([0-9a-f]{64})\.png$")


class ConfirmationMismatch(PortalError):
    status_code = 400
    error = "confirmation_mismatch"
    description = "Type the pool's slug exactly to confirm its deletion."


def avatar_sha(avatar_url: str | None) -> str | None:
    """The stored avatar's name, when the URL is one of ours (``/avatars/{sha256}.png``)."""
    match = _AVATAR_RE.search(avatar_url or "")
    return match.group(1) if match else None


# An avatar is erased with its last user, in any pool (one row per content).
_DROP_AVATAR = """
DELETE FROM avatars a WHERE a.sha256 = $1
AND NOT EXISTS (SELECT 1 FROM users u WHERE u.avatar_url LIKE '%/avatars/' || a.sha256 || '.png')
"""


async def delete_user(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    pool: Pool,
    user_id: uuid.UUID,
    actor: audit.Actor,
) -> dict[str, int]:
    """Erases a user of ``pool``, in one transaction: their WeChat identities,
    phone number, nickname, avatar (when no other user has the same picture) and
    refresh tokens (every login family revoked first, so their access tokens are
    denied too). Their login events stay for the pool's statistics with only a
    pseudonym, a random id linked to nothing: user, openid, IP address, user
    agent and where the login was started (device, place) are erased. Their next scan registers a new user. The audit row and the
    ``user.deleted`` event (webhooks) are written in the same transaction.
    Returns counts; raises NotFound when the pool has no such user."""
    async with conn.transaction():
        user = await conn.fetchrow(
            "SELECT id, avatar_url, blocked FROM users WHERE pool_id = $1 AND id = $2 FOR UPDATE",
            pool.id,
            user_id,
        )
        if user is None:
            raise NotFound("No such user.", error="user_not_found")
        families = await conn.fetch(
            """SELECT DISTINCT family_id FROM refresh_tokens
               WHERE pool_id = $1 AND user_id = $2 AND revoked_at IS NULL""",
            pool.id,
            user_id,
        )
        for row in families:
            await tokens.revoke_family(conn, redis, pool, str(row["family_id"]))
        pseudonym = uuid.uuid4()
        # Their events, and the refused attempts of their identities that no user
        # was attached to (a blocked user's, a cancelled first scan's).
        events = await conn.execute(
            """UPDATE login_events e
               SET user_id = NULL, pseudonym = $3, openid = NULL, ip = NULL, user_agent = NULL,
                   started_from = NULL
               WHERE e.pool_id = $1 AND (e.user_id = $2 OR (e.user_id IS NULL AND
                     (e.appid, e.openid) IN (SELECT appid, openid FROM wechat_identities
                                             WHERE pool_id = $1 AND user_id = $2)))""",
            pool.id,
            user_id,
            pseudonym,
        )
        refresh = await conn.execute(
            "DELETE FROM refresh_tokens WHERE pool_id = $1 AND user_id = $2", pool.id, user_id
        )
        identities = await conn.execute(
            "DELETE FROM wechat_identities WHERE pool_id = $1 AND user_id = $2", pool.id, user_id
        )
        await conn.execute("DELETE FROM users WHERE pool_id = $1 AND id = $2", pool.id, user_id)
        sha = avatar_sha(user["avatar_url"])
        avatar = await conn.execute(_DROP_AVATAR, sha) if sha else "DELETE 0"
        counts = {
            "identities": _count(identities),
            "refresh_tokens": _count(refresh),
            "login_events_pseudonymized": _count(events),
            "avatar_erased": _count(avatar),
            "logins_ended": len(families),
        }
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=actor,
            action="user.delete",
            target=str(user_id),
            after=counts,
        )
        # The webhook event (the outbox): the user's id only.
        await jobs.emit(conn, pool.id, "user.deleted", {"user_id": str(user_id)})
    return counts


def _count(status: str) -> int:
    return int(status.split()[-1])


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def export_user(
    conn: asyncpg.Connection, pool: Pool, user_id: uuid.UUID, actor: audit.Actor
) -> dict[str, Any]:
    """Everything the portal keeps about one user of ``pool``, as JSON (the right
    of access and of portability): profile, WeChat identities, login events (all
    of them the pool still keeps) and the logins that can still be refreshed
    (never a token). The export itself is recorded in the audit trail."""
    async with conn.transaction(isolation="repeatable_read"):
        user = await conn.fetchrow(
            """SELECT id, nickname, avatar_url, phone_number, phone_country_code, blocked,
                      created_at, updated_at, last_login_at
               FROM users WHERE pool_id = $1 AND id = $2""",
            pool.id,
            user_id,
        )
        if user is None:
            raise NotFound("No such user.", error="user_not_found")
        identities = await conn.fetch(
            """SELECT appid, openid, unionid, created_at, last_login_at FROM wechat_identities
               WHERE pool_id = $1 AND user_id = $2 ORDER BY created_at, id""",
            pool.id,
            user_id,
        )
        events = await conn.fetch(
            """SELECT created_at, result, client_id, appid, openid, host(ip) AS ip, user_agent,
                      started_from, scene, scan_source, flagged
               FROM login_events WHERE pool_id = $1 AND user_id = $2
               ORDER BY created_at DESC, id DESC""",
            pool.id,
            user_id,
        )
        grants = await conn.fetch(
            """SELECT c.client_id, c.name AS client_name, t.scope, t.auth_time, t.created_at,
                      t.expires_at
               FROM refresh_tokens t JOIN clients c ON c.id = t.client_pk
               WHERE t.pool_id = $1 AND t.user_id = $2 AND t.revoked_at IS NULL
                 AND t.rotated_at IS NULL AND t.expires_at > now()
               ORDER BY t.created_at""",
            pool.id,
            user_id,
        )
        await audit.record(
            conn, pool_id=pool.id, actor=actor, action="user.export", target=str(user_id)
        )
    profile = {k: _iso(v) for k, v in dict(user).items()}
    profile["id"] = str(user["id"])
    return {
        "format": "portal.user-export.v1",
        "pool": pool.slug,
        "exported_at": _iso(await conn.fetchval("SELECT now()")),
        "user": profile,
        "wechat_identities": [{k: _iso(v) for k, v in dict(r).items()} for r in identities],
        "login_events": [{k: _iso(v) for k, v in dict(r).items()} for r in events],
        "active_logins": [{k: _iso(v) for k, v in dict(r).items()} for r in grants],
        "retention": {
            "login_events_days": pool.login_retention_days,
            "ip_and_user_agent_days": pool.ip_retention_days,
        },
    }


# --- retention -------------------------------------------------------------------


def check_retention(login_days: int, ip_days: int) -> None:
    for value in (login_days, ip_days):
        if not RETENTION_MIN <= value <= RETENTION_MAX:
            raise ValidationError(
                f"a retention period is {RETENTION_MIN} to {RETENTION_MAX} days",
                error="invalid_retention",
            )
    if ip_days > login_days:
        raise ValidationError(
            "IP addresses and user agents cannot be kept longer than the login events",
            error="invalid_retention",
        )


async def set_retention(
    conn: asyncpg.Connection, pool: Pool, login_days: int, ip_days: int, actor: audit.Actor
) -> None:
    """A pool's retention periods (days), with their audit row. The next run of
    the retention task applies them."""
    check_retention(login_days, ip_days)
    async with conn.transaction():
        before = await conn.fetchrow(
            """SELECT login_retention_days, ip_retention_days FROM pools WHERE id = $1
               FOR UPDATE""",
            pool.id,
        )
        if before is None:
            raise NotFound()
        await conn.execute(
            """UPDATE pools SET login_retention_days = $2, ip_retention_days = $3,
                      updated_at = now() WHERE id = $1""",
            pool.id,
            login_days,
            ip_days,
        )
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=actor,
            action="pool.update",
            target=pool.slug,
            before=dict(before),
            after={"login_retention_days": login_days, "ip_retention_days": ip_days},
        )


@dataclass(frozen=True)
class RetentionResult:
    pool_id: int
    slug: str
    events_deleted: int
    events_blanked: int


_BATCH = 5000

_DELETE_OLD = f"""
WITH doomed AS (
    SELECT id FROM login_events
    WHERE pool_id = $1 AND created_at < now() - make_interval(days => $2)
    LIMIT {_BATCH}
)
DELETE FROM login_events e USING doomed WHERE e.id = doomed.id
"""

_BLANK_OLD = f"""
WITH doomed AS (
    SELECT id FROM login_events
    WHERE pool_id = $1 AND created_at < now() - make_interval(days => $2)
      AND (ip IS NOT NULL OR user_agent IS NOT NULL OR started_from IS NOT NULL)
    LIMIT {_BATCH}
)
UPDATE login_events e SET ip = NULL, user_agent = NULL, started_from = NULL
FROM doomed WHERE e.id = doomed.id
"""


async def apply_retention(
    db: asyncpg.Pool | asyncpg.Connection, *, pool_id: int | None = None
) -> list[RetentionResult]:
    """Applies every pool's retention (or one pool's): login events older than
    its period are deleted, the IP address, user agent and where the login was
    started (device and place, from the browser's user agent and address) of
    those older than the shorter one are erased. In batches of a few thousand rows, each its own
    short transaction (a pool with millions of old events never holds a long
    lock), with one audit row per pool that lost anything. Safe to run at once
    in several places: each batch only touches rows still to do. Returns what
    it did, per pool."""
    if pool_id is None:
        rows = await db.fetch(
            "SELECT id, slug, login_retention_days, ip_retention_days FROM pools ORDER BY id"
        )
    else:
        rows = await db.fetch(
            """SELECT id, slug, login_retention_days, ip_retention_days FROM pools
               WHERE id = $1""",
            pool_id,
        )
    results = []
    for pool in rows:
        deleted = await _batches(db, _DELETE_OLD, pool["id"], pool["login_retention_days"])
        blanked = await _batches(db, _BLANK_OLD, pool["id"], pool["ip_retention_days"])
        if deleted or blanked:
            await audit.record(
                db,
                pool_id=pool["id"],
                actor=audit.Actor.system("retention"),
                action="logins.retention",
                after={
                    "events_deleted": deleted,
                    "events_blanked": blanked,
                    "login_retention_days": pool["login_retention_days"],
                    "ip_retention_days": pool["ip_retention_days"],
                },
            )
        results.append(RetentionResult(pool["id"], pool["slug"], deleted, blanked))
    return results


async def _batches(
    db: asyncpg.Pool | asyncpg.Connection, statement: str, pool_id: int, days: int
) -> int:
    total = 0
    while True:
        done = _count(await db.execute(statement, pool_id, days))
        total += done
        if done < _BATCH:
            return total


# --- a whole pool ----------------------------------------------------------------


async def delete_pool(
    conn: asyncpg.Connection, pool: Pool, confirmation: str, actor: audit.Actor
) -> dict[str, int]:
    """Deletes a pool and everything in it (clients, keys, users, identities,
    tokens, login events, its admins' membership; the avatars no one else uses),
    once ``confirmation`` is its slug typed out. Its audit trail stays, with this
    deletion as its last row. The caller announces the change (every process
    drops the pool from its caches) and checks the actor is a superadmin."""
    if confirmation.strip() != pool.slug:
        raise ConfirmationMismatch()
    async with conn.transaction():
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM users WHERE pool_id = $1) AS users,
                      (SELECT count(*) FROM clients WHERE pool_id = $1) AS clients,
                      (SELECT count(*) FROM login_events WHERE pool_id = $1) AS login_events""",
            pool.id,
        )
        avatars = await conn.fetch(
            """SELECT DISTINCT substring(avatar_url FROM '/avatars/([0-9a-f]{64})\\.png$') AS sha
               FROM users WHERE pool_id = $1 AND avatar_url LIKE '%/avatars/%'""",
            pool.id,
        )
        result = await conn.execute("DELETE FROM pools WHERE id = $1", pool.id)
        if result.endswith(" 0"):
            raise NotFound()
        erased = 0
        for row in avatars:
            if row["sha"]:
                erased += _count(await conn.execute(_DROP_AVATAR, row["sha"]))
        summary = {**dict(counts), "avatars_erased": erased}
        await audit.record(
            conn,
            pool_id=pool.id,
            pool_slug=pool.slug,
            actor=actor,
            action="pool.delete",
            target=pool.slug,
            before={"name": pool.name, **summary},
        )
    return summary
