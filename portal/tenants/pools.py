"""User pools: creation, lookup, and the in-process cache the host router reads."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from portal.errors import Conflict, ServiceUnavailable, ValidationError
from portal.stores.crypto import SecretBox
from portal.stores.events import POOLS_CHANNEL, EventHub
from portal.tenants import clients, keys
from portal.web import validation
from portal.web.validation import SLUG_RE
from portal.wechat.errors import ErrCode, WeChatError, WeChatUnavailable, whitelist_ip

APPID_RE = re.compile(r"^wx[0-9a-zA-Z]{16}$")
APPSECRET_RE = re.compile(r"^[0-9A-Za-z]{16,64}$")
QR_TYPES = ("link", "wxacode")
# What a ticket's status shows of a returning user who scanned and has not yet
# confirmed (sql/0006_scan_reveal.sql): nothing, the avatar, or nickname and avatar.
SCAN_REVEALS = ("none", "avatar", "profile")

# Subdomains that must never be a tenant: they are, or look like, the platform's own.
RESERVED_SLUGS = frozenset(
    """www api console admin administrator root login logout auth oauth oauth2 oidc sso
    account accounts id identity static assets cdn img images media files upload uploads
    mail email smtp imap pop ns ns1 ns2 mx ftp dev staging test demo-admin status health
    healthz readyz metrics docs help support billing blog app apps platform portal system
    default internal localhost wechat weixin mp security""".split()
)


@dataclass(frozen=True)
class Pool:
    id: int
    slug: str
    name: str
    logo_sha256: str | None
    logo_shape: str
    callback_url: str | None
    mp_appid: str | None  # None: the platform's default mini program
    phone_required: bool
    login_only: bool
    link_by_phone: bool
    qr_lifetime: int
    id_token_ttl: int
    access_token_ttl: int
    refresh_token_ttl: int
    id_token_alg: str
    updated_at: datetime
    scan_source_policy: str = "warn"  # SCAN_SOURCE_POLICIES: a PC's QR from an image or album
    number_match: bool = False  # the PC shows a number the person picks on the phone
    qr_type: str = "link"  # QR_TYPES: a link QR (segno) or a mini-program code (wxacode)
    qr_fallback: bool = True  # a failed mini-program code falls back to the link QR
    scan_reveal: str = "none"  # SCAN_REVEALS: what the PC page learns before confirmation
    mp_qr_prefix: str | None = None  # a private mini program's custom link-rule prefix
    # sql/0010_audit_privacy.sql: how long login events are kept, and their IP and user agent
    login_retention_days: int = 180
    ip_retention_days: int = 30

    @property
    def has_logo(self) -> bool:
        return self.logo_sha256 is not None


_COLUMNS = """id, slug, name, logo_sha256, logo_shape, callback_url, mp_appid, phone_required,
    login_only, link_by_phone, qr_lifetime, id_token_ttl, access_token_ttl, refresh_token_ttl,
    id_token_alg, updated_at, qr_type, qr_fallback, scan_reveal, mp_qr_prefix"""
# Issue 19 (sql/0010_audit_privacy.sql): the retention periods of login events.
_COLUMNS += ", login_retention_days, ip_retention_days"


# Issue 20 (sql/0011_scan_origin.sql): what a scan of a computer's QR code from an
# image or the album (a forwarded screenshot) gets, and number matching.
_COLUMNS += ", scan_source_policy, number_match"
SCAN_SOURCE_POLICIES = ("warn", "refuse")


def _pool(row: asyncpg.Record) -> Pool:
    return Pool(**dict(row))


def validate_slug(slug: str) -> str:
    if not SLUG_RE.match(slug):
        raise ValidationError(
            f"slug {slug!r} is not valid: use 1 to 32 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit",
            error="invalid_slug",
        )
    if slug in RESERVED_SLUGS:
        raise ValidationError(f"slug {slug!r} is reserved", error="invalid_slug")
    return slug


def mp_secret_context(pool_id: int) -> str:
    return f"pool:{pool_id}:mp_secret"


@dataclass(frozen=True)
class CreatedPool:
    pool: Pool
    default_client: clients.Client
    default_client_secret: str


async def create(
    conn: asyncpg.Connection,
    box: SecretBox,
    *,
    slug: str,
    name: str,
    callback_url: str | None = None,
    mp_appid: str | None = None,
    mp_secret: str | None = None,
    allow_http: bool = False,
    qr_type: str = "link",
    default_mp_appid: str | None = None,
) -> CreatedPool:
    """A pool with its default client and first signing key, all or nothing.

    A private mini program must be proven first (``prove_mini_program``: the
    caller has the WeChat client); ``default_mp_appid``, the platform's, is
    refused, and an AppID another pool has raises ``MiniProgramTaken``."""
    validate_slug(slug)
    name = validation.display_name(name)
    if callback_url:
        callback_url = validation.redirect_uri(
            callback_url, field="callback_url", allow_http=allow_http
        )
    if (mp_appid is None) != (mp_secret is None):
        raise ValidationError("a private mini program needs both its AppID and its AppSecret")
    if mp_appid is not None:
        validate_mini_program(mp_appid, mp_secret, default_appid=default_mp_appid)
    if qr_type not in QR_TYPES:
        raise ValidationError(
            f"qr_type must be one of {', '.join(QR_TYPES)}", error="invalid_qr_type"
        )
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO pools (slug, name, callback_url, qr_type) VALUES ($1, $2, $3, $4)
                    RETURNING {_COLUMNS}""",
                slug,
                name,
                callback_url,
                qr_type,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a pool with slug {slug!r} already exists", error="slug_taken"
            ) from None
        pool = _pool(row)
        if mp_appid is not None and mp_secret is not None:
            pool = await save_mini_program(conn, box, pool.id, mp_appid, mp_secret)
        client, secret = await clients.create(
            conn,
            box,
            pool_id=pool.id,
            name=name,
            redirect_uris=[callback_url] if callback_url else [],
            is_default=True,
            allow_http=allow_http,
        )
        await keys.create(conn, box, pool.id, pool.id_token_alg)
    return CreatedPool(pool, client, secret or "")


