"""What the console reads and changes in PostgreSQL. Every query of a pool's data
takes the pool id; the caller has already checked that the admin may see the pool."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from portal import jobs
from portal.errors import Conflict, NotFound, ValidationError
from portal.oidc import logout as rp_logout
from portal.oidc import tokens
from portal.stores.crypto import SecretBox
from portal.tenants import admins, clients, keys, pools
from portal.tenants.pools import Pool

# --- admins --------------------------------------------------------------------


@dataclass(frozen=True)
class AdminRow:
    id: int
    email: str
    is_superadmin: bool
    password_hash: str
    disabled: bool


async def admin_by_email(conn: asyncpg.Pool | asyncpg.Connection, email: str) -> AdminRow | None:
    row = await conn.fetchrow(
        "SELECT id, email, is_superadmin, password_hash, disabled FROM admins WHERE email = $1",
        email.strip().lower(),
    )
    return AdminRow(**dict(row)) if row else None


async def active_admin(
    conn: asyncpg.Pool | asyncpg.Connection, admin_id: int
) -> admins.Admin | None:
    row = await conn.fetchrow(
        "SELECT id, email, is_superadmin FROM admins WHERE id = $1 AND NOT disabled", admin_id
    )
    return admins.Admin(**dict(row)) if row else None


async def record_admin_login(conn: asyncpg.Pool | asyncpg.Connection, admin_id: int) -> None:
    await conn.execute("UPDATE admins SET last_login_at = now() WHERE id = $1", admin_id)


async def pools_of(conn: asyncpg.Pool | asyncpg.Connection, admin: admins.Admin) -> list[dict]:
    rows = await conn.fetch(
        """SELECT p.slug, p.name, p.logo_sha256, p.mp_appid,
                  (SELECT count(*) FROM users u WHERE u.pool_id = p.id) AS users
           FROM pools p
           WHERE $1 OR EXISTS (SELECT 1 FROM pool_admins pa
                               WHERE pa.pool_id = p.id AND pa.admin_id = $2)
           ORDER BY p.name, p.slug""",
        admin.is_superadmin,
        admin.id,
    )
    return [dict(r) for r in rows]


async def pool_of(
    conn: asyncpg.Pool | asyncpg.Connection, admin: admins.Admin, slug: str
) -> Pool | None:
    """The pool, if this admin may see it; otherwise None, whether or not it exists."""
    if not pools.SLUG_RE.match(slug):
        return None
    pool = await pools.get_by_slug(conn, slug)
    if pool is None or admin.is_superadmin:
        return pool
    member = await conn.fetchval(
        "SELECT 1 FROM pool_admins WHERE pool_id = $1 AND admin_id = $2", pool.id, admin.id
    )
    return pool if member else None


async def admins_of_pool(conn: asyncpg.Pool | asyncpg.Connection, pool_id: int) -> list[dict]:
    rows = await conn.fetch(
        """SELECT a.id, a.email, a.last_login_at FROM admins a
           JOIN pool_admins pa ON pa.admin_id = a.id WHERE pa.pool_id = $1 ORDER BY a.email""",
        pool_id,
    )
    return [dict(r) for r in rows]


async def add_pool_admin(
    conn: asyncpg.Connection, pool_id: int, email: str, password: str | None
) -> bool:
    """Adds an existing admin to the pool, or creates one (``password`` needed then).
    Returns whether a new admin was created."""
    email = admins.normalize_email(email)
    async with conn.transaction():
        admin_id = await conn.fetchval("SELECT id FROM admins WHERE email = $1", email)
        created = False
        if admin_id is None:
            if not password:
                raise ValidationError("a new admin needs a password", error="password_required")
            admin_id = await conn.fetchval(
                "INSERT INTO admins (email, password_hash) VALUES ($1, $2) RETURNING id",
                email,
                await admins.hash_password_async(password),
            )
            created = True
        await conn.execute(
            "INSERT INTO pool_admins (pool_id, admin_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            pool_id,
            admin_id,
        )
    return created


async def remove_pool_admin(conn: asyncpg.Connection, pool_id: int, admin_id: int) -> bool:
    result = await conn.execute(
        "DELETE FROM pool_admins WHERE pool_id = $1 AND admin_id = $2", pool_id, admin_id
    )
    return result.endswith(" 1")


# --- pool settings ---------------------------------------------------------------

_SETTABLE = frozenset(
    {
        "name",
        "callback_url",
        "phone_required",
        "login_only",
        "link_by_phone",
        "qr_lifetime",
        "id_token_ttl",
        "access_token_ttl",
        "refresh_token_ttl",
        "id_token_alg",
        "logo_shape",
        "qr_type",
        "qr_fallback",
        "scan_reveal",
        "scan_source_policy",
        "number_match",
    }
)


async def update_pool(
    conn: asyncpg.Connection, box: SecretBox, pool: Pool, changes: dict[str, Any]
) -> Pool:
    """Applies validated settings in one transaction. A new callback URL is also
    registered on the default client (the hosted page sends the browser there);
    a new ID token algorithm gets a signing key of that algorithm at once."""
    unknown = set(changes) - _SETTABLE
    if unknown:
        raise ValueError(f"not settable: {sorted(unknown)}")
    if not changes:
        return pool
    columns = sorted(changes)
    assignments = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
    async with conn.transaction():
        await conn.execute(
            f"UPDATE pools SET {assignments}, updated_at = now() WHERE id = $1",
            pool.id,
            *(changes[c] for c in columns),
        )
        callback = changes.get("callback_url")
        if callback:
            await conn.execute(
                """UPDATE clients SET redirect_uris = array_append(redirect_uris, $2),
                          updated_at = now()
                   WHERE pool_id = $1 AND is_default AND NOT ($2 = ANY(redirect_uris))""",
                pool.id,
                callback,
            )
        if "id_token_alg" in changes and changes["id_token_alg"] != pool.id_token_alg:
            await keys.rotate(conn, box, pool.id)
        changed = sorted(c for c in changes if getattr(pool, c, None) != changes[c])
        if changed:  # the pool's webhooks (docs/webhooks.md), with this transaction
            await jobs.emit(conn, pool.id, "settings.updated", {"fields": changed})
    updated = await pools.get_by_id(conn, pool.id)
    assert updated is not None
    return updated


async def set_logo(conn: asyncpg.Connection, pool_id: int, png: bytes | None) -> None:
    digest = hashlib.sha256(png).hexdigest() if png is not None else None
    await conn.execute(
        "UPDATE pools SET logo_png = $2, logo_sha256 = $3, updated_at = now() WHERE id = $1",
        pool_id,
        png,
        digest,
    )


async def set_mini_program(
    conn: asyncpg.Connection, box: SecretBox, pool: Pool, appid: str | None, secret: str | None
) -> None:
    """``appid`` None: the platform's default. ``secret`` None with the same appid
    as now: keep the stored secret (the form never shows it)."""
    if appid is None:
        await conn.execute(
            "UPDATE pools SET mp_appid = NULL, mp_secret_enc = NULL, updated_at = now() "
            "WHERE id = $1",
            pool.id,
        )
        return
    if secret is None:
        if appid != pool.mp_appid:
            raise ValidationError("a new AppID needs its AppSecret", error="secret_required")
        return
    # Proven with WeChat by the caller (pools.prove_mini_program); one statement,
    # refused with MiniProgramTaken when the AppID is another pool's.
    await pools.save_mini_program(conn, box, pool.id, appid, secret)


async def signing_keys(conn: asyncpg.Pool | asyncpg.Connection, pool_id: int) -> list[dict]:
    rows = await conn.fetch(
        """SELECT kid, alg, active, created_at, retired_at, publish_until FROM signing_keys
           WHERE pool_id = $1 AND (active OR publish_until > now())
           ORDER BY active DESC, created_at DESC""",
        pool_id,
    )
    return [dict(r) for r in rows]


# --- clients ---------------------------------------------------------------------


async def list_clients(
    conn: asyncpg.Pool | asyncpg.Connection, pool_id: int
) -> list[clients.Client]:
    rows = await conn.fetch(
        """SELECT client_id FROM clients WHERE pool_id = $1
           ORDER BY is_default DESC, created_at, id""",
        pool_id,
    )
    out = []
    for row in rows:
        client = await clients.get(conn, pool_id, row["client_id"])
        if client is not None:
            out.append(client)
    return out


async def update_client(
    conn: asyncpg.Connection,
    pool_id: int,
    client_id: str,
    *,
    name: str,
    redirect_uris: list[str],
    post_logout_redirect_uris: list[str],
    web_origins: list[str],
    scopes: list[str] | None = None,
    management_scopes: list[str] | None = None,
) -> None:
    """``scopes``, ``management_scopes`` (a management client's): None leaves
    them as they are."""
    result = await conn.execute(
        """UPDATE clients SET name = $3, redirect_uris = $4, post_logout_redirect_uris = $5,
                  web_origins = $6, scopes = coalesce($7, scopes),
                  management_scopes = coalesce($8, management_scopes), updated_at = now()
           WHERE pool_id = $1 AND client_id = $2""",
        pool_id,
        client_id,
        name,
        redirect_uris,
        post_logout_redirect_uris,
        web_origins,
        scopes,
        management_scopes,
    )
    if result.endswith(" 0"):
        raise NotFound()


async def _sealed_secret(
    conn: asyncpg.Connection, box: SecretBox, pool_id: int, client_id: str, secret: str
) -> bytes | None:
    pk = await conn.fetchval(
        "SELECT id FROM clients WHERE pool_id = $1 AND client_id = $2", pool_id, client_id
    )
    return None if pk is None else box.encrypt(secret, f"{clients.SECRET_CONTEXT}:{pk}")


async def rotate_client_secret(
    conn: asyncpg.Connection, box: SecretBox, pool_id: int, client_id: str
) -> str:
    secret = secrets.token_urlsafe(32)
    # Kept encrypted beside the hash too, for client_secret_jwt (clients.seal_secret).
    result = await conn.execute(
        """UPDATE clients SET secret_hash = $3, updated_at = now(),
                  secret_jwt_enc = $4::bytea
           WHERE pool_id = $1 AND client_id = $2 AND NOT is_public""",
        pool_id,
        client_id,
        box.hash_secret(secret),
        await _sealed_secret(conn, box, pool_id, client_id, secret),
    )
    if result.endswith(" 0"):
        raise Conflict("a public client has no secret", error="public_client")
    return secret


async def delete_client(conn: asyncpg.Connection, pool_id: int, client_id: str) -> None:
    result = await conn.execute(
        "DELETE FROM clients WHERE pool_id = $1 AND client_id = $2 AND NOT is_default",
        pool_id,
        client_id,
    )
    if result.endswith(" 0"):
        raise Conflict("the default client cannot be deleted", error="default_client")
    await jobs.emit(conn, pool_id, "client.deleted", {"client_id": client_id})


# --- users -----------------------------------------------------------------------

USER_PAGE = 50
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def parse_uuid(value: str) -> uuid.UUID | None:
    if not _UUID_RE.match(value or ""):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _user_search(pool_id: int, q: str) -> tuple[str, list[Any]]:
    """The WHERE clause of a user search (the console's and the management API's)."""
    q = q.strip()
    where, args = "pool_id = $1", [pool_id]
    if q:
        user_id = parse_uuid(q)
        if user_id is not None:
            where += " AND id = $2"
            args.append(user_id)
        elif q.isdigit():
            where += " AND (phone_number LIKE $2 OR nickname ILIKE $2)"
            args.append(f"%{_like(q)}%")
        else:
            where += " AND nickname ILIKE $2"
            args.append(f"%{_like(q)}%")
    return where, args


async def search_users(
    conn: asyncpg.Pool | asyncpg.Connection, pool_id: int, q: str, page: int
) -> tuple[list[dict], bool]:
    """A page of users, newest first, and whether there are more. ``q``: a user id,
    digits of a phone number, or part of a nickname."""
    where, args = _user_search(pool_id, q)
    rows = await conn.fetch(
        f"""SELECT id, nickname, avatar_url, phone_number, blocked, created_at, last_login_at
            FROM users WHERE {where} ORDER BY created_at DESC, id
            LIMIT {USER_PAGE + 1} OFFSET {max(0, page - 1) * USER_PAGE}""",
        *args,
    )
    return [dict(r) for r in rows[:USER_PAGE]], len(rows) > USER_PAGE


USER_FIELDS = """id, nickname, avatar_url, phone_number, phone_country_code, blocked,
    created_at, updated_at, last_login_at"""


async def users_after(
    conn: asyncpg.Pool | asyncpg.Connection,
    pool_id: int,
    q: str,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[list[dict], bool]:
    """A search as ``search_users``, newest first, by keyset: the ``limit`` users
    after ``after`` (the created_at and id of the last one of the previous page),
    and whether there are more. Page 1000 costs what page 1 does."""
    where, args = _user_search(pool_id, q)
    if after is not None:
        args += list(after)
        where += f" AND (created_at, id) < (${len(args) - 1}, ${len(args)})"
    rows = await conn.fetch(
        f"""SELECT {USER_FIELDS} FROM users WHERE {where}
            ORDER BY created_at DESC, id DESC LIMIT {int(limit) + 1}""",
        *args,
    )
    return [dict(r) for r in rows[:limit]], len(rows) > limit


# What an admin or a management client may change of a user's profile.
PROFILE_FIELDS = ("nickname", "avatar_url", "phone_number", "phone_country_code")


async def create_user(conn: asyncpg.Connection, pool_id: int, profile: dict[str, Any]) -> dict:
    """A user made by hand (no WeChat identity yet: with ``link_by_phone`` their
    first scan with that phone number becomes theirs). ``profile``: validated."""
    unknown = set(profile) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not a profile field: {sorted(unknown)}")
    row = await conn.fetchrow(
        f"""INSERT INTO users (pool_id, nickname, avatar_url, phone_number, phone_country_code)
            VALUES ($1, $2, $3, $4, $5) RETURNING {USER_FIELDS}""",
        pool_id,
        profile.get("nickname"),
        profile.get("avatar_url"),
        profile.get("phone_number"),
        profile.get("phone_country_code") or ("86" if profile.get("phone_number") else None),
    )
    await jobs.emit(conn, pool_id, "user.created", {"user_id": str(row["id"])})
    return dict(row)


async def update_user(
    conn: asyncpg.Connection, pool_id: int, user_id: uuid.UUID, changes: dict[str, Any]
) -> tuple[dict, dict]:
    """Changes profile fields (validated by the caller) in one transaction;
    returns the user before and after. NotFound when the pool has no such user."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not a profile field: {sorted(unknown)}")
    async with conn.transaction():
        before = await conn.fetchrow(
            f"SELECT {USER_FIELDS} FROM users WHERE pool_id = $1 AND id = $2 FOR UPDATE",
            pool_id,
            user_id,
        )
        if before is None:
            raise NotFound("No such user.", error="user_not_found")
        if not changes:
            return dict(before), dict(before)
        columns = sorted(changes)
        assignments = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
        after = await conn.fetchrow(
            f"""UPDATE users SET {assignments}, updated_at = now()
                WHERE pool_id = $1 AND id = $2 RETURNING {USER_FIELDS}""",
            pool_id,
            user_id,
            *(changes[c] for c in columns),
        )
        await jobs.emit(conn, pool_id, "user.updated", {"user_id": str(user_id), "fields": columns})
    return dict(before), dict(after)


