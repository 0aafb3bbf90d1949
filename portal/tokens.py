"""Signed tokens of a pool: ID tokens, JWT access tokens and refresh tokens.

Used by the QR exchange now and by the OIDC token endpoint. Each process
keeps the pools' active private keys in memory (decrypted once); any pool
change message drops them, so a rotation is picked up at once.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from joserfc import jwt

from portal.crypto import SecretBox
from portal.tenants import keys
from portal.tenants.pools import Pool

AMR = ["wechat_qr"]


class KeyCache:
    def __init__(self, db: asyncpg.Pool, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._keys: dict[int, keys.SigningKey] = {}

    async def get(self, pool_id: int) -> keys.SigningKey:
        key = self._keys.get(pool_id)
        if key is None:
            async with self._db.acquire() as conn:
                key = await keys.active(conn, self._box, pool_id)
            if key is None:
                raise RuntimeError(f"pool {pool_id} has no active signing key")
            self._keys[pool_id] = key
        return key

    def clear(self, *_: object) -> None:
        self._keys.clear()


def _half_hash(value: str) -> str:
    """``at_hash``: the left half of the SHA-256 of the token, base64url (OIDC Core 3.1.3.6)."""
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def user_claims(user: dict[str, Any], scopes: set[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims["nickname"] = user.get("nickname")
        claims["picture"] = user.get("avatar_url")
    if "phone" in scopes and user.get("phone_number"):
        claims["phone_number"] = f"+{user.get('phone_country_code') or '86'}{user['phone_number']}"
        claims["phone_number_verified"] = True  # WeChat verified it
    return claims


@dataclass(frozen=True)
class TokenSet:
    id_token: str
    access_token: str
    expires_in: int
    refresh_token: str | None
    scope: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id_token": self.id_token,
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


async def issue(
    conn: asyncpg.Connection | asyncpg.Pool,
    key_cache: KeyCache,
    box: SecretBox,
    *,
    issuer: str,
    pool: Pool,
    client_pk: int,
    client_id: str,
    user: dict[str, Any],
    scope: str,
    auth_time: int,
    nonce: str | None = None,
    refresh: bool = True,
    family_id: uuid.UUID | None = None,
) -> TokenSet:
    key = await key_cache.get(pool.id)
    scopes = set(scope.split())
    now = int(time.time())
    header = {"alg": key.alg, "kid": key.kid}
    access_claims = {
        "iss": issuer,
        "sub": str(user["id"]),
        "aud": client_id,
        "client_id": client_id,
        "iat": now,
        "exp": now + pool.access_token_ttl,
        "jti": secrets.token_urlsafe(16),
        "scope": scope,
        "auth_time": auth_time,
    }
    # RFC 9068: JWT access tokens are typed, so they cannot pass for ID tokens.
    access_token = jwt.encode(
        {**header, "typ": "at+jwt"}, access_claims, key.key, algorithms=[key.alg]
    )
    id_claims: dict[str, Any] = {
        "iss": issuer,
        "sub": str(user["id"]),
        "aud": client_id,
        "iat": now,
        "exp": now + pool.id_token_ttl,
        "auth_time": auth_time,
        "amr": AMR,
        "at_hash": _half_hash(access_token),
        **user_claims(user, scopes),
    }
    if nonce:
        id_claims["nonce"] = nonce
    id_token = jwt.encode(header, id_claims, key.key, algorithms=[key.alg])
    refresh_token = None
    if refresh:
        refresh_token = secrets.token_urlsafe(32)
        await conn.execute(
            """INSERT INTO refresh_tokens (pool_id, client_pk, user_id, token_hash, family_id, scope,
                                          auth_time, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), now() + make_interval(secs => $8))""",
            pool.id,
            client_pk,
            user["id"],
            box.hash_secret(refresh_token),
            family_id or uuid.uuid4(),
            scope,
            auth_time,
            pool.refresh_token_ttl,
        )
    return TokenSet(id_token, access_token, pool.access_token_ttl, refresh_token, scope)