# --- a private mini program: one pool's alone -----------------------------------------


class MiniProgramTaken(Conflict):
    error = "mp_appid_taken"
    description = (
        "This AppID is already the mini program of another pool; "
        "a private mini program serves one pool only."
    )


class MiniProgramReserved(ValidationError):
    error = "mp_appid_reserved"
    description = (
        "This AppID is the platform's default mini program; "
        "choose the default instead of a private mini program."
    )


class MiniProgramRefused(ValidationError):
    """WeChat did not accept the AppID and AppSecret (``errcode``: 40125 wrong
    secret, 40013 unknown AppID, 40164 this server's IP not allowed, ...)."""

    error = "mp_secret_refused"

    def __init__(self, errcode: int, ip: str | None = None) -> None:
        self.errcode = errcode
        self.ip = ip  # 40164: the address WeChat saw, to add to the whitelist
        where = f" {ip}" if ip else ""
        reason = {
            40125: "the AppSecret is wrong",
            40013: "the AppID is not valid",
            40164: f"this server's IP address{where} is not on the mini program's IP whitelist",
        }.get(errcode, "it refused them")
        super().__init__(
            f"WeChat did not accept this AppID and AppSecret: {reason} (errcode {errcode})."
        )


class CredentialChecker(Protocol):
    """What ``prove_mini_program`` needs of the WeChat client."""

    async def check_credentials(self, appid: str, secret: str) -> None: ...


def validate_mini_program(appid: str, secret: str | None, *, default_appid: str | None) -> None:
    """A private mini program's AppID and AppSecret are well formed, and the
    AppID is not the platform's default one (which no pool may claim)."""
    if not APPID_RE.match(appid):
        raise ValidationError(
            f"mini program AppID {appid!r} is not valid (wx + 16 characters)",
            error="invalid_mp_appid",
        )
    if default_appid and appid == default_appid:
        raise MiniProgramReserved()
    if secret is not None and not APPSECRET_RE.match(secret):
        raise ValidationError("mini program AppSecret is not valid", error="invalid_mp_secret")


