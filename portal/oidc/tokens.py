"""Signed tokens of a pool: ID tokens, JWT access tokens and refresh tokens.

Used by the QR exchange now and by the OIDC token endpoint. Each process
keeps the pools' active private keys in memory (decrypted once); any pool
change message drops them, so a rotation is picked up at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from joserfc import jwt
from joserfc.jwk import KeySet

from portal.scan.users import USER_COLUMNS
from portal.stores.crypto import SecretBox
from portal.tenants import keys
from portal.tenants.pools import Pool

AMR = ["wechat_qr"]


@dataclass(frozen=True)
class Encoded:
    """A public document's response, encoded once: its body, strong ETag, and
    until when it holds (a retired key leaves JWKS at its ``publish_until``)."""

    body: bytes
    etag: str
    until: float = math.inf


def encode_json(content: Any, until: float = math.inf) -> Encoded:
    """The bytes Starlette's JSONResponse sends for ``content``, and their ETag."""
    body = json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode()
    return Encoded(body, f'"{digest}"', until)


_PUBLISHED = """SELECT public_jwk, CASE WHEN active THEN NULL ELSE extract(epoch FROM publish_until) END AS until
    FROM signing_keys
    WHERE pool_id = $1 AND (active OR publish_until > now())
    ORDER BY active DESC, created_at DESC"""


_VERIFIED_MAX = 4096  # tokens remembered per process (KeyCache.verified)


