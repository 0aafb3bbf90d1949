"""Rate limits on the public endpoints, shared by every process of every machine.

Each limit is a fixed window counter in Redis (``rl:{name}:{subject}``,
incremented and given its expiry in one atomic script on Redis's clock): at
most ``count`` requests per ``window`` seconds per subject. A request over the
limit is refused with 429 ``rate_limited`` and ``Retry-After`` (the seconds
until the window ends), and changes nothing else.

Limits and their subjects (configurable, ``0`` turns one off):

- ``PORTAL_RATE_QR`` — QR code (ticket) creation per client IP and pool
  (default 120/60: a login page refreshes its code every two minutes; an
  office behind one address still has room). Checked inside the ticket
  creation script itself, so it costs no extra round trip.
- ``PORTAL_RATE_MP_SESSION`` — mini-program sessions (``wx.login`` codes) per
  client IP and AppID (default 60/60).
- ``PORTAL_RATE_TOKEN`` — token endpoint calls per client and IP (default
  600/60): a client's own backend keeps its budget when someone else hammers
  its client_id from elsewhere, and a secret cannot be guessed at speed.

The client IP is the one the host router decided (``X-Forwarded-For`` only
from ``PORTAL_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from portal.errors import PortalError
from portal.settings import Limit
from portal.stores.redismux import Multiplexer

# The counting itself, for any script to include: one request of ``key`` against
# ``limit`` per ``window_ms``. Returns 0 when allowed, else the ms until the window ends.
LUA_HIT = """
local function rate_limit_hit(key, limit, window_ms)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, window_ms) end
  if n <= limit then return 0 end
  local left = redis.call('PTTL', key)
  if left < 1 then left = 1 end
  return left
end
"""

# KEYS: the counter. ARGV: count, window (ms). Returns as rate_limit_hit.
HIT_SCRIPT = LUA_HIT + "return rate_limit_hit(KEYS[1], tonumber(ARGV[1]), ARGV[2])\n"


class RateLimited(PortalError):
    status_code = 429
    error = "rate_limited"
    description = "Too many requests; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests; try again in {retry_after} s.")
        self.retry_after = retry_after


def retry_after_s(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def key(name: str, subject: str) -> str:
    return f"rl:{name}:{subject}"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, mux: Multiplexer) -> None:
        self._script = redis.register_script(HIT_SCRIPT)
        self._mux = mux

    async def check(self, name: str, subject: str, limit: Limit) -> None:
        """Count one request of ``subject`` against ``limit``; raise RateLimited if over."""
        if limit.off:
            return
        left = await self._mux.evalsha(
            self._script, [key(name, subject)], [limit.count, limit.window * 1000]
        )
        if left:
            raise RateLimited(retry_after_s(int(left)))