async def prove_mini_program(wechat: CredentialChecker, appid: str, secret: str) -> None:
    """WeChat accepts this AppID and AppSecret (a stable-token call, which leaves
    the token in use as it is), or ``MiniProgramRefused``. Called before an
    AppID is stored: only who has its AppSecret can claim a mini program. The
    AppID's owner, if there is one, is learnt only after this."""
    try:
        await wechat.check_credentials(appid, secret)
    except WeChatUnavailable:
        raise ServiceUnavailable(
            "WeChat could not be reached to check the AppSecret; try again shortly.",
            error="wechat_unavailable",
        ) from None
    except WeChatError as exc:
        ip = whitelist_ip(exc.errmsg) if exc.errcode == ErrCode.IP_NOT_WHITELISTED else None
        raise MiniProgramRefused(exc.errcode, ip) from None


async def save_mini_program(
    conn: asyncpg.Connection, box: SecretBox, pool_id: int, appid: str, secret: str
) -> Pool:
    """One statement; the database's UNIQUE (mp_appid) decides between pools
    claiming one AppID at the same time (sql/0004_mp_appid_unique.sql)."""
    sealed = box.encrypt(secret, mp_secret_context(pool_id))
    try:
        row = await conn.fetchrow(
            f"""UPDATE pools SET mp_appid = $2, mp_secret_enc = $3, updated_at = now()
                WHERE id = $1 RETURNING {_COLUMNS}""",
            pool_id,
            appid,
            sealed,
        )
    except asyncpg.UniqueViolationError:
        raise MiniProgramTaken() from None
    return _pool(row)


async def claim_mini_program(
    conn: asyncpg.Connection,
    box: SecretBox,
    wechat: CredentialChecker,
    pool_id: int,
    appid: str,
    secret: str,
    *,
    default_appid: str | None,
) -> Pool:
    """Make ``appid`` the pool's private mini program: well formed, not the
    platform's, accepted by WeChat with ``secret``, and no other pool's."""
    validate_mini_program(appid, secret, default_appid=default_appid)
    await prove_mini_program(wechat, appid, secret)
    return await save_mini_program(conn, box, pool_id, appid, secret)


async def get_by_slug(conn: asyncpg.Connection | asyncpg.Pool, slug: str) -> Pool | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pools WHERE slug = $1", slug)
    return _pool(row) if row else None


async def get_by_id(conn: asyncpg.Connection | asyncpg.Pool, pool_id: int) -> Pool | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pools WHERE id = $1", pool_id)
    return _pool(row) if row else None


async def mp_secret(
    conn: asyncpg.Connection | asyncpg.Pool, box: SecretBox, pool: Pool
) -> str | None:
    sealed = await conn.fetchval("SELECT mp_secret_enc FROM pools WHERE id = $1", pool.id)
    return box.decrypt(sealed, mp_secret_context(pool.id)).decode() if sealed else None


async def set_qr_type(
    conn: asyncpg.Connection | asyncpg.Pool, slug: str, qr_type: str, fallback: bool | None = None
) -> Pool | None:
    """Switch the pool's QR codes between link QR and mini-program code (then announce it)."""
    if qr_type not in QR_TYPES:
        raise ValidationError(
            f"qr_type must be one of {', '.join(QR_TYPES)}", error="invalid_qr_type"
        )
    row = await conn.fetchrow(
        f"""UPDATE pools SET qr_type = $2, qr_fallback = coalesce($3, qr_fallback),
               updated_at = now() WHERE slug = $1 RETURNING {_COLUMNS}""",
        slug,
        qr_type,
        fallback,
    )
    return _pool(row) if row else None


async def announce_change(hub_or_redis: EventHub, slug: str) -> None:
    """Tell every process to drop its cached copy of ``slug`` (also after create)."""
    await hub_or_redis.publish(POOLS_CHANNEL, {"slug": slug})


