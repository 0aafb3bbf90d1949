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
retried with backoff by ``portal worker``: a notice is not lost when a process
stops. The POST goes through ``portal.web.outbound``'s guarded client (public
addresses only). RP-initiated logout then waits, at most
``PORTAL_BACKCHANNEL_LOGOUT_WAIT`` seconds (1.5), for each token's first
attempt before it sends the person on (``wait_first_attempts``): a client that
answers at once has ended its session before the person's browser comes back
to it (the order the OpenID Foundation's test of RP-initiated back-channel
logout expects), and a slow or dead one delays the person no longer than that
(its retries go on). A console block and a refresh-token reuse do not wait:
nobody is being sent on.

Front-channel logout is the logout page's job: it frames each
``frontchannel_logout_uri`` of the clients the browser's session logged in,
with ``iss`` and ``sid`` (``frontchannel_urls``).
"""

from __future__ import annotations

import asyncio
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
) -> int | None:
    """Queue a logout token for one client (if it registered a back-channel URI),
    in the caller's transaction; the job's id, or None."""
    uri = await conn.fetchval(
        "SELECT backchannel_logout_uri FROM clients WHERE pool_id = $1 AND client_id = $2",
        pool_id,
        client_id,
    )
    if not uri:
        return None
    return await jobs.defer(conn, TASK, pool_id=pool_id, client_id=client_id, sub=sub, sid=sid)


async def notify_logins(
    conn: asyncpg.Connection, pool_id: int, sub: str, logins: dict[str, str]
) -> list[int]:
    """Queue logout tokens for each login (``sid`` → client id) of one session;
    the jobs' ids."""
    queued = []
    for sid, client_id in logins.items():
        job = await notify(conn, pool_id, client_id, sub=sub, sid=sid)
        if job is not None:
            queued.append(job)
    return queued


_UNTRIED = """
SELECT count(*) FROM procrastinate_jobs
 WHERE id = ANY($1::bigint[]) AND status IN ('todo', 'doing') AND attempts = 0
"""
_POLL_S = 0.05


async def wait_first_attempts(db: asyncpg.Pool, job_ids: list[int], timeout: float) -> bool:
    """Wait (at most ``timeout`` seconds) until every job in ``job_ids`` has been
    tried once (delivered, failed for good, or failed once and due for a retry).
    True when all were; False when the time ran out first (they go on anyway)."""
    if not job_ids or timeout <= 0:
        return not job_ids
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await db.fetchval(_UNTRIED, job_ids):
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(_POLL_S, left))
    return True


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