class KeyCache:
    """A pool's keys and public documents (JWKS, discovery), per process.

    Loaded on first use, then no query: ``clear`` (any pool change message, so
    a key rotation on any process) drops everything; a retired key's end of
    publication makes the pool's public keys reload then."""

    def __init__(self, db: asyncpg.Pool, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._keys: dict[int, keys.SigningKey] = {}
        self._public: dict[int, tuple[KeySet, Encoded]] = {}
        self._documents: dict[tuple[Any, ...], Encoded] = {}
        self._loading: dict[int, asyncio.Future[tuple[KeySet, Encoded]]] = {}
        self._generation = 0  # bumped by clear: a load begun before it is not kept
        self.loads = 0  # public key set queries (tests, benchmarks)
        # (pool id, token) -> (header, claims, good until): tokens whose signature
        # was checked, so that a client calling userinfo or the API with the same
        # token again costs no RSA verification (about a tenth of userinfo).
        self._tokens: dict[tuple[int, str], tuple[dict, dict, float]] = {}

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

    async def _published(self, pool_id: int) -> tuple[KeySet, Encoded]:
        cached = self._public.get(pool_id)
        if cached is not None and cached[1].until > time.time():
            return cached
        loading = self._loading.get(pool_id)
        if loading is not None:  # one query however many requests miss at once
            return await asyncio.shield(loading)
        future: asyncio.Future[tuple[KeySet, Encoded]] = asyncio.get_running_loop().create_future()
        self._loading[pool_id] = future
        generation = self._generation
        try:
            self.loads += 1
            rows = await self._db.fetch(_PUBLISHED, pool_id)
            published = [r["public_jwk"] for r in rows]
            until = min(
                (float(r["until"]) for r in rows if r["until"] is not None), default=math.inf
            )
            loaded = (
                KeySet.import_key_set({"keys": published}),
                encode_json({"keys": published}, until),
            )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            if self._loading.get(pool_id) is future:
                del self._loading[pool_id]
        if generation == self._generation:
            self._public[pool_id] = loaded
        future.set_result(loaded)
        return loaded

    async def public_set(self, pool_id: int) -> KeySet:
        """The keys a token of this pool may be signed with (active and retired-but-published)."""
        return (await self._published(pool_id))[0]

    async def jwks(self, pool_id: int) -> Encoded:
        """The pool's JWKS document, encoded."""
        return (await self._published(pool_id))[1]

    async def verified(self, pool_id: int, token: str) -> tuple[dict, dict]:
        """A JWT's header and claims, its signature checked against the pool's
        published keys (``JoseError``, ``ValueError`` or ``TypeError`` if it does
        not verify). A verified token is remembered until it expires, a key of
        the pool changes (``clear``) or a retired key's publication ends, so
        nothing a fresh check would refuse is accepted; the caller still checks
        everything else (type, issuer, expiry, audience, revocation) every time."""
        now = time.time()
        hit = self._tokens.get((pool_id, token))
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        generation = self._generation
        key_set, published = await self._published(pool_id)
        decoded = jwt.decode(token, key_set)
        exp = decoded.claims.get("exp")
        if generation == self._generation and isinstance(exp, int) and exp > now:
            if len(self._tokens) >= _VERIFIED_MAX:
                self._tokens = {k: v for k, v in self._tokens.items() if v[2] > now}
                if len(self._tokens) >= _VERIFIED_MAX // 2:
                    self._tokens.clear()
            self._tokens[(pool_id, token)] = (
                decoded.header,
                decoded.claims,
                min(float(exp), published.until),
            )
        return decoded.header, decoded.claims

    def document(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Encoded:
        """A public document that changes only with its pool (discovery), encoded
        once per ``key`` (which names what it is built from)."""
        encoded = self._documents.get(key)
        if encoded is None:
            encoded = self._documents[key] = encode_json(build())
        return encoded

    def clear(self, *_: object) -> None:
        self._generation += 1
        self._keys.clear()
        self._public.clear()
        self._documents.clear()
        self._tokens.clear()


def _half_hash(value: str) -> str:
    """``at_hash``: the left half of the SHA-256 of the token, base64url (OIDC Core 3.1.3.6)."""
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


# The user claims the pool issues (in the ID token and at userinfo), by scope;
# discovery's claims_supported lists them. Mapping: docs/api.md, "Claims".
USER_CLAIMS = (
    "name",
    "nickname",
    "preferred_username",
    "picture",
    "updated_at",
    "phone_number",
    "phone_number_verified",
)


def e164(country_code: object, number: object) -> str | None:
    """``+<country code><national number>``, digits only (ITU-T E.164: at most 15
    digits), or None when what is stored cannot be one."""
    cc = "".join(c for c in str(country_code or "86") if c.isdigit()) or "86"
    digits = "".join(c for c in str(number or "") if c.isdigit())
    if not digits or not 1 <= len(cc) <= 3 or len(cc) + len(digits) > 15:
        return None
    return f"+{cc}{digits}"


def user_claims(user: dict[str, Any], scopes: set[str]) -> dict[str, Any]:
    """Only claims with a value (OIDC Core §5.3.2: a claim without one is omitted)."""
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        nickname = (user.get("nickname") or "").strip()
        if nickname:
            # WeChat knows one name a person chose to show: it is all three. Neither
            # unique nor stable (OIDC Core §5.7): clients key on `sub`.
            claims["name"] = claims["nickname"] = claims["preferred_username"] = nickname
        if user.get("avatar_url"):
            claims["picture"] = user["avatar_url"]
        updated = user.get("updated_at") or user.get("created_at")
        if updated is not None:
            claims["updated_at"] = int(updated.timestamp())
    if "phone" in scopes:
        phone = e164(user.get("phone_country_code"), user.get("phone_number"))
        if phone:
            claims["phone_number"] = phone
            claims["phone_number_verified"] = True  # WeChat verified it
    return claims


async def front_id_token(
    key_cache: KeyCache,
    *,
    issuer: str,
    pool: Pool,
    client_id: str,
    user: dict[str, Any],
    scope: str,
    auth_time: int,
    nonce: str,
    family_id: str,
    code: str | None = None,
) -> str:
    """An ID token sent from the authorization endpoint (``response_type`` with
    ``id_token``, OIDC Core §3.2.2.10 and §3.3.2.11): no access token goes with
    it, so no ``at_hash``; with a code (hybrid), its ``c_hash``. The user's
    claims are in it, as no userinfo call may follow (OIDC Core §5.4)."""
    key = await key_cache.get(pool.id)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": str(user["id"]),
        "aud": client_id,
        "iat": now,
        "exp": now + pool.id_token_ttl,
        "auth_time": auth_time,
        "amr": AMR,
        "sid": family_id,
        "nonce": nonce,
        **user_claims(user, set(scope.split())),
    }
    if code is not None:
        claims["c_hash"] = _half_hash(code)
    return jwt.encode({"alg": key.alg, "kid": key.kid}, claims, key.key, algorithms=[key.alg])


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
    stored_refresh: str | None = None,
) -> TokenSet:
    """Tokens for ``scope``, which the caller has already cut to what the client
    is registered for; a refresh token only if asked (``refresh``), which the
    callers do only with ``offline_access`` in that scope. ``stored_refresh``:
    a refresh token the caller has stored already (``rotate_refresh``)."""
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
    refresh_token = stored_refresh
    if refresh and refresh_token is None:
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


