"""Link rules: which URL a pool's QR codes carry, and the verification files
WeChat checks before it publishes a rule (issue 17, docs/miniprogram.md).

WeChat opens a mini program for a scanned link only under a rule ("扫普通链接
二维码打开小程序"): a URL prefix added in that mini program's admin, capped in
number, each prefix owned by one mini program, and published only once a
verification file WeChat hands out is served under it. So:

- every pool served by the platform's default mini program puts
  ``{PORTAL_QR_BASE}/q/{ticket}`` in its QR codes: one rule for all of them
  (the ticket names its pool, so the apex's ``/q/{ticket}`` works for every
  pool's tickets);
- a pool with a private mini program uses a prefix of its own: its pool host's
  ``/q/``, or a custom ``https://HOST/q/`` that no other pool (and so no other
  mini program) uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from portal.errors import Conflict, NotFound, ValidationError
from portal.settings import Settings
from portal.tenants.pools import Pool

VERIFY_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.txt$")
MAX_VERIFY_CONTENT = 1024
_PREFIX_RE = re.compile(r"^https://([a-z0-9.-]+)(:[0-9]{1,5})?/q/$")


def prefix(settings: Settings, pool: Pool) -> str:
    """The link-rule prefix of ``pool``'s QR codes (ends with ``/q/``)."""
    if pool.mp_appid is None:
        return settings.qr_prefix
    return pool.mp_qr_prefix or f"{settings.pool_url(pool.slug)}/q/"


def content(settings: Settings, pool: Pool, ticket: str) -> str:
    """What ``pool``'s QR code for ``ticket`` says."""
    return prefix(settings, pool) + ticket


class PrefixTaken(Conflict):
    error = "qr_prefix_taken"
    description = "Another pool (and so another mini program) already uses this QR prefix."


class VerifyFileNotFound(NotFound):
    error = "verify_file_not_found"
    description = "No verification file is set for this mini program."


def validate_prefix(settings: Settings, pool: Pool, value: str) -> str:
    """A custom prefix for ``pool``'s private mini program: ``https://HOST[:PORT]/q/``
    on a host that is not the platform's (the apex, the QR host or another pool's
    subdomain): those prefixes belong to other mini programs."""
    value = value.strip()
    if value.endswith("/q"):
        value += "/"
    m = _PREFIX_RE.match(value.lower())
    if not m or value != value.lower():
        raise ValidationError(
            "The QR prefix must be https://HOST/q/ (lower case), e.g. https://login.example.com/q/.",
            error="invalid_qr_prefix",
        )
    if pool.mp_appid is None:
        raise ValidationError(
            "Only a pool with a private mini program has a QR prefix of its own.",
            error="invalid_qr_prefix",
        )
    host = m[1]
    own = urlsplit(settings.pool_url(pool.slug)).hostname
    apex = settings.apex_host
    if host != own and (host in (apex, settings.qr_host) or host.endswith("." + apex)):
        raise PrefixTaken(
            "This host's link rules belong to the platform's mini program or another pool."
        )
    return value


async def set_prefix(
    conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, pool: Pool, value: str | None
) -> str:
    """Set (or with None, clear: back to the pool host's) the pool's custom prefix;
    the database's unique index decides between two pools claiming one at once.
    Returns the prefix now in use."""
    if value is not None:
        value = validate_prefix(settings, pool, value)
        if value == f"{settings.pool_url(pool.slug)}/q/":
            value = None  # the default one: nothing to store
    try:
        await conn.execute(
            "UPDATE pools SET mp_qr_prefix = $2, updated_at = now() WHERE id = $1",
            pool.id,
            value,
        )
    except asyncpg.UniqueViolationError:
        raise PrefixTaken() from None
    return value or f"{settings.pool_url(pool.slug)}/q/"


@dataclass(frozen=True)
class VerifyFile:
    appid: str
    name: str
    content: str


def validate_file(name: str, body: str) -> tuple[str, str]:
    name, body = name.strip(), body.strip()
    if not VERIFY_NAME_RE.match(name):
        raise ValidationError(
            "The verification file's name is the one WeChat gives, like abc123.txt.",
            error="invalid_verify_file",
        )
    if not body or len(body) > MAX_VERIFY_CONTENT or "\x00" in body:
        raise ValidationError(
            f"The verification file's content is 1 to {MAX_VERIFY_CONTENT} characters.",
            error="invalid_verify_file",
        )
    return name, body


async def set_file(
    conn: asyncpg.Connection | asyncpg.Pool, appid: str, name: str, body: str
) -> VerifyFile:
    name, body = validate_file(name, body)
    await conn.execute(
        """INSERT INTO mp_verify_files (appid, name, content) VALUES ($1, $2, $3)
           ON CONFLICT (appid) DO UPDATE SET name = $2, content = $3, updated_at = now()""",
        appid,
        name,
        body,
    )
    return VerifyFile(appid, name, body)


async def get_file(conn: asyncpg.Connection | asyncpg.Pool, appid: str) -> VerifyFile | None:
    row = await conn.fetchrow(
        "SELECT appid, name, content FROM mp_verify_files WHERE appid = $1", appid
    )
    return None if row is None else VerifyFile(row["appid"], row["name"], row["content"])


async def clear_file(conn: asyncpg.Connection | asyncpg.Pool, appid: str) -> None:
    await conn.execute("DELETE FROM mp_verify_files WHERE appid = $1", appid)