async def identities_of(
    conn: asyncpg.Pool | asyncpg.Connection, pool_id: int, user_id: uuid.UUID
) -> list[dict]:
    rows = await conn.fetch(
        """SELECT id, appid, openid, unionid, created_at, last_login_at FROM wechat_identities
           WHERE pool_id = $1 AND user_id = $2 ORDER BY created_at, id""",
        pool_id,
        user_id,
    )
    return [dict(r) for r in rows]


async def unlink_identity(
    conn: asyncpg.Connection, pool_id: int, user_id: uuid.UUID, identity_id: int
) -> dict:
    """Removes one WeChat identity from a user (their next scan with it registers
    or links anew); returns it. NotFound when the user has no such identity."""
    row = await conn.fetchrow(
        """DELETE FROM wechat_identities WHERE pool_id = $1 AND user_id = $2 AND id = $3
           RETURNING id, appid, openid, unionid, created_at, last_login_at""",
        pool_id,
        user_id,
        identity_id,
    )
    if row is None:
        raise NotFound("No such identity.", error="identity_not_found")
    return dict(row)


async def user_detail(
    conn: asyncpg.Pool | asyncpg.Connection, pool_id: int, user_id: uuid.UUID
) -> dict | None:
    row = await conn.fetchrow(
        """SELECT id, nickname, avatar_url, phone_number, phone_country_code, blocked,
                  created_at, updated_at, last_login_at
           FROM users WHERE pool_id = $1 AND id = $2""",
        pool_id,
        user_id,
    )
    if row is None:
        return None
    user = dict(row)
    user["identities"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT appid, openid, unionid, created_at, last_login_at FROM wechat_identities
               WHERE pool_id = $1 AND user_id = $2 ORDER BY created_at""",
            pool_id,
            user_id,
        )
    ]
    user["logins"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT created_at, result, client_id, host(ip) AS ip, user_agent FROM login_events
               WHERE pool_id = $1 AND user_id = $2 ORDER BY created_at DESC LIMIT 20""",
            pool_id,
            user_id,
        )
    ]
    user["active_tokens"] = await conn.fetchval(
        """SELECT count(*) FROM refresh_tokens WHERE pool_id = $1 AND user_id = $2
           AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > now()""",
        pool_id,
        user_id,
    )
    return user


