"""Application clients of a pool (OAuth 2.0 / OIDC relying parties)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from portal import jobs
from portal.errors import ValidationError
from portal.stores.crypto import SecretBox
from portal.web import validation


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
    secret_hash: str | None = field(default=None, repr=False)
    # What the client may be granted (sql/0005): `openid` always, `offline_access`
    # (refresh tokens) only if confidential.
    scopes: tuple[str, ...] = ("openid", "profile", "phone")
    # Issue 18 (sql/0013): what else a relying party registers.
    response_types: tuple[str, ...] = ("code",)
    require_par: bool = False
    jwks: dict | None = field(default=None, repr=False)
    jwks_uri: str | None = None
    backchannel_logout_uri: str | None = None
    frontchannel_logout_uri: str | None = None
    secret_jwt_enc: bytes | None = field(default=None, repr=False)  # seal_secret
    # A management client (sql/0009) calls the pool's management API with the
    # client credentials grant and holds these scopes (MANAGEMENT_SCOPES) instead.
    is_management: bool = False
    management_scopes: tuple[str, ...] = ()

    def granted(self, asked: Iterable[str]) -> str:
        """The scope to grant for ``asked``: only what the registration allows,
        in a fixed order (RFC 6749 §3.3: the server may grant less than asked)."""
        wanted = set(asked)
        return " ".join(s for s in SCOPES if s in wanted and s in self.scopes)

    @property
    def may_refresh(self) -> bool:
        return "offline_access" in self.scopes and not self.is_public


# Every scope a client of a pool can be registered for, in the order tokens name them.
SCOPES = ("openid", "profile", "phone", "offline_access")
DEFAULT_SCOPES = ("openid", "profile", "phone")
# What a management client may be registered for (docs/api.md, "Management API").
MANAGEMENT_SCOPES = (
    "users:read",
    "users:write",
    "clients:read",
    "clients:write",
    "logins:read",
    "webhooks:write",
    "settings:write",
)

_COLUMNS = """id, pool_id, client_id, name, is_public, is_default, redirect_uris,
    post_logout_redirect_uris, web_origins, secret_hash, scopes, is_management,
    management_scopes,
    response_types, require_par, jwks, jwks_uri, backchannel_logout_uri, frontchannel_logout_uri,
    secret_jwt_enc"""


def _client(row: asyncpg.Record) -> Client:
    data = dict(row)
    for key in (
        "redirect_uris",
        "post_logout_redirect_uris",
        "web_origins",
        "scopes",
        "management_scopes",
    ):
        data[key] = tuple(data[key])
    data["response_types"] = tuple(data["response_types"])  # sql/0013
    return Client(**data)


def new_client_id() -> str:
    # 20 random bytes in hex: unguessable, and safe in any URL or header.
    return "c" + secrets.token_hex(12)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def registered_scopes(asked: Iterable[str] | None, *, public: bool) -> list[str]:
    """The scopes to register: ``openid`` always; by default, also ``profile`` and
    ``phone``, and ``offline_access`` for a confidential client. A public client
    cannot hold ``offline_access``: its refresh tokens would need no secret."""
    if asked is None:
        asked = DEFAULT_SCOPES if public else SCOPES
    wanted = {"openid", *asked}
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ValidationError(f"Unknown scope: {sorted(unknown)[0][:40]}.")
    if public and "offline_access" in wanted:
        raise ValidationError("A public client cannot be given offline_access (refresh tokens).")
    return [s for s in SCOPES if s in wanted]


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
    scopes: Iterable[str] | None = None,
    registration: dict | None = None,
) -> tuple[Client, str | None]:
    """Returns the client and its secret (None for a public client). The secret
    is stored only as a hash: this is the one time anyone sees it.
    ``registration``: ``register``'s keyword arguments (sql/0013), if any."""
    name = validation.display_name(name)
    redirects = _unique([validation.redirect_uri(u, allow_http=allow_http) for u in redirect_uris])
    origins = _unique([validation.web_origin(o, allow_http=allow_http) for o in web_origins or []])
    logouts = _unique(
        [
            validation.redirect_uri(u, field="post_logout_redirect_uri", allow_http=allow_http)
            for u in post_logout_redirect_uris or []
        ]
    )
    granted = registered_scopes(scopes, public=public)
    secret = None if public else secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        f"""INSERT INTO clients (pool_id, client_id, name, secret_hash, is_public, is_default,
                                 redirect_uris, post_logout_redirect_uris, web_origins, scopes)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
        granted,
    )
    client = _client(row)
    if secret is not None:
        client = await seal_secret(conn, box, client, secret)
    if registration:
        client = await register(conn, client, allow_http=allow_http, **registration)
    # The pool's webhooks (docs/webhooks.md), in the caller's transaction.
    await jobs.emit(conn, pool_id, "client.created", {"client_id": client.client_id})
    return client, secret


SECRET_CONTEXT = "client secret for JWT"  # noqa: S105  (an encryption context, not a secret)


async def seal_secret(
    conn: asyncpg.Connection, box: SecretBox, client: Client, secret: str
) -> Client:
    """Keep ``secret`` encrypted beside its hash (sql/0013): client_secret_jwt and
    HS256 request objects are HMACs keyed with the secret itself."""
    row = await conn.fetchrow(
        f"UPDATE clients SET secret_jwt_enc = $3 WHERE pool_id = $1 AND id = $2 RETURNING {_COLUMNS}",
        client.pool_id,
        client.id,
        box.encrypt(secret, f"{SECRET_CONTEXT}:{client.id}"),
    )
    return _client(row)


def jwt_secret(box: SecretBox, client: Client) -> str | None:
    """The secret an HMAC-signed JWT of this client is keyed with, if kept."""
    if client.is_public or not client.secret_jwt_enc:
        return None
    return box.decrypt(client.secret_jwt_enc, f"{SECRET_CONTEXT}:{client.id}").decode()


# Response types a client may be registered for (OAuth 2.0 Multiple Response
# Types): never one with `token` (RFC 9700 §2.1.2: no access token in the front channel).
RESPONSE_TYPES = ("code", "id_token", "code id_token")


def response_type(value: str) -> str | None:
    """``value`` in its registered spelling (the order of its words does not
    matter, OAuth 2.0 Multiple Response Types §3), or None if not offered."""
    words = value.split()
    if len(set(words)) != len(words):
        return None
    normal = " ".join(sorted(words))  # "code" sorts before "id_token"
    return normal if normal in RESPONSE_TYPES else None


def public_jwks(value: object) -> dict:
    """A public JWK Set: importable, and no private key in it."""
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError("jwks must be a JSON object with a keys array.") from None
    keys = value.get("keys") if isinstance(value, dict) else None
    if not isinstance(keys, list) or not keys or len(keys) > 10:
        raise ValidationError("jwks must be a JSON object with 1 to 10 keys.")
    private = {"d", "p", "q", "dp", "dq", "qi", "k"}
    if any(not isinstance(k, dict) or private & set(k) for k in keys):
        raise ValidationError("jwks must hold public keys only (no private or symmetric keys).")
    try:
        KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError):
        raise ValidationError("jwks holds a key that cannot be read.") from None
    return {"keys": keys}


_UNSET = object()


async def register(
    conn: asyncpg.Connection,
    client: Client,
    *,
    allow_http: bool = False,
    response_types: Iterable[str] | None = None,
    require_par: bool | None = None,
    jwks: object = _UNSET,
    jwks_uri: object = _UNSET,
    backchannel_logout_uri: object = _UNSET,
    frontchannel_logout_uri: object = _UNSET,
) -> Client:
    """Set what a relying party registers beyond its URIs (sql/0013); what is not
    passed stays. ``None`` or ``""`` clears a key source or a logout URI."""

    def url(value: object, name: str) -> str | None:
        if value in (None, ""):
            return None
        return validation.redirect_uri(str(value), field=name, allow_http=allow_http)

    types = list(client.response_types)
    if response_types is not None:
        asked = list(response_types)
        normal = [response_type(t) for t in asked]
        if not asked or None in normal:
            bad = next((t for t, n in zip(asked, normal, strict=True) if n is None), "")
            raise ValidationError(
                f"Unknown response type {bad[:40]!r}: use {', '.join(RESPONSE_TYPES)}."
            )
        types = [t for t in RESPONSE_TYPES if t in normal]
    new_jwks = (
        client.jwks if jwks is _UNSET else (public_jwks(jwks) if jwks not in (None, "") else None)
    )
    new_uri = client.jwks_uri if jwks_uri is _UNSET else url(jwks_uri, "jwks_uri")
    if jwks is not _UNSET and new_jwks is not None and jwks_uri is _UNSET:
        new_uri = None  # one key source: the one given now
    if jwks_uri is not _UNSET and new_uri is not None and jwks is _UNSET:
        new_jwks = None
    if new_jwks is not None and new_uri is not None:
        raise ValidationError("Register jwks or jwks_uri, not both.")
    back = (
        client.backchannel_logout_uri
        if backchannel_logout_uri is _UNSET
        else url(backchannel_logout_uri, "backchannel_logout_uri")
    )
    front = (
        client.frontchannel_logout_uri
        if frontchannel_logout_uri is _UNSET
        else url(frontchannel_logout_uri, "frontchannel_logout_uri")
    )
    row = await conn.fetchrow(
        f"""UPDATE clients SET response_types = $3, require_par = $4, jwks = $5, jwks_uri = $6,
                   backchannel_logout_uri = $7, frontchannel_logout_uri = $8
            WHERE pool_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
        client.pool_id,
        client.id,
        types,
        client.require_par if require_par is None else bool(require_par),
        new_jwks,
        new_uri,
        back,
        front,
    )
    return _client(row)