# A refresh (RFC 6749 §6, with rotation) in one statement, so one round trip and
# one commit: the presented token is locked and spent if it may be (its
# client's, neither spent nor expired, and the scope asked is part of its own),
# its successor is stored in the same family when the scope granted keeps
# offline_access and the user is not blocked, and the user is read. Two
# refreshes of one token: the second waits for the first's lock, then sees the
# token spent (a replay). A blocked user's token is spent with no successor.
# $4: the scopes asked ('{}': all of the token's); $5: the client's registered
# scopes narrowed to those asked, in SCOPES order; $6: the successor's hash.
_ROTATE = f"""
WITH old AS (
    SELECT id, family_id, user_id, auth_time, scope,
           rotated_at IS NOT NULL OR revoked_at IS NOT NULL AS spent,
           revoked_at IS NOT NULL AS revoked,
           expires_at < now() AS expired,
           string_to_array(scope, ' ') @> $4::text[] AS scope_ok
    FROM refresh_tokens
    WHERE pool_id = $1 AND token_hash = $2 AND client_pk = $3
    FOR UPDATE
), usr AS (
    SELECT {USER_COLUMNS} FROM users WHERE pool_id = $1 AND id = (SELECT user_id FROM old)
), spend AS (
    UPDATE refresh_tokens r SET rotated_at = now() FROM old
    WHERE r.id = old.id AND NOT old.spent AND NOT old.expired AND old.scope_ok
    RETURNING r.id
), granted AS (
    SELECT array_to_string(ARRAY(
        SELECT s FROM unnest($5::text[]) WITH ORDINALITY AS t(s, n)
        WHERE s = ANY(string_to_array(old.scope, ' ')) ORDER BY n), ' ') AS scope
    FROM old
), successor AS (
    INSERT INTO refresh_tokens (pool_id, client_pk, user_id, token_hash, family_id, scope,
                                auth_time, expires_at)
    SELECT $1, $3, old.user_id, $6, old.family_id, granted.scope, old.auth_time,
           now() + make_interval(secs => $7)
    FROM old, spend, granted, usr
    WHERE NOT usr.blocked AND 'offline_access' = ANY(string_to_array(granted.scope, ' '))
    RETURNING id
)
SELECT old.family_id, old.auth_time, old.spent, old.revoked, old.expired, old.scope_ok,
       granted.scope AS granted_scope, EXISTS (SELECT 1 FROM successor) AS stored, usr.*
FROM old CROSS JOIN granted LEFT JOIN usr ON true"""


@dataclass(frozen=True)
class Rotation:
    """What ``rotate_refresh`` found and did. ``user`` is None if gone."""

    family_id: uuid.UUID
    auth_time: int
    spent: bool  # before this request: rotated or revoked (a replay)
    revoked: bool
    expired: bool
    scope_ok: bool
    scope: str  # granted, if the token was spent now
    refresh_token: str | None  # the successor, stored
    user: dict[str, Any] | None


async def rotate_refresh(
    db: asyncpg.Pool | asyncpg.Connection,
    box: SecretBox,
    pool: Pool,
    *,
    client_pk: int,
    presented: str,
    asked: list[str],
    allowed: list[str],
) -> Rotation | None:
    """``_ROTATE`` for ``presented`` (None: no such token of this client).
    ``asked``: the scopes the request names (empty: the token's);
    ``allowed``: what the client may be granted of those, in token order."""
    successor = secrets.token_urlsafe(32)
    row = await db.fetchrow(
        _ROTATE,
        pool.id,
        box.hash_secret(presented),
        client_pk,
        asked,
        allowed,
        box.hash_secret(successor),
        pool.refresh_token_ttl,
    )
    if row is None:
        return None
    found = dict(row)
    head = {k: found.pop(k) for k in ("family_id", "auth_time", "spent", "revoked", "expired")}
    scope_ok, scope, stored = found.pop("scope_ok"), found.pop("granted_scope"), found.pop("stored")
    return Rotation(
        head["family_id"],
        int(head["auth_time"].timestamp()),
        head["spent"],
        head["revoked"],
        head["expired"],
        scope_ok,
        scope,
        successor if stored else None,
        found if found.get("id") is not None else None,
    )


