"""Who is logging in: find or register the user of a WeChat identity in a pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from portal.errors import PortalError
from portal.obs.metrics import LOGINS
from portal.tenants.pools import Pool

log = logging.getLogger(__name__)

USER_COLUMNS = """id, pool_id, nickname, avatar_url, phone_number, phone_country_code, blocked,
    created_at, last_login_at"""


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


async def login(
    conn: asyncpg.Connection,
    pool: Pool,
    *,
    appid: str,
    openid: str,
    unionid: str | None,
    phone: Phone | None,
    nickname: str | None,
    avatar_url: str | None,
) -> LoginResult:
    """Find or create the user; the caller holds the transaction (and rolls it
    back if anything after this fails, so a refused login writes nothing)."""
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
            nickname,
            avatar_url,
            phone.number if phone else None,
            phone.country_code if phone else None,
        )
        created = link = True
    user = dict(row)
    if user["blocked"]:
        raise UserBlocked()
    if pool.phone_required and phone is None and not user["phone_number"]:
        raise PhoneRequired()
    if link:
        await conn.execute(
            """INSERT INTO wechat_identities (pool_id, user_id, appid, openid, unionid)
               VALUES ($1, $2, $3, $4, $5)""",
            pool.id,
            user["id"],
            appid,
            openid,
            unionid,
        )
    # One round trip for both: the identity's last login, and the user's profile.
    row = await conn.fetchrow(
        f"""WITH identity AS (
                UPDATE wechat_identities SET last_login_at = now(), unionid = coalesce(unionid, $8)
                WHERE pool_id = $6 AND appid = $7 AND openid = $9)
            UPDATE users SET
                nickname = coalesce($2, nickname),
                avatar_url = coalesce($3, avatar_url),
                phone_number = coalesce($4, phone_number),
                phone_country_code = coalesce($5, phone_country_code),
                last_login_at = now(),
                updated_at = CASE WHEN $2::text IS NULL AND $3::text IS NULL AND $4::text IS NULL
                             THEN updated_at ELSE now() END
            WHERE id = $1 RETURNING {USER_COLUMNS}""",
        user["id"],
        nickname,
        avatar_url,
        phone.number if phone else None,
        phone.country_code if phone else None,
        pool.id,
        appid,
        unionid,
        openid,
    )
    return LoginResult(dict(row), created)


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, pool_id: int, user_id: str
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE pool_id = $1 AND id = $2", pool_id, user_id
    )
    return dict(row) if row else None


async def record_event(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    pool_id: int,
    result: str,
    user_id: Any = None,
    client_id: str | None = None,
    appid: str | None = None,
    openid: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """One row per login attempt, successful or refused. Inside the login's own
    transaction it is part of it (it commits with the login or not at all);
    apart from one, a failure to record never fails the request."""
    LOGINS.labels(result).inc()
    if isinstance(conn, asyncpg.Connection) and conn.is_in_transaction():
        await _insert_event(
            conn, pool_id, result, user_id, client_id, appid, openid, ip, user_agent
        )
        return
    try:
        await _insert_event(
            conn, pool_id, result, user_id, client_id, appid, openid, ip, user_agent
        )
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not record a login event (%s)", type(exc).__name__)


async def _insert_event(
    conn, pool_id, result, user_id, client_id, appid, openid, ip, user_agent
) -> None:
    await conn.execute(
        """INSERT INTO login_events (pool_id, user_id, client_id, appid, openid, result, ip, user_agent)
               VALUES ($1, $2, $3, $4, $5, $6, $7::inet, $8)""",
        pool_id,
        user_id,
        client_id,
        appid,
        openid,
        result,
        ip,
        (user_agent or "")[:500] or None,
    )
