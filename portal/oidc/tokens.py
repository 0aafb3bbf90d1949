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
from joserfc.jwk import KeySet

from portal.stores.crypto import SecretBox
from portal.tenants import keys
from portal.tenants.pools import Pool

AMR = ["wechat_qr"]


class KeyCache:
    def __init__(self, db: asyncpg.Pool, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._keys: dict[int, keys.SigningKey] = {}
        self._public: dict[int, KeySet] = {}

    async def get(self, pool_id: int, conn: asyncpg.Connection | None = None) -> keys.SigningKey:
        """The active key; ``conn`` is the caller's connection if it holds one (taking
        a second from the pool while holding one can deadlock a busy pool)."""
        key = self._keys.get(pool_id)
        if key is None:
            if conn is not None:
                key = await keys.active(conn, self._box, pool_id)
            else:
                async with self._db.acquire() as own:
                    key = await keys.active(own, self._box, pool_id)
            if key is None:
                raise RuntimeError(f"pool {pool_id} has no active signing key")
            self._keys[pool_id] = key
        return key

    async def public_set(self, pool_id: int) -> KeySet:
        """The keys a token of this pool may be signed with (active and retired-but-published)."""
        key_set = self._public.get(pool_id)
        if key_set is None:
            async with self._db.acquire() as conn:
                published = await keys.published(conn, pool_id)
            key_set = KeySet.import_key_set({"keys": published})
            self._public[pool_id] = key_set
        return key_set

    def clear(self, *_: object) -> None:
        self._keys.clear()
        self._public.clear()


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
    family_id: str

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
    refresh: bool = False,
    family_id: uuid.UUID | None = None,
) -> TokenSet:
    """Tokens for ``scope``, which the caller has already cut to what the client
    is registered for; a refresh token only if asked (``refresh``), which the
    callers do only with ``offline_access`` in that scope."""
    key = await key_cache.get(pool.id, conn if isinstance(conn, asyncpg.Connection) else None)
    scopes = set(scope.split())
    family_id = family_id or uuid.uuid4()
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
        # The login session (token family) this token belongs to: revoking the
        # family (logout, refresh-token or code replay) revokes this token too.
        "sid": str(family_id),
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
        "sid": str(family_id),
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
            family_id,
            scope,
            auth_time,
            pool.refresh_token_ttl,
        )
    return TokenSet(
        id_token, access_token, pool.access_token_ttl, refresh_token, scope, str(family_id)
    )


def _revoked_family_key(family_id: str) -> str:
    return f"revoked:sid:{family_id}"


def _revoked_jti_key(jti: str) -> str:
    return f"revoked:jti:{jti}"


async def revoke_family(conn, redis, pool: Pool, family_id: str) -> int:
    """Revoke every refresh token of a login and deny its access tokens until
    they would have expired anyway. Returns the refresh tokens revoked."""
    result = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE pool_id = $1 AND family_id = $2 AND revoked_at IS NULL",
        pool.id,
        uuid.UUID(family_id),
    )
    await redis.set(_revoked_family_key(family_id), "1", ex=pool.access_token_ttl + 60)
    return int(result.split()[-1])


async def revoke_access_token(redis, claims: dict[str, Any]) -> None:
    remaining = int(claims.get("exp", 0)) - int(time.time())
    if remaining > 0:
        await redis.set(_revoked_jti_key(str(claims.get("jti"))), "1", ex=remaining + 60)


class InvalidToken(Exception):
    pass


async def verify_access_token(key_set, redis, *, issuer: str, token: str) -> dict[str, Any]:
    """Claims of a valid, unexpired, unrevoked access token of this issuer."""
    from joserfc.errors import JoseError

    try:
        decoded = jwt.decode(token, key_set)
    except (JoseError, ValueError, TypeError):
        raise InvalidToken("malformed or badly signed") from None
    if decoded.header.get("typ") != "at+jwt":
        raise InvalidToken("not an access token")
    claims = decoded.claims
    now = int(time.time())
    if (
        claims.get("iss") != issuer
        or not isinstance(claims.get("exp"), int)
        or claims["exp"] <= now
    ):
        raise InvalidToken("wrong issuer or expired")
    revoked = await redis.exists(
        _revoked_jti_key(str(claims.get("jti"))), _revoked_family_key(str(claims.get("sid")))
    )
    if revoked:
        raise InvalidToken("revoked")
    return claims
