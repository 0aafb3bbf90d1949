"""What a client signs (issue 18): request objects (JAR, RFC 9101), pushed
authorization requests (PAR, RFC 9126) and JWT client authentication
(RFC 7523: ``private_key_jwt`` and ``client_secret_jwt``).

A client signs with a key of its registered JWK Set (``jwks`` inline or
``jwks_uri``, fetched with ``portal.web.outbound``'s guarded client: public
addresses only (loopback in dev), no redirects, no proxies, 64 KiB at most;
kept five minutes per process) or, HS256, with its own secret (kept encrypted for
this, ``clients.jwt_secret``). ``alg: none`` is never accepted.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey
from joserfc.jws import extract_compact
from starlette.requests import Request

from portal.tenants import clients
from portal.tenants.clients import Client
from portal.web import outbound

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PAR_PREFIX = "urn:ietf:params:oauth:request_uri:"
PAR_TTL = 60
ASYMMETRIC = ("RS256", "PS256", "ES256")
SYMMETRIC = ("HS256",)
ALGS = (*ASYMMETRIC, *SYMMETRIC)
MAX_JWT = 8192
MAX_JWKS_BYTES = 64 * 1024
MAX_LIFETIME = 3600  # an assertion or request object valid longer than this is refused
JWKS_TTL = 300
# Claims of a request object that are not authorization request parameters.
_JWT_CLAIMS = {"iss", "aud", "exp", "iat", "nbf", "jti", "sub"}


class Invalid(Exception):
    """The JWT is not one this client signed for this use (the message says why)."""


class InvalidRequestObject(OAuth2Error):
    error = "invalid_request_object"  # RFC 9101 §6.2
    status_code = 400


class InvalidRequestUri(OAuth2Error):
    error = "invalid_request_uri"
    status_code = 400


_key_cache: dict[tuple[int, str], tuple[float, KeySet | str]] = {}
FAILED_TTL = 30  # a jwks_uri that failed is not fetched again for this long


async def client_keys(request: Request, client: Client) -> KeySet | None:
    """The client's registered public keys (None: it registered none)."""
    if client.jwks:
        return KeySet.import_key_set(client.jwks)
    if not client.jwks_uri:
        return None
    cached = _key_cache.get((client.id, client.jwks_uri))
    if cached is not None and cached[0] > time.monotonic():
        if isinstance(cached[1], str):  # failed a moment ago: not fetched again per request
            raise Invalid(cached[1])
        return cached[1]
    if len(_key_cache) > 1000:
        _key_cache.clear()
    try:
        keys = clients.public_jwks(json.loads(await _fetch(request, client.jwks_uri)))
    except (httpx.HTTPError, ValueError) as exc:
        if isinstance(exc, outbound.AddressNotAllowed):
            reason = "the client's jwks_uri is not on a public address"
        elif isinstance(exc, httpx.HTTPError):
            reason = f"the client's jwks_uri cannot be fetched ({type(exc).__name__})"
        else:
            reason = "the client's jwks_uri holds no valid public JWK Set"
        _key_cache[(client.id, client.jwks_uri)] = (time.monotonic() + FAILED_TTL, reason)
        raise Invalid(reason) from None
    key_set = KeySet.import_key_set(keys)
    _key_cache[(client.id, client.jwks_uri)] = (time.monotonic() + JWKS_TTL, key_set)
    return key_set


async def _fetch(request: Request, url: str) -> bytes:
    async with (
        outbound.guarded_client(allow_loopback=request.state.settings.is_dev, timeout=5.0) as http,
        http.stream("GET", url, headers={"accept": "application/json"}) as answer,
    ):
        if answer.status_code != 200:
            raise ValueError(f"status {answer.status_code}")
        body = b""
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("too large")
        return body


async def verify(request: Request, client: Client, token: str, audiences: set[str]) -> dict:
    """The claims of ``token`` if ``client`` signed it for one of ``audiences``,
    unexpired (and not valid for more than an hour); else Invalid."""
    if len(token) > MAX_JWT:
        raise Invalid("the JWT is too large")
    try:
        header = extract_compact(token.encode()).protected
    except (JoseError, ValueError, TypeError):
        raise Invalid("not a signed JWT") from None
    alg = header.get("alg")
    key: KeySet | OctKey | None
    if alg in SYMMETRIC:
        secret = clients.jwt_secret(request.state.box, client)
        if secret is None:
            raise Invalid("the client has no secret to sign with (rotate it to use HS256)")
        key = OctKey.import_key(secret)
    elif alg in ASYMMETRIC:
        key = await client_keys(request, client)
        if key is None:
            raise Invalid("the client has registered no keys (jwks or jwks_uri)")
    else:
        raise Invalid(f"alg must be one of {', '.join(ALGS)}")
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError):
        raise Invalid("the signature does not verify with the client's keys") from None
    aud = claims.get("aud")
    given = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
    if not given & audiences:
        raise Invalid("aud does not name this server")
    now = time.time()
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or exp <= now):
        raise Invalid("the JWT has expired")
    if isinstance(exp, int | float) and exp > now + MAX_LIFETIME:
        raise Invalid("the JWT is valid for too long")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + 60:
        raise Invalid("the JWT is not valid yet")
    return claims


