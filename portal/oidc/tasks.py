"""The worker's side of OpenID Connect: ``oidc.backchannel_logout``, one attempt
at telling one client that a login ended (``portal.oidc.logout``)."""

from __future__ import annotations

import logging

import httpx

from portal import jobs
from portal.oidc.logout import TASK, logout_token
from portal.stores.crypto import SecretBox
from portal.tenants import keys
from portal.web.outbound import AddressNotAllowed, guarded_client

log = logging.getLogger("portal.oidc")

tasks = jobs.Tasks()

# 2 s, 6 s, 18 s, ... three times longer each time, at most 1 h apart, for 6 h:
# a client down for a deploy hears of the logout when it is back.
RETRY = jobs.exponential(first=2, factor=3, cap=3600, give_up_after=6 * 3600)
TIMEOUT = 5.0

_LOAD = """
SELECT c.backchannel_logout_uri, p.slug
  FROM clients c JOIN pools p ON p.id = c.pool_id
 WHERE c.pool_id = $1 AND c.client_id = $2
"""


class NotDelivered(Exception):
    """The client did not take the logout token: procrastinate tries again (RETRY)."""


@tasks.task(TASK, retry=RETRY)
async def backchannel_logout(
    *, pool_id: int, client_id: str, sub: str | None = None, sid: str | None = None
) -> None:
    res = jobs.resources()
    row = await res.db.fetchrow(_LOAD, pool_id, client_id)
    if row is None or not row["backchannel_logout_uri"]:
        return  # the client (or its URI) is gone: nobody left to tell
    async with res.db.acquire() as conn:
        key = await keys.active(conn, SecretBox(res.settings.secret_key), pool_id)
    if key is None:
        return
    token = logout_token(
        key, issuer=res.settings.pool_url(row["slug"]), client_id=client_id, sub=sub, sid=sid
    )
    uri = row["backchannel_logout_uri"]
    try:
        async with guarded_client(allow_loopback=res.settings.is_dev, timeout=TIMEOUT) as http:
            # Back-Channel Logout 1.0 §2.5: a form POST; §2.8: 200 (or 204) when done.
            answer = await http.post(
                uri, data={"logout_token": token}, headers={"cache-control": "no-store"}
            )
    except AddressNotAllowed:
        log.warning("back-channel logout of %s: %s is not a public address", client_id, uri)
        return  # retrying cannot help
    except httpx.HTTPError as exc:
        raise NotDelivered(f"{client_id}: {type(exc).__name__}") from None
    if answer.status_code not in (200, 204):
        raise NotDelivered(f"{client_id}: HTTP {answer.status_code}")