async def set_blocked(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    pool: Pool,
    user_id: uuid.UUID,
    blocked: bool,
) -> int:
    """Block or unblock; blocking revokes every refresh token family of the user
    (and denies their access tokens). Returns the families revoked."""
    async with conn.transaction():
        result = await conn.execute(
            "UPDATE users SET blocked = $3, updated_at = now() WHERE pool_id = $1 AND id = $2",
            pool.id,
            user_id,
            blocked,
        )
        if result.endswith(" 0"):
            raise NotFound()
        event = "user.blocked" if blocked else "user.unblocked"
        await jobs.emit(conn, pool.id, event, {"user_id": str(user_id)})
        if not blocked:
            return 0
        families = await conn.fetch(
            """SELECT DISTINCT family_id FROM refresh_tokens
               WHERE pool_id = $1 AND user_id = $2 AND revoked_at IS NULL""",
            pool.id,
            user_id,
        )
        for row in families:
            await tokens.revoke_family(conn, redis, pool, str(row["family_id"]))
        # Back-channel logout (issue 18): each client that registered for it hears,
        # by the worker, that every login of this person has ended.
        await rp_logout.notify_user(conn, pool.id, str(user_id))
    return len(families)


# --- the login log ---------------------------------------------------------------

LOGIN_PAGE = 50
RESULTS_OK = ("success", "signup")