def api_audience(issuer: str) -> str:
    """The audience of a pool's management API tokens: never a client id, so no
    OpenID Connect access token passes for one, and no management token for an
    OpenID Connect one (``verify_access_token``)."""
    return f"{issuer}/api/v1"


async def issue_client_token(
    key_cache: KeyCache, pool: Pool, *, issuer: str, client_id: str, scope: str
) -> dict[str, Any]:
    """An access token of the client credentials grant (RFC 6749 §4.4) for the
    pool's management API, typed ``at+jwt`` (RFC 9068): ``sub`` and ``client_id``
    are the client, ``aud`` the API (``api_audience``). No refresh token."""
    key = await key_cache.get(pool.id)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": client_id,
        "aud": api_audience(issuer),
        "client_id": client_id,
        "iat": now,
        "exp": now + pool.access_token_ttl,
        "jti": secrets.token_urlsafe(16),
        "scope": scope,
    }
    header = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    return {
        "access_token": jwt.encode(header, claims, key.key, algorithms=[key.alg]),
        "token_type": "Bearer",
        "expires_in": pool.access_token_ttl,
        "scope": scope,
    }


def _revoked_family_key(family_id: str) -> str:
    return f"revoked:sid:{family_id}"


def _revoked_jti_key(jti: str) -> str:
    return f"revoked:jti:{jti}"


async def revoke_family(conn, redis, pool: Pool, family_id: str) -> int:
    """Revoke every refresh token of a login and deny its access tokens until
    they would have expired anyway. Returns the refresh tokens revoked.

    The family is marked first, then its rows revoked. A refresh that held the
    old token's lock while this ran stores a successor this UPDATE cannot see
    (its snapshot predates the successor's commit); that refresh checks the
    mark after its statement (``family_revoked``). Whichever comes second
    catches it: the mark is there, or the successor is in the snapshot."""
    await redis.set(_revoked_family_key(family_id), "1", ex=pool.access_token_ttl + 60)
    result = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE pool_id = $1 AND family_id = $2 AND revoked_at IS NULL",
        pool.id,
        uuid.UUID(family_id),
    )
    return int(result.split()[-1])


async def family_revoked(mux, family_id: str) -> bool:
    """Whether ``revoke_family`` has marked this login (over the shared connection)."""
    return bool(await mux.execute("EXISTS", _revoked_family_key(family_id)))


async def revoke_access_token(redis, claims: dict[str, Any]) -> None:
    remaining = int(claims.get("exp", 0)) - int(time.time())
    if remaining > 0:
        await redis.set(_revoked_jti_key(str(claims.get("jti"))), "1", ex=remaining + 60)


class InvalidToken(Exception):
    pass


async def verify_access_token(
    key_cache: KeyCache,
    pool_id: int,
    mux,
    *,
    issuer: str,
    token: str,
    audience: str | None = None,
) -> dict[str, Any]:
    """Claims of a valid, unexpired, unrevoked access token of this issuer.
    ``audience`` None: an OpenID Connect access token (its audience is a client,
    never the management API); else exactly that audience. ``mux``: the shared
    Redis connection (``portal.stores.redismux``), where the revocation marks are
    looked up, one key per command (on a cluster the two may live on two masters)."""
    from joserfc.errors import JoseError

    try:
        header, claims = await key_cache.verified(pool_id, token)
    except (JoseError, ValueError, TypeError):
        raise InvalidToken("malformed or badly signed") from None
    if header.get("typ") != "at+jwt":
        raise InvalidToken("not an access token")
    claims = dict(claims)  # the cached copy stays as verified
    now = int(time.time())
    if (
        claims.get("iss") != issuer
        or not isinstance(claims.get("exp"), int)
        or claims["exp"] <= now
    ):
        raise InvalidToken("wrong issuer or expired")
    api = api_audience(issuer)
    if (claims.get("aud") != audience) if audience else (claims.get("aud") == api):
        raise InvalidToken("wrong audience")
    if await mux.execute("EXISTS", _revoked_jti_key(str(claims.get("jti")))) or await mux.execute(
        "EXISTS", _revoked_family_key(str(claims.get("sid")))
    ):
        raise InvalidToken("revoked")
    return claims