def management_scopes(asked: Iterable[str]) -> list[str]:
    """The management scopes to register, in MANAGEMENT_SCOPES order: at least one,
    none unknown."""
    wanted = set(asked)
    unknown = wanted - set(MANAGEMENT_SCOPES)
    if unknown:
        raise ValidationError(f"Unknown scope: {sorted(unknown)[0][:40]}.", error="invalid_scope")
    if not wanted:
        raise ValidationError(
            "A management client needs at least one scope.", error="invalid_scope"
        )
    return [s for s in MANAGEMENT_SCOPES if s in wanted]


async def create_management(
    conn: asyncpg.Connection, box: SecretBox, *, pool_id: int, name: str, scopes: Iterable[str]
) -> tuple[Client, str]:
    """A management client and its secret (stored only as a hash: shown this once).
    It has no redirect URIs and no OpenID Connect scope but ``openid``: it can
    never log a person in, only obtain management tokens."""
    name = validation.display_name(name)
    granted = management_scopes(scopes)
    secret = secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        f"""INSERT INTO clients (pool_id, client_id, name, secret_hash, is_public, scopes,
                                 is_management, management_scopes)
            VALUES ($1, $2, $3, $4, false, '{{openid}}', true, $5)
            RETURNING {_COLUMNS}""",
        pool_id,
        new_client_id(),
        name,
        box.hash_secret(secret),
        granted,
    )
    client = _client(row)
    await jobs.emit(conn, pool_id, "client.created", {"client_id": client.client_id})
    return client, secret


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