@dataclass(frozen=True)
class LoginFilter:
    result: str = ""  # "", "ok", "refused", or one exact result code
    client_id: str = ""
    user_id: uuid.UUID | None = None
    since: date | None = None
    until: date | None = None  # inclusive
    flagged: bool = False  # only attempts that look like phishing (issue 20)

    def where(self, pool_id: int) -> tuple[str, list[Any]]:
        clauses, args = ["e.pool_id = $1"], [pool_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.result == "ok":
            clauses.append(f"e.result = ANY({arg(list(RESULTS_OK))})")
        elif self.result == "refused":
            clauses.append(f"NOT (e.result = ANY({arg(list(RESULTS_OK))}))")
        elif self.result:
            clauses.append(f"e.result = {arg(self.result)}")
        if self.client_id:
            clauses.append(f"e.client_id = {arg(self.client_id)}")
        if self.user_id is not None:
            clauses.append(f"e.user_id = {arg(self.user_id)}")
        if self.since is not None:
            clauses.append(f"e.created_at >= {arg(_midnight(self.since))}")
        if self.until is not None:
            clauses.append(f"e.created_at < {arg(_midnight(self.until + timedelta(days=1)))}")
        if self.flagged:
            clauses.append("e.flagged")  # login_events_flagged_idx (sql/0011)
        return " AND ".join(clauses), args


# The days a filter or a cursor may name. Anything else is a form error, never a
# value that overflows Python's datetime or PostgreSQL's timestamptz on the way
# (issue 16: until=9999-12-31 answered 500).
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)
_CURSOR_ID_RE = re.compile(r"[0-9]{1,18}")  # ASCII only: "²".isdigit() is true