class PoolCache:
    """Slug → Pool (or "no such pool") per process.

    Entries are dropped by messages on the pools channel; the TTL is only a
    safety net.

    A name no pool has costs no query and takes no memory: the cache knows
    which slugs exist (all of them, loaded once and again every ``ttl``; then
    the pools created since, by id, at most once per ``recheck`` seconds however
    many unknown names are asked for). So a flood of requests for random
    subdomains makes about one small query a second, and what is cached is
    bounded by the number of pools (a few bytes a slug). A pool created
    elsewhere is found within ``recheck`` seconds, at once when announced.
    """

    def __init__(
        self,
        db: asyncpg.Pool,
        ttl: float = 300.0,
        miss_ttl: float = 30.0,
        recheck: float = 1.0,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._recheck = recheck
        self._entries: dict[str, tuple[float, Pool | None]] = {}
        self._loading: dict[str, asyncio.Future[Pool | None]] = {}
        self._slugs: dict[int, str] = {}  # id → slug, learnt from what was loaded
        self._known: set[str] | None = None  # every slug that exists, when loaded
        self._known_until = 0.0  # when to load them all again
        self._known_max_id = 0  # the newest pool seen: top-ups ask for ids above it
        self._topped_at = 0.0
        self._known_lock = asyncio.Lock()
        self.loads = 0  # queries for one pool; read by tests
        self.scans = 0  # queries for the set of slugs; read by tests

    def peek(self, slug: str) -> tuple[bool, Pool | None]:
        """(True, the pool or None) when a fresh answer is cached, else (False, None):
        the host router's every request, without a coroutine when it can."""
        entry = self._entries.get(slug)
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    async def get(self, slug: str) -> Pool | None:
        entry = self._entries.get(slug)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        if slug not in self._loading and not await self._may_exist(slug):
            return None
        entry = self._entries.get(slug)  # loaded while this one waited for the slugs?
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        if slug in self._loading:  # one query per slug however many ask at once
            return await asyncio.shield(self._loading[slug])
        future: asyncio.Future[Pool | None] = asyncio.get_running_loop().create_future()
        self._loading[slug] = future
        try:
            self.loads += 1
            pool = await get_by_slug(self._db, slug)
            ttl = self._ttl if pool is not None else self._miss_ttl
            if pool is None and self._known is not None:
                self._known.discard(slug)  # gone since the slugs were loaded
            if self._loading.get(slug) is future:  # not invalidated meanwhile
                self._entries[slug] = (time.monotonic() + ttl, pool)
                if pool is not None:
                    self._slugs[pool.id] = slug
            future.set_result(pool)
            return pool
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            if self._loading.get(slug) is future:
                del self._loading[slug]

    async def get_by_id(self, pool_id: int) -> Pool | None:
        """For the mini-program API, which knows a ticket's pool only by id."""
        slug = self._slugs.get(pool_id)
        if slug is None:
            slug = await self._db.fetchval("SELECT slug FROM pools WHERE id = $1", pool_id)
            if slug is None:
                return None
        pool = await self.get(slug)
        return pool if pool is not None and pool.id == pool_id else None

    async def _may_exist(self, slug: str) -> bool:
        now = time.monotonic()
        if self._known is None or now > self._known_until:
            await self._load_slugs(full=True)
        elif slug not in self._known and now - self._topped_at > self._recheck:
            await self._load_slugs(full=False)
        return self._known is not None and slug in self._known

    async def _load_slugs(self, *, full: bool) -> None:
        async with self._known_lock:  # one query at a time; those who waited use it
            now = time.monotonic()
            if full and self._known is not None and now <= self._known_until:
                return
            if not full and now - self._topped_at <= self._recheck:
                return
            self.scans += 1
            if full or self._known is None:
                rows = await self._db.fetch("SELECT id, slug FROM pools")
                known: set[str] = set()
                self._known_until = now + self._ttl
            else:
                rows = await self._db.fetch(
                    "SELECT id, slug FROM pools WHERE id > $1", self._known_max_id
                )
                known = self._known
            known.update(r["slug"] for r in rows)
            self._known_max_id = max(
                (r["id"] for r in rows), default=0 if full else self._known_max_id
            )
            self._known = known
            self._topped_at = now

    def invalidate(self, slug: str) -> None:
        self._entries.pop(slug, None)
        self._loading.pop(slug, None)
        if self._known is not None:
            self._known.add(slug)  # created, perhaps: the next request asks the database

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()
        self._slugs.clear()
        self._known = None

    def handle_event(self, message: dict) -> None:
        slug = message.get("slug")
        if isinstance(slug, str):
            self.invalidate(slug)
        else:
            self.clear()