# --- request objects (RFC 9101) ---------------------------------------------------


async def request_object(request: Request, client: Client, value: str, issuer: str) -> dict:
    """The authorization request a request object carries (RFC 9101 §6.3: its
    parameters alone, not those beside it), or Invalid."""
    claims = await verify(request, client, value, {issuer})
    if claims.get("iss", client.client_id) != client.client_id:
        raise Invalid("iss must be the client_id")
    if claims.get("client_id", client.client_id) != client.client_id:
        raise Invalid("client_id does not match")
    if "request" in claims or "request_uri" in claims:
        raise Invalid("a request object cannot hold another")
    params: dict[str, str] = {}
    for name, value_ in claims.items():
        if name in _JWT_CLAIMS or value_ is None:
            continue
        if isinstance(value_, str):
            params[name] = value_
        elif isinstance(value_, bool):
            params[name] = "true" if value_ else "false"
        elif isinstance(value_, int):
            params[name] = str(value_)
        else:
            params[name] = json.dumps(value_, separators=(",", ":"))
    params["client_id"] = client.client_id
    return params


# --- pushed authorization requests (RFC 9126) -------------------------------------


def _par_key(request: Request, uri: str) -> str:
    return f"par:{request.state.pool.id}:{request.state.box.hash_secret(uri)}"


async def push(request: Request, params: dict[str, str], ttl: int = PAR_TTL) -> str:
    """Keep a checked authorization request; its ``request_uri``."""
    uri = PAR_PREFIX + secrets.token_urlsafe(32)
    await request.state.redis.set(_par_key(request, uri), json.dumps(params), ex=ttl)
    return uri


async def pushed(request: Request, uri: str) -> dict[str, str] | None:
    """The pushed request, once (RFC 9126 §4: a request_uri is used once)."""
    if not uri.startswith(PAR_PREFIX) or len(uri) > 200:
        return None
    raw = await request.state.redis.getdel(_par_key(request, uri))
    return json.loads(raw) if raw else None


# --- client authentication (RFC 7523) ---------------------------------------------


def assertion_subject(token: str) -> str | None:
    """The client an assertion says it comes from (unverified: only to find its keys)."""
    try:
        claims = json.loads(extract_compact(token.encode()).payload)
    except (JoseError, ValueError, TypeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and 0 < len(sub) <= 64 else None


async def check_assertion(request: Request, client: Client, token: str, issuer: str) -> str:
    """Verify a client assertion (RFC 7523 §3): iss and sub the client, aud this
    server (its issuer, or the endpoint called), exp required, jti used once.
    Returns the method (``private_key_jwt`` or ``client_secret_jwt``); else Invalid."""
    endpoint = f"{issuer}{request.url.path}"
    claims = await verify(request, client, token, {issuer, endpoint, f"{issuer}/oidc/token"})
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise Invalid("iss and sub must be the client_id")
    exp, jti = claims.get("exp"), claims.get("jti")
    if not isinstance(exp, int | float):
        raise Invalid("exp is required")
    if not isinstance(jti, str) or not 0 < len(jti) <= 200:
        raise Invalid("jti is required")
    # Single use: kept until the assertion expires anyway.
    box = request.state.box
    key = f"assertion:{request.state.pool.id}:{client.id}:{box.hash_secret(jti)}"
    ttl = max(1, int(exp - time.time()) + 60)
    if not await request.state.redis.set(key, "1", nx=True, ex=ttl):
        raise Invalid("this assertion (its jti) was used already")
    alg = extract_compact(token.encode()).protected.get("alg")
    return "client_secret_jwt" if alg in SYMMETRIC else "private_key_jwt"


def error_params(exc: Invalid) -> dict[str, Any]:
    return {"error": "invalid_request_object", "error_description": str(exc)}