def parse_day(value: str) -> date | None:
    """A filter's day (``YYYY-MM-DD``), or None when it is not one we can query."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return day if FIRST_DAY <= day <= LAST_DAY else None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_EVENT_COLUMNS = """e.id, e.created_at, e.result, e.user_id, u.nickname, e.client_id, e.appid,
    e.openid, host(e.ip) AS ip, e.user_agent, e.flagged, e.scene, e.scan_source, e.started_from"""


def cursor_of(row: dict) -> str:
    return f"{row['created_at'].isoformat()}~{row['id']}"


def parse_cursor(value: str) -> tuple[datetime, int] | None:
    when, _, ident = value.partition("~")
    try:
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None or not _CURSOR_ID_RE.fullmatch(ident):
            return None
        moment = moment.astimezone(UTC)  # 0001-01-01T00:00+14:00 has no UTC time
    except (ValueError, OverflowError):
        return None
    if not FIRST_DAY <= moment.date() <= LAST_DAY:
        return None
    return moment, int(ident)


async def login_events(
    conn: asyncpg.Pool | asyncpg.Connection,
    pool_id: int,
    flt: LoginFilter,
    before: tuple[datetime, int] | None,
) -> tuple[list[dict], str | None]:
    """A page of the log, newest first, and the cursor of the next page (None: the end).
    Keyset pagination: page 1000 costs what page 1 does."""
    where, args = flt.where(pool_id)
    if before is not None:
        args += list(before)
        where += f" AND (e.created_at, e.id) < (${len(args) - 1}, ${len(args)})"
    rows = await conn.fetch(
        f"""SELECT {_EVENT_COLUMNS} FROM login_events e LEFT JOIN users u ON u.id = e.user_id
            WHERE {where} ORDER BY e.created_at DESC, e.id DESC LIMIT {LOGIN_PAGE + 1}""",
        *args,
    )
    page = [dict(r) for r in rows[:LOGIN_PAGE]]
    return page, (cursor_of(page[-1]) if len(rows) > LOGIN_PAGE else None)


async def iter_login_events(
    conn: asyncpg.Connection, pool_id: int, flt: LoginFilter
) -> AsyncIterator[asyncpg.Record]:
    """Every matching event, newest first, through a server-side cursor (the caller
    holds a transaction), so an export of a million rows never sits in memory."""
    where, args = flt.where(pool_id)
    async for row in conn.cursor(
        f"""SELECT {_EVENT_COLUMNS} FROM login_events e LEFT JOIN users u ON u.id = e.user_id
            WHERE {where} ORDER BY e.created_at DESC, e.id DESC""",
        *args,
        prefetch=500,
    ):
        yield row


async def result_codes(conn: asyncpg.Pool | asyncpg.Connection, pool_id: int) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT result FROM login_events
           WHERE pool_id = $1 AND created_at > now() - interval '90 days' ORDER BY result""",
        pool_id,
    )
    return [r["result"] for r in rows]


async def logins_per_day(
    conn: asyncpg.Pool | asyncpg.Connection, pool_id: int, days: int = 30
) -> list[tuple[date, int, int]]:
    """(day, successful logins, refused attempts) for each of the last ``days`` days
    (UTC), today included, zeros filled in."""
    rows = await conn.fetch(
        """SELECT d::date AS day,
                  count(e.id) FILTER (WHERE e.result = ANY($3)) AS ok,
                  count(e.id) FILTER (WHERE NOT (e.result = ANY($3))) AS refused
           FROM generate_series((now() AT TIME ZONE 'UTC')::date - ($2::int - 1),
                                (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d
           LEFT JOIN login_events e
             ON e.pool_id = $1
            AND e.created_at >= d AT TIME ZONE 'UTC'
            AND e.created_at < (d + interval '1 day') AT TIME ZONE 'UTC'
           GROUP BY d ORDER BY d""",
        pool_id,
        days,
        list(RESULTS_OK),
    )
    return [(r["day"], r["ok"], r["refused"]) for r in rows]
