"""Application clients of a pool (OAuth 2.0 / OIDC relying parties)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from portal import validation
from portal.crypto import SecretBox


@dataclass(frozen=True)
class Client:
    id: int
    pool_id: int
    client_id: str
    name: str
    is_public: bool
    is_default: bool
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    web_origins: tuple[str, ...]


_COLUMNS = """id, pool_id, client_id, name, is_public, is_default, redirect_uris,
    post_logout_redirect_uris, web_origins"""


def _client(row: asyncpg.Record) -> Client:
    data = dict(row)
    for key in ("redirect_uris", "post_logout_redirect_uris", "web_origins"):
        data[key] = tuple(data[key])
    return Client(**data)


def new_client_id() -> str:
    # 20 random bytes in hex: unguessable, and safe in any URL or header.
    return "c" + secrets.token_hex(12)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


async def create(
    conn: asyncpg.Connection,
    box: SecretBox,
    *,
    pool_id: int,
    name: str,
    redirect_uris: list[str],
    web_origins: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    public: bool = False,
    is_default: bool = False,
    allow_http: bool = False,
) -> tuple[Client, str | None]:
    """Returns the client and its secret (None for a public client). The secret
    is stored only as a hash: this is the one time anyone sees it."""
    name = validation.display_name(name)
    redirects = _unique([validation.redirect_uri(u, allow_http=allow_http) for u in redirect_uris])
    origins = _unique([validation.web_origin(o, allow_http=allow_http) for o in web_origins or []])
    logouts = _unique(
        [
            validation.redirect_uri(u, field="post_logout_redirect_uri", allow_http=allow_http)
            for u in post_logout_redirect_uris or []
        ]
    )
    secret = None if public else secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        f"""INSERT INTO clients (pool_id, client_id, name, secret_hash, is_public, is_default,
                                 redirect_uris, post_logout_redirect_uris, web_origins)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_COLUMNS}""",
        pool_id,
        new_client_id(),
        name,
        box.hash_secret(secret) if secret else None,
        public,
        is_default,
        redirects,
        logouts,
        origins,
    )
    return _client(row), secret


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, pool_id: int, client_id: str
) -> Client | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clients WHERE pool_id = $1 AND client_id = $2", pool_id, client_id
    )
    return _client(row) if row else None


async def get_default(conn: asyncpg.Connection | asyncpg.Pool, pool_id: int) -> Client | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clients WHERE pool_id = $1 AND is_default", pool_id
    )
    return _client(row) if row else None


async def verify_secret(
    conn: asyncpg.Connection | asyncpg.Pool, box: SecretBox, client: Client, secret: str
) -> bool:
    stored = await conn.fetchval("SELECT secret_hash FROM clients WHERE id = $1", client.id)
    return box.verify_secret(secret, stored)
