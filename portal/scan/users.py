"""Who is logging in: find or register the user of a WeChat identity in a pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from portal import jobs
from portal.errors import PortalError
from portal.obs.metrics import LOGINS
from portal.tenants.pools import Pool

log = logging.getLogger(__name__)

USER_COLUMNS = """id, pool_id, nickname, avatar_url, phone_number, phone_country_code, blocked,
    created_at, last_login_at, updated_at"""


class LoginRefused(PortalError):
    status_code = 403


class SignupDisabled(LoginRefused):
    error = "signup_disabled"
    description = "This site accepts only existing users; sign-up is closed."


class UserBlocked(LoginRefused):
    error = "user_blocked"
    description = "This account is blocked."


class PhoneRequired(PortalError):
    status_code = 400
    error = "phone_required"
    description = "This site needs your phone number: share it to log in."


@dataclass(frozen=True)
class Phone:
    number: str  # digits, no country code
    country_code: str


@dataclass(frozen=True)
class LoginResult:
    user: dict[str, Any]
    created: bool
    event_id: int  # its login_events row, "signup" or "success"

    @property
    def result(self) -> str:
        return "signup" if self.created else "success"


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """The user object returned to websites."""
    return {
        "id": str(user["id"]),
        "nickname": user["nickname"],
        "avatar_url": user["avatar_url"],
        "phone_number": user["phone_number"],
        "phone_country_code": user["phone_country_code"],
        "created_at": user["created_at"].isoformat(),
    }


@dataclass(frozen=True)
class Profile:
    """What the mini program says of the person logging in (None: not said)."""

    unionid: str | None = None
    phone: Phone | None = None
    nickname: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True)
class LoginEvent:
    """Who tries to log in, where from: one ``login_events`` row per attempt."""

    pool_id: int
    client_id: str | None
    appid: str
    openid: str
    ip: str | None
    user_agent: str | None
    # Issue 20 (sql/0011_scan_origin.sql): the launch scene, what was made of it,
    # whether the attempt looks like phishing, and where the login was started.
    scene: int | None = None
    scan_source: str | None = None
    flagged: bool = False
    started_from: str | None = None

    @property
    def agent(self) -> str | None:
        return (self.user_agent or "")[:500] or None


# A login of an existing identity in one statement (one round trip, one commit):
# the identity's last login, the user's profile, and the login event. It
# touches nothing unless the login may go ahead: the identity exists, its user
# is not blocked, and a pool that needs a phone has one (on file or shared
# now); otherwise it returns no row.
_LOGIN = f"""
WITH identity AS (
    UPDATE wechat_identities i SET last_login_at = now(), unionid = coalesce(i.unionid, $7)
    FROM users u
    WHERE i.pool_id = $5 AND i.appid = $6 AND i.openid = $8 AND u.id = i.user_id
      AND NOT u.blocked AND (NOT $9 OR $3::text IS NOT NULL OR u.phone_number IS NOT NULL)
    RETURNING i.user_id
), usr AS (
    UPDATE users SET
        nickname = coalesce($1, nickname),
        avatar_url = coalesce($2, avatar_url),
        phone_number = coalesce($3, phone_number),
        phone_country_code = coalesce($4, phone_country_code),
        last_login_at = now(),
        updated_at = CASE WHEN $1::text IS NULL AND $2::text IS NULL AND $3::text IS NULL
                     THEN updated_at ELSE now() END
    WHERE id = (SELECT user_id FROM identity) RETURNING {USER_COLUMNS}
), event AS (
    INSERT INTO login_events (pool_id, user_id, client_id, appid, openid, result, ip, user_agent,
                              scene, scan_source, started_from)
    SELECT $5, usr.id, $10, $6, $8, $13, $11::inet, $12, $14, $15, $16 FROM usr
    RETURNING id
), outbox AS (
    -- login.succeeded for the pool's webhooks (portal.jobs.emit's row, in this same
    -- statement; the outbox's trigger drops it when no endpoint subscribes).
    INSERT INTO events (pool_id, type, data)
    SELECT $5, 'login.succeeded', jsonb_build_object(
        'user_id', usr.id, 'client_id', $10::text, 'login_event_id', event.id,
        'signup', $13 = 'signup')
    FROM usr, event
)
SELECT usr.*, event.id AS event_id FROM usr, event"""


async def _login_identity(
    conn: asyncpg.Connection | asyncpg.Pool,
    pool: Pool,
    profile: Profile,
    event: LoginEvent,
    result: str,
) -> LoginResult | None:
    """``_LOGIN``: the login of an existing identity, recorded as ``result``;
    None (nothing written) when it may not go ahead as it stands."""
    phone = profile.phone
    row = await conn.fetchrow(
        _LOGIN,
        profile.nickname,
        profile.avatar_url,
        phone.number if phone else None,
        phone.country_code if phone else None,
        pool.id,
        event.appid,
        profile.unionid,
        event.openid,
        pool.phone_required,
        event.client_id,
        event.ip,
        event.agent,
        result,
        event.scene,
        event.scan_source,
        event.started_from,
    )
    if row is None:
        return None
    user = dict(row)
    event_id = user.pop("event_id")
    return LoginResult(user, result == "signup", event_id)


async def login(
    db: asyncpg.Pool,
    pool: Pool,
    profile: Profile,
    event: LoginEvent,
) -> LoginResult:
    """Find or register the user of ``event``'s WeChat identity, and record the
    login: the user and its event are committed together; a refused login
    (``LoginRefused``, ``PhoneRequired``) writes nothing but the refusal's
    event. The ticket is not touched: see ``mpapi.confirm``."""
    # A returning user (nearly every login): one statement.
    result = await _login_identity(db, pool, profile, event, "success")
    if result is not None:
        return result
    try:
        async with db.acquire() as conn, conn.transaction():
            return await _first_login(conn, pool, profile, event)
    except (LoginRefused, PhoneRequired) as exc:
        # The login's transaction rolled back: the refusal is recorded apart.
        await record_event(db, event, exc.error)
        raise


async def _first_login(
    conn: asyncpg.Connection,
    pool: Pool,
    profile: Profile,
    event: LoginEvent,
) -> LoginResult:
    """Register or link the identity, or refuse the login; inside the caller's
    transaction, which rolls back if anything fails."""
    appid, openid = event.appid, event.openid
    unionid, phone = profile.unionid, profile.phone
    # Two confirms of one WeChat user at once must not both register them.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{pool.id}:{appid}:{openid}"
    )
    row = await conn.fetchrow(
        f"""SELECT {", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))}
            FROM wechat_identities i JOIN users u ON u.id = i.user_id
            WHERE i.pool_id = $1 AND i.appid = $2 AND i.openid = $3""",
        pool.id,
        appid,
        openid,
    )
    created = False
    link = False
    if row is None and unionid:
        # The same person through another mini program of this pool.
        row = await conn.fetchrow(
            f"""SELECT {USER_COLUMNS} FROM users WHERE id = (
                    SELECT user_id FROM wechat_identities
                    WHERE pool_id = $1 AND unionid = $2 ORDER BY created_at LIMIT 1)""",
            pool.id,
            unionid,
        )
        link = row is not None
    if row is None and phone is not None and pool.link_by_phone:
        row = await conn.fetchrow(
            f"""SELECT {USER_COLUMNS} FROM users WHERE pool_id = $1 AND phone_number = $2
                ORDER BY created_at LIMIT 1""",
            pool.id,
            phone.number,
        )
        link = row is not None
    if row is None:
        if pool.login_only:
            raise SignupDisabled()
        if pool.phone_required and phone is None:
            raise PhoneRequired()
        row = await conn.fetchrow(
            f"""INSERT INTO users (pool_id, nickname, avatar_url, phone_number, phone_country_code)
                VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}""",
            pool.id,
            profile.nickname,
            profile.avatar_url,
            phone.number if phone else None,
            phone.country_code if phone else None,
        )
        created = link = True
        await jobs.emit(conn, pool.id, "user.created", {"user_id": str(row["id"])})
    if row["blocked"]:
        raise UserBlocked()
    if pool.phone_required and phone is None and not row["phone_number"]:
        raise PhoneRequired()
    if link:
        await conn.execute(
            """INSERT INTO wechat_identities (pool_id, user_id, appid, openid, unionid)
               VALUES ($1, $2, $3, $4, $5)""",
            pool.id,
            row["id"],
            appid,
            openid,
            unionid,
        )
    result = await _login_identity(conn, pool, profile, event, "signup" if created else "success")
    if result is None:  # the checks above passed under the lock: not for long
        raise UserBlocked()
    return result


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, pool_id: int, user_id: str
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE pool_id = $1 AND id = $2", pool_id, user_id
    )
    return dict(row) if row else None


def count(result: str) -> None:
    """The login attempts metric, by result (once per attempt, at its end)."""
    LOGINS.labels(result).inc()


_INSERT_REFUSAL = """INSERT INTO login_events (pool_id, client_id, appid, openid, result, ip,
                                           user_agent, scene, scan_source, flagged,
                                           started_from)
                     VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8, $9, $10, $11)"""


# A refusal and its login.failed event for the pool's webhooks, in one statement.
_INSERT_FAILURE = f"""WITH refusal AS ({_INSERT_REFUSAL} RETURNING id)
INSERT INTO events (pool_id, type, data)
SELECT $1, 'login.failed', jsonb_build_object(
    'client_id', $2::text, 'login_event_id', refusal.id, 'reason', $5::text)