def verify_secret(box: SecretBox, client: Client, secret: str) -> bool:
    """The client's own secret? (A public client has none, and nothing matches.)"""
    return box.verify_secret(secret, client.secret_hash)


class ClientCache:
    """Clients per process, read on every QR ticket and token request.

    Whoever changes a client announces it on the pools channel (like any pool
    setting); any such message empties this cache. Misses are cached briefly.
    """

    def __init__(self, db: asyncpg.Pool, ttl: float = 300.0, miss_ttl: float = 10.0) -> None:
        self._db = db
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._entries: dict[tuple[int, str | None], tuple[float, Client | None]] = {}

    async def _load(self, pool_id: int, client_id: str | None) -> Client | None:
        entry = self._entries.get((pool_id, client_id))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        client = await (
            get_default(self._db, pool_id)
            if client_id is None
            else get(self._db, pool_id, client_id)
        )
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded: a flood of random client ids must not grow it
        ttl = self._ttl if client is not None else self._miss_ttl
        self._entries[(pool_id, client_id)] = (time.monotonic() + ttl, client)
        return client

    async def get(self, pool_id: int, client_id: str) -> Client | None:
        if "\x00" in client_id:
            # No client id has one, and PostgreSQL refuses it in a text parameter
            # (which would be a 500 for any form or query that names a client).
            return None
        return await self._load(pool_id, client_id)

    async def default(self, pool_id: int) -> Client | None:
        return await self._load(pool_id, None)

    def clear(self, *_: object) -> None:
        self._entries.clear()
