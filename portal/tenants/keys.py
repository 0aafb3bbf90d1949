"""Per-pool signing keys: generated at pool creation, private part sealed at rest."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from joserfc.jwk import ECKey, RSAKey

from portal.stores.crypto import SecretBox

ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    key: RSAKey | ECKey  # private


def _context(pool_id: int, kid: str) -> str:
    return f"pool:{pool_id}:signing_key:{kid}"


def generate(alg: str) -> RSAKey | ECKey:
    if alg == "RS256":
        key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    return key


async def create(
    conn: asyncpg.Connection, box: SecretBox, pool_id: int, alg: str, *, grace_seconds: int = 0
) -> SigningKey:
    """Make a new key the pool's active one (the caller holds the transaction).

    The key it replaces stays in JWKS for ``grace_seconds``: the longest a
    token it signed can still be valid, so rotation never breaks a login."""
    # An RSA key takes ~0.5 s of CPU to make: off the event loop (a tenant admin
    # rotating keys in a loop would otherwise stall every request of the process).
    key = await asyncio.to_thread(generate, alg)
    kid = key.thumbprint()
    public: dict[str, Any] = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    sealed = box.encrypt(json.dumps(key.as_dict(private=True)), _context(pool_id, kid))
    await conn.execute(
        """UPDATE signing_keys
           SET active = false, retired_at = now(), publish_until = now() + make_interval(secs => $2)
           WHERE pool_id = $1 AND active""",
        pool_id,
        grace_seconds,
    )
    await conn.execute(
        """INSERT INTO signing_keys (pool_id, kid, alg, public_jwk, private_jwk_enc)
           VALUES ($1, $2, $3, $4, $5)""",
        pool_id,
        kid,
        alg,
        public,
        sealed,
    )
    return SigningKey(kid, alg, key)


async def active(conn: asyncpg.Connection, box: SecretBox, pool_id: int) -> SigningKey | None:
    row = await conn.fetchrow(
        "SELECT kid, alg, private_jwk_enc FROM signing_keys WHERE pool_id = $1 AND active", pool_id
    )
    if row is None:
        return None
    data = json.loads(box.decrypt(row["private_jwk_enc"], _context(pool_id, row["kid"])))
    cls = RSAKey if row["alg"] == "RS256" else ECKey
    return SigningKey(row["kid"], row["alg"], cls.import_key(data))


async def published(conn: asyncpg.Connection, pool_id: int) -> list[dict[str, Any]]:
    """Public JWKs to publish: the active key and retired keys still in their grace period."""
    rows = await conn.fetch(
        """SELECT public_jwk FROM signing_keys
           WHERE pool_id = $1 AND (active OR publish_until > now())
           ORDER BY active DESC, created_at DESC""",
        pool_id,
    )
    return [r["public_jwk"] for r in rows]


async def rotate(conn: asyncpg.Connection, box: SecretBox, pool_id: int) -> SigningKey:
    """A new active key in the pool's configured algorithm; the old one is
    published until every token it signed has expired (plus clock skew)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT id_token_alg, greatest(id_token_ttl, access_token_ttl) AS ttl FROM pools "
            "WHERE id = $1 FOR UPDATE",
            pool_id,
        )
        return await create(conn, box, pool_id, row["id_token_alg"], grace_seconds=row["ttl"] + 300)
