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
from portal.stores.redismux import Multiplexer

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
#
# Every attempt reserves one failure on its account and on its address *before*
# the password is verified, in one script (check and count together): a burst
# of parallel attempts cannot pass the limit between a check and a count made
# by others (issue 16: 80 parallel guesses were all verified). A sign-in that
# succeeds gives its reservation back and clears the account's count.

# KEYS: the account's and the address's counters. ARGV: their limits, the window
# (ms). Returns 0 (both reserved) or the ms until the fuller counter's window ends.
RESERVE_SCRIPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i]) then
    local left = redis.call('PTTL', key)
    if left < 1 then left = tonumber(ARGV[3]) end
    if left > wait then wait = left end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return 0
"""

# KEYS: as above. ARGV[1]: "signed_in" (the account's failures are forgotten) or
# "not_tried" (both reservations given back). The window keeps its end.
RELEASE_SCRIPT = """
for i, key in ipairs(KEYS) do
  if i == 1 and ARGV[1] == 'signed_in' then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


def _fail_keys(email: str, ip: str | None) -> tuple[str, str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    # One hash tag for both (one script counts them): a Redis Cluster's one slot.
    return f"console:{{fail}}:account:{account}", f"console:{{fail}}:ip:{ip or 'unknown'}"


@dataclass(frozen=True)
class _Script:  # what Multiplexer.evalsha needs of a script
    script: str
    sha: str

    @classmethod
    def of(cls, script: str) -> _Script:
        return cls(script, hashlib.sha1(script.encode()).hexdigest())  # noqa: S324  (Redis's id)


_RESERVE = _Script.of(RESERVE_SCRIPT)
_RELEASE = _Script.of(RELEASE_SCRIPT)


class Throttle:
    """Failed sign-ins per account and per address, over the process's shared
    Redis connection (a burst of sign-ins takes no connection from the pool)."""

    def __init__(self, mux: Multiplexer) -> None:
        self._mux = mux

    async def reserve(self, email: str, ip: str | None) -> int:
        """Count this attempt as a failure until it succeeds. Returns 0, or the
        seconds to wait (nothing counted) when the account or the address is at
        its limit."""
        left = await self._mux.evalsha(
            _RESERVE,
            _fail_keys(email, ip),
            [MAX_FAILS_ACCOUNT, MAX_FAILS_IP, FAIL_WINDOW * 1000],
        )
        return ratelimit.retry_after_s(int(left)) if left else 0

    async def signed_in(self, email: str, ip: str | None) -> None:
        await self._mux.evalsha(_RELEASE, _fail_keys(email, ip), ["signed_in"])

    async def not_tried(self, email: str, ip: str | None) -> None:
        await self._mux.evalsha(_RELEASE, _fail_keys(email, ip), ["not_tried"])
