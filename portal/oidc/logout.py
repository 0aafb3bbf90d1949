"""Logout that reaches every site (issue 18): OpenID Connect Back-Channel Logout
1.0 and Front-Channel Logout 1.0.

When a login ends (RP-initiated logout, an admin blocking the person, the
revocation of a token family on refresh-token reuse), each client of the pool
that registered a ``backchannel_logout_uri`` is sent a logout token: a JWT
signed with the pool's key, ``typ: logout+jwt``, with ``iss``, ``aud`` (the
client), ``iat``, ``exp``, ``jti``, the back-channel ``events`` claim, and
``sid`` (the login at that client: the ``sid`` of its ID tokens) and/or
``sub`` (every login of that person: a block). Never a ``nonce``.

Sending is background work (``oidc.backchannel_logout`` in ``portal.oidc.tasks``),
queued in the transaction that ends the login (``portal.jobs.defer``) and
retried with backoff by ``portal worker``: a slow or dead client never delays
the person, and a notice is not lost when a process stops. The POST goes
through ``portal.web.outbound``'s guarded client (public addresses only).

Front-channel logout is the logout page's job: it frames each
``frontchannel_logout_uri`` of the clients the browser's session logged in,
with ``iss`` and ``sid`` (``frontchannel_urls``).
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
from joserfc import jwt

from portal import jobs
from portal.tenants import keys as keymod

TASK = "oidc.backchannel_logout"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_TTL = 120


def logout_token(
    key: keymod.SigningKey, *, issuer: str, client_id: str, sub: str | None, sid: str | None
) -> str:
    """A Back-Channel Logout 1.0 §2.4 logout token."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + TOKEN_TTL,
        "jti": secrets.token_urlsafe(16),
        "events": {EVENT: {}},
    }
    if sub:
        claims["sub"] = sub
    if sid:
        claims["sid"] = sid
    header = {"alg": key.alg, "kid": key.kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


async def notify(
    conn: asyncpg.Connection, pool_id: int, client_id: str, *, sub: str | None, sid: str | None
) -> None:
    """Queue a logout token for one client (if it registered a back-channel URI),
    in the caller's transaction."""
    uri = await conn.fetchval(
        "SELECT backchannel_logout_uri FROM clients WHERE pool_id = $1 AND client_id = $2",
        pool_id,
        client_id,
    )
    if uri:
        await jobs.defer(conn, TASK, pool_id=pool_id, client_id=client_id, sub=sub, sid=sid)


async def notify_logins(
    conn: asyncpg.Connection, pool_id: int, sub: str, logins: dict[str, str]
) -> None:
    """Queue logout tokens for each login (``sid`` → client id) of one session."""
    for sid, client_id in logins.items():
        await notify(conn, pool_id, client_id, sub=sub, sid=sid)


async def notify_user(conn: asyncpg.Connection, pool_id: int, user_id: str) -> int:
    """A person's every login ends (blocked): each client of the pool with a
    back-channel URI gets a token with ``sub`` alone (all their sessions there).
    Returns how many were queued."""
    rows = await conn.fetch(
        """SELECT client_id FROM clients
           WHERE pool_id = $1 AND backchannel_logout_uri IS NOT NULL ORDER BY id""",
        pool_id,
    )
    for row in rows:
        await jobs.defer(
            conn, TASK, pool_id=pool_id, client_id=row["client_id"], sub=str(user_id), sid=None
        )
    return len(rows)


def frontchannel_urls(issuer: str, logins: dict[str, str], clients: dict[str, Any]) -> list[str]:
    """Front-Channel Logout 1.0 §2: each logged-in client's registered
    ``frontchannel_logout_uri``, with ``iss`` and ``sid`` added to its query."""
    urls = []
    for sid, client_id in logins.items():
        client = clients.get(client_id)
        uri = getattr(client, "frontchannel_logout_uri", None)
        if not uri:
            continue
        sep = "&" if urlsplit(uri).query else "?"
        urls.append(uri + sep + urlencode({"iss": issuer, "sid": sid}))
    return list(dict.fromkeys(urls))
