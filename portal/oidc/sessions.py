"""The portal's own login session on a pool host (single sign-on).

After a scan login on the hosted page the browser holds a host-only cookie
for the pool; a later authorization request from any client of the pool is
answered without a new scan unless the client asks otherwise (``prompt=login``,
``max_age``). Logout ends it. The cookie holds a random id; Redis holds the
rest, under the pool's id.

Two more defences live here (docs/security.md):

- **Browser binding.** The hosted page binds its authorization request to a
  random host-only cookie of the browser that opened it (``SameSite=Lax``,
  so a cross-site form never carries it). ``/oidc/auth/complete`` refuses a
  ticket completed from another browser: without it, an attacker could confirm
  their own ticket with their own phone and have a victim's browser post it
  (login CSRF), fixing the attacker's account as the victim's SSO session.
- **Logout confirmation.** A logout that the signed-in user did not evidently
  ask for (no ``id_token_hint`` naming this session's user) is confirmed on a
  page first, with a token derived from the session: an image tag on another
  site cannot end someone's session.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from portal.stores.crypto import random_token

COOKIE = "portal_session"
BROWSER_COOKIE = "portal_browser"
TTL = 7 * 86400
_TOKEN_MAX = 100


@dataclass(frozen=True)
class Session:
    user_id: str
    auth_time: int
    family_id: str | None = None


def cookie_name(request: Request, name: str) -> str:
    """``__Host-`` over https: the browser then takes the cookie only with Secure,
    Path=/ and no Domain, so no other host under the apex (another pool's, or a
    forged plain-http answer for one) can plant a session or a browser binding
    here. Plain http (dev) cannot use the prefix."""
    return f"__Host-{name}" if request.state.settings.scheme == "https" else name


def _key(request: Request, sid: str) -> str:
    return f"sso:{request.state.pool.id}:{request.state.box.hash_secret(sid)}"


def _sid(request: Request) -> str | None:
    sid = request.cookies.get(cookie_name(request, COOKIE))
    return sid if sid and len(sid) <= _TOKEN_MAX else None


async def current(request: Request) -> Session | None:
    sid = _sid(request)
    if sid is None:
        return None
    raw = await request.state.redis.get(_key(request, sid))
    return Session(**json.loads(raw)) if raw else None


def _same_site(request: Request) -> str:
    """Silent authentication (``prompt=none`` in a hidden iframe of a client's
    site) needs the session cookie in a cross-site frame: ``SameSite=None``,
    which browsers take only with ``Secure``, so over https alone. Over plain
    http (dev) it stays ``Lax``: silent renewal then works only from a site
    that is same-site with the pool (docs/security.md)."""
    return "none" if request.state.settings.scheme == "https" else "lax"


async def start(
    request: Request, response: Response, user_id: str, auth_time: int | None = None
) -> str:
    """Start a session; returns its cookie value (for ``add_login``)."""
    sid = random_token(32)
    data = Session(user_id=user_id, auth_time=auth_time or int(time.time()))
    await request.state.redis.set(_key(request, sid), json.dumps(data.__dict__), ex=TTL)
    response.set_cookie(
        cookie_name(request, COOKIE), sid, max_age=TTL, httponly=True,
        samesite=_same_site(request),  # type: ignore[arg-type]
        secure=request.state.settings.scheme == "https", path="/",
    )  # fmt: skip
    return sid


def _logins_key(request: Request, sid: str) -> str:
    return f"ssologins:{request.state.pool.id}:{request.state.box.hash_secret(sid)}"


async def add_login(
    request: Request, client_id: str, login: str, cookie: str | None = None
) -> None:
    """Remember that this session logged ``client_id`` in as ``login`` (the ``sid``
    of its tokens): logout ends each (back- and front-channel logout)."""
    cookie = cookie or _sid(request)
    if cookie is None:
        return
    key = _logins_key(request, cookie)
    async with request.state.redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, login, client_id)
        pipe.expire(key, TTL)
        await pipe.execute()


async def end(request: Request) -> dict[str, str]:
    """End this browser's session; returns its logins (``sid`` → client id). The
    response that follows removes the cookie (``forget``)."""
    sid = _sid(request)
    logins: dict[str, str] = {}
    if sid is not None:
        raw = await request.state.redis.hgetall(_logins_key(request, sid))
        logins = {_text(k): _text(v) for k, v in raw.items()}
        await request.state.redis.delete(_key(request, sid), _logins_key(request, sid))
    return logins


def forget(request: Request, response: Response) -> None:
    """Remove the session cookie, with the attributes it was set with."""
    response.delete_cookie(
        cookie_name(request, COOKIE), path="/", httponly=True,
        samesite=_same_site(request),  # type: ignore[arg-type]
        secure=request.state.settings.scheme == "https",
    )  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def logout_token(request: Request) -> str | None:
    """What the logout confirmation form must send back: derived from this
    browser's session id, which another site can neither read nor guess."""
    sid = _sid(request)
    return request.state.box.hash_secret(f"logout:{sid}")[:32] if sid else None


def check_logout_token(request: Request, value: str | None) -> bool:
    expected = logout_token(request)
    return bool(expected and value) and hmac.compare_digest(expected, value or "")


def _browser_hash(request: Request, value: str) -> str:
    return request.state.box.hash_secret(f"browser:{value}")


def browser_binding(request: Request) -> tuple[str, str | None]:
    """(the hash an authorization request is bound to, a new cookie value to set
    or None when the browser already has one)."""
    value = request.cookies.get(cookie_name(request, BROWSER_COOKIE))
    new = None
    if not value or len(value) > _TOKEN_MAX:
        value = new = random_token(32)
    return _browser_hash(request, value), new


def same_browser(request: Request, bound: str | None) -> bool:
    """Whether this request comes from the browser the authorization request is
    bound to. Requests saved before binding existed (``None``) pass: they live
    only for a QR code's lifetime."""
    if bound is None:
        return True
    value = request.cookies.get(cookie_name(request, BROWSER_COOKIE))
    if not value or len(value) > _TOKEN_MAX:
        return False
    return hmac.compare_digest(_browser_hash(request, value), bound)


def set_browser_cookie(request: Request, response: Response, value: str) -> None:
    # A browser-session cookie: it only has to outlive a QR code on screen.
    response.set_cookie(
        cookie_name(request, BROWSER_COOKIE), value, httponly=True, samesite="lax",
        secure=request.state.settings.scheme == "https", path="/",
    )  # fmt: skip
