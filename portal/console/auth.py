"""Console sign-in: sessions in Redis, CSRF tokens, and throttled failed sign-ins.

A session is a random id in a host-only cookie; Redis keeps the session under
the id's hash (a leaked Redis dump holds no usable cookie) with an idle TTL,
and the session itself records its start for the absolute limit. Every process
reads the same Redis, so sign-out and throttling hold across all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response

from portal.settings import Settings
from portal.stores import ratelimit

IDLE_SECONDS = 2 * 3600
ABSOLUTE_SECONDS = 12 * 3600
LOGIN_CSRF_COOKIE = "console_login_csrf"

# Failed sign-ins allowed per window before the account / the address must wait.
FAIL_WINDOW = 15 * 60
MAX_FAILS_ACCOUNT = 5
MAX_FAILS_IP = 20


def cookie_name(settings: Settings) -> str:
    # "__Host-": the browser refuses it unless Secure, Path=/ and no Domain, so
    # neither a pool subdomain nor plain http can plant or read it.
    return "__Host-console" if settings.scheme == "https" else "console_session"


def _key(session_id: str) -> str:
    return "console:session:" + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Session:
    id: str
    admin_id: int
    csrf: str
    created: float
    flashes: list[dict[str, Any]] = field(default_factory=list)
    dirty: bool = False

    def flash(self, kind: str, key: str, **params: Any) -> None:
        self.flashes.append({"kind": kind, "key": key, "params": params})
        self.dirty = True

    def pop_flashes(self) -> list[dict[str, Any]]:
        out, self.flashes = self.flashes, []
        if out:
            self.dirty = True
        return out

    def dump(self) -> str:
        return json.dumps(
            {
                "admin_id": self.admin_id,
                "csrf": self.csrf,
                "created": self.created,
                "flashes": self.flashes,
            }
        )


class Sessions:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def create(self, admin_id: int) -> Session:
        session = Session(
            secrets.token_urlsafe(32), admin_id, secrets.token_urlsafe(32), time.time()
        )
        await self.save(session)
        return session

    async def load(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        raw = await self._redis.get(_key(session_id))
        if raw is None:
            return None
        data = json.loads(raw)
        if data["created"] + ABSOLUTE_SECONDS < time.time():
            await self._redis.delete(_key(session_id))
            return None
        session = Session(
            session_id, data["admin_id"], data["csrf"], data["created"], data.get("flashes", [])
        )
        await self._redis.expire(_key(session_id), self._ttl(session))  # idle timer restarts
        return session

    def _ttl(self, session: Session) -> int:
        left = int(session.created + ABSOLUTE_SECONDS - time.time())
        return max(1, min(IDLE_SECONDS, left))

    async def save(self, session: Session) -> None:
        await self._redis.set(_key(session.id), session.dump(), ex=self._ttl(session))
        session.dirty = False

    async def delete(self, session_id: str | None) -> None:
        if session_id:
            await self._redis.delete(_key(session_id))


def set_session_cookie(response: Response, settings: Settings, session: Session) -> None:
    response.set_cookie(
        cookie_name(settings),
        session.id,
        max_age=ABSOLUTE_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.scheme == "https",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.scheme == "https",
    )


def csrf_ok(expected: str | None, given: object) -> bool:
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# --- the sign-in form's own CSRF token (no session yet: a double-submit cookie) ---


def login_csrf(request: Request) -> tuple[str, bool]:
    """The token for the sign-in form, and whether it is new (to set as a cookie)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if token and 20 <= len(token) <= 100:
        return token, False
    return secrets.token_urlsafe(24), True


def set_login_csrf_cookie(response: Response, settings: Settings, token: str) -> None:
    # Only the sign-in page needs it (so no "__Host-": that prefix wants Path=/).
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/console/login",
        httponly=True,
        samesite="strict",
        secure=settings.scheme == "https",
    )


def clear_login_csrf_cookie(response: Response, settings: Settings) -> None:
    """Spent at sign-in; cleared with the attributes it was set with."""
    response.delete_cookie(
        LOGIN_CSRF_COOKIE,
        path="/console/login",
        httponly=True,
        samesite="strict",
        secure=settings.scheme == "https",
    )


# --- throttling failed sign-ins ----------------------------------------------


def _fail_keys(email: str, ip: str | None) -> tuple[str, str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"console:fail:account:{account}", f"console:fail:ip:{ip or 'unknown'}"


async def throttled(redis: aioredis.Redis, email: str, ip: str | None) -> int:
    """Seconds the sign-in must wait (0: may try now)."""
    account_key, ip_key = _fail_keys(email, ip)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(account_key).ttl(account_key).get(ip_key).ttl(ip_key)
        account, account_ttl, by_ip, ip_ttl = await pipe.execute()
    wait = 0
    if account is not None and int(account) >= MAX_FAILS_ACCOUNT:
        wait = max(wait, account_ttl if account_ttl > 0 else FAIL_WINDOW)
    if by_ip is not None and int(by_ip) >= MAX_FAILS_IP:
        wait = max(wait, ip_ttl if ip_ttl > 0 else FAIL_WINDOW)
    return wait


async def record_failure(redis: aioredis.Redis, email: str, ip: str | None) -> None:
    # The window starts with the first failure and is not extended by later ones:
    # the rate limiter's counting script (INCR, and an expiry only on a new key),
    # which also runs on Redis before 7 (no EXPIRE ... NX there).
    count = redis.register_script(ratelimit.HIT_SCRIPT)
    for key in _fail_keys(email, ip):
        await count(keys=[key], args=[2**31, FAIL_WINDOW * 1000])


async def clear_failures(redis: aioredis.Redis, email: str) -> None:
    await redis.delete(_fail_keys(email, None)[0])
