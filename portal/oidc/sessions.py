"""The portal's own login session on a pool host (single sign-on).

After a scan login on the hosted page the browser holds a host-only cookie
for the pool; a later authorization request from any client of the pool is
answered without a new scan unless the client asks otherwise (``prompt=login``,
``max_age``). Logout ends it. The cookie holds a random id; Redis holds the
rest, under the pool's id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from portal.crypto import random_token

COOKIE = "portal_session"
TTL = 7 * 86400


@dataclass(frozen=True)
class Session:
    user_id: str
    auth_time: int
    family_id: str | None = None


def _key(request: Request, sid: str) -> str:
    return f"sso:{request.state.pool.id}:{request.state.box.hash_secret(sid)}"


async def current(request: Request) -> Session | None:
    sid = request.cookies.get(COOKIE)
    if not sid or len(sid) > 100:
        return None
    raw = await request.state.redis.get(_key(request, sid))
    return Session(**json.loads(raw)) if raw else None


async def start(
    request: Request, response: Response, user_id: str, auth_time: int | None = None
) -> None:
    sid = random_token(32)
    data = Session(user_id=user_id, auth_time=auth_time or int(time.time()))
    await request.state.redis.set(_key(request, sid), json.dumps(data.__dict__), ex=TTL)
    response.set_cookie(
        COOKIE, sid, max_age=TTL, httponly=True, samesite="lax",
        secure=request.state.settings.scheme == "https", path="/",
    )  # fmt: skip


async def end(request: Request, response: Response) -> None:
    sid = request.cookies.get(COOKIE)
    if sid and len(sid) <= 100:
        await request.state.redis.delete(_key(request, sid))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