FROM refusal"""


async def record_event(db: asyncpg.Pool, event: LoginEvent, result: str) -> None:
    """A refused login attempt, recorded apart from the login's own transaction
    (which rolled back), with its login.failed event; a failure to record it never
    fails the request."""
    count(result)
    await _best_effort(
        db, _INSERT_FAILURE, event.pool_id, event.client_id, event.appid, event.openid, result,
        event.ip, event.agent, event.scene, event.scan_source, event.flagged, event.started_from,
    )  # fmt: skip


async def record_suspicious(db: asyncpg.Pool, event: LoginEvent, result: str) -> None:
    """An attempt that looks like phishing (issue 20: "this wasn't me", a wrong
    number): its flagged ``login_events`` row and a ``login.suspicious`` event for
    the pool's webhooks, committed together; never fails the request."""
    count(result)
    try:
        async with db.acquire() as conn, conn.transaction():
            event_id = await conn.fetchval(
                _INSERT_REFUSAL + " RETURNING id",
                event.pool_id, event.client_id, event.appid, event.openid, result, event.ip,
                event.agent, event.scene, event.scan_source, True, event.started_from,
            )  # fmt: skip
            await jobs.emit(
                conn,
                event.pool_id,
                "login.suspicious",
                {
                    "login_event_id": event_id,
                    "reason": result,
                    "client_id": event.client_id,
                    "scene": event.scene,
                    "scan_source": event.scan_source,
                },
            )
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not record a suspicious login (%s)", type(exc).__name__)


async def mark_event(db: asyncpg.Pool, event_id: int, result: str) -> None:
    """A recorded login did not complete after all (its ticket ended meanwhile)."""
    count(result)
    await _best_effort(db, _MARK_FAILED, event_id, result)


# The login's event says how it ended, and login.failed follows its login.succeeded.
_MARK_FAILED = """WITH marked AS (
    UPDATE login_events SET result = $2 WHERE id = $1
    RETURNING pool_id, user_id, client_id, id
)
INSERT INTO events (pool_id, type, data)
SELECT pool_id, 'login.failed', jsonb_build_object(
    'user_id', user_id, 'client_id', client_id, 'login_event_id', id, 'reason', $2::text)
FROM marked"""


async def _best_effort(db: asyncpg.Pool, statement: str, *args: Any) -> None:
    try:
        await db.execute(statement, *args)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not record a login event (%s)", type(exc).__name__)
