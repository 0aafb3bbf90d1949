"""QR login tickets in Redis.

A ticket is one hash, ``ticket:{TAG}REST`` for the id TAG + REST, where TAG is
its pool's hash tag (``stores/hashtags.py``: one Redis Cluster slot holds a
pool's tickets and their rate limits). Every state change is one Lua script,
so two scans, confirms or exchanges racing on the same ticket cannot both
win, and each change is published (from inside the same script) on the
tickets channel for the waiting browsers. Time is Redis's own clock, so
portal hosts with skewed clocks agree on when a ticket expires; a ticket past
its time becomes ``expired`` on the next look, even when nobody is watching.

The ticket id is global (the mini program knows only the id); the pool it
belongs to is a field, and every pool-host route checks it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from portal.errors import PortalError
from portal.obs.metrics import TALLY, TICKETS_CREATED, TICKETS_EXCHANGED, TICKETS_FINAL
from portal.settings import Limit
from portal.stores import hashtags, ratelimit
from portal.stores.crypto import SecretBox
from portal.stores.events import TICKETS_CHANNEL
from portal.stores.redismux import Multiplexer

FINAL = frozenset({"confirmed", "cancelled", "expired"})
STATUSES = ("pending", "scanned", *sorted(FINAL))
# Final tickets stay readable this long after their QR lifetime ends, so a
# late status request learns "expired" (or the outcome) rather than 404.
RETENTION_S = 300
_CACHE_S = 5.0
_CACHE_MAX = 100_000
_NEAR_EXPIRY_MS = 1500
NO_LIMIT = Limit(0)
_CONFIRMED = TICKETS_FINAL.labels("confirmed")
_CANCELLED = TICKETS_FINAL.labels("cancelled")


def key(ticket: str) -> str:
    # ticket:{TAG}REST: a ticket lives in its pool's hash slot (stores/hashtags.py)
    return hashtags.ticket_key(ticket)


class TicketNotFound(PortalError):
    status_code = 404
    error = "ticket_not_found"
    description = "This QR code does not exist or is long gone."


class TicketExpired(PortalError):
    status_code = 410
    error = "ticket_expired"
    description = "This QR code has expired or was already used; refresh it on the website."


class TicketTaken(PortalError):
    status_code = 409
    error = "ticket_taken"
    description = "Someone else already scanned this QR code."


class NotScanner(PortalError):
    status_code = 403
    error = "not_scanner"
    description = "Only the WeChat user who scanned this QR code can confirm or cancel it."


class NotScanned(PortalError):
    status_code = 409
    error = "ticket_not_scanned"
    description = "Scan the QR code before confirming."


class InvalidSecret(PortalError):
    status_code = 403
    error = "invalid_secret"
    description = "The ticket secret is missing or wrong."


_PROLOGUE = (
    """
redis.replicate_commands()
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return {'not_found'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function publish(status)
  local f = redis.call('HMGET', k, 'exp', 'nick', 'avatar', 'num')
  redis.call('PUBLISH', '"""
    + TICKETS_CHANNEL
    + """', cjson.encode(
    {t = ARGV[1], s = status, e = tonumber(f[1]), n = f[2] or '', a = f[3] or '', m = f[4] or ''}))
end
-- Where the login was started and how its QR code reached the phone (issue 20).
local function origin()
  local o = redis.call('HMGET', k, 'scene', 'src', 'ua', 'ip', 'site', 'ct', 'nums')
  for i = 1, 7 do o[i] = o[i] or '' end
  return o
end
local status = redis.call('HGET', k, 'status')
if (status == 'pending' or status == 'scanned') and now >= tonumber(redis.call('HGET', k, 'exp')) then
  status = 'expired'
  redis.call('HSET', k, 'status', status)
  publish(status)
end
"""
)

# One round trip, on Redis's clock, with the creator's rate limits counted in it:
# the address's first (a refused address spends nothing of its pool's budget),
# then the pool's. KEYS: ticket, address counter, pool counter. ARGV: pool id,
# client id, secret hash, lifetime (s), key TTL (s), then count (0: none) and
# window (ms) of the address's limit, then of the pool's, then "1" for a ticket
# of the hosted page (its login ends there, never at the QR API's exchange), then
# where it was started (issue 20, kept raw: parsed only if someone scans it): the
# User-Agent, the address, the website's host and the device (origin.device_of).
_CREATE = (
    ratelimit.LUA_HIT
    + """
redis.replicate_commands()
for i = 0, 1 do
  local limit = tonumber(ARGV[6 + 2 * i])
  if limit > 0 then
    local left = rate_limit_hit(KEYS[2 + i], limit, ARGV[7 + 2 * i])
    if left > 0 then return {'limited', left} end
  end
end
local t = redis.call('TIME')
local exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4]) * 1000
redis.call('HSET', KEYS[1], 'status', 'pending', 'pool', ARGV[1], 'client', ARGV[2], 'sh', ARGV[3], 'exp', exp,
  'ua', ARGV[11], 'ip', ARGV[12], 'site', ARGV[13], 'dev', ARGV[14], 'ct', exp - tonumber(ARGV[4]) * 1000)
if ARGV[10] == '1' then redis.call('HSET', KEYS[1], 'hosted', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {exp, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"""
)

# ARGV: ticket
_STATUS = (
    _PROLOGUE
    + """
local f = redis.call('HMGET', k, 'pool', 'client', 'exp', 'nick', 'avatar', 'sh', 'num')
return {'ok', status, f[1], f[2], f[3], f[4] or '', f[5] or '', f[6], tostring(now), f[7] or ''}
"""
)

# ARGV: ticket, appid, openid, nickname, avatar, then (issue 20) the launch scene, its
# kind (origin.scene_kind), the pool's scan_source_policy, and the number to match
# with its three choices ('' without number matching). How the QR code reached the
# phone against where the ticket was made decides 'src' (origin.py has the table);
# a refused scan leaves the ticket pending. Answers: outcome, Redis's clock, then
# origin(): scene, src, ua, ip, site, ct, nums.
_SCAN = (
    _PROLOGUE
    + """
if status == 'pending' then
  local dev = redis.call('HGET', k, 'dev') or 'pc'
  local src = 'unknown'
  if ARGV[7] == 'camera' then src = 'ok'
  elseif ARGV[7] == 'image' then
    if dev == 'wechat' then src = 'ok' elseif ARGV[8] == 'refuse' then src = 'refused' else src = 'warned' end
  elseif ARGV[7] == 'link' then
    if dev == 'mobile' then src = 'ok' else src = 'warned' end
  end
  if src == 'refused' then
    local o = origin()
    o[1], o[2] = ARGV[6], src
    return {'refused', tostring(now), unpack(o)}
  end
  redis.call('HSET', k, 'status', 'scanned', 'appid', ARGV[2], 'openid', ARGV[3], 'nick', ARGV[4], 'avatar', ARGV[5],
    'scene', ARGV[6], 'src', src)
  if ARGV[9] ~= '' then redis.call('HSET', k, 'num', ARGV[9], 'nums', ARGV[10]) end
  publish('scanned')
  return {'ok', tostring(now), unpack(origin())}
end
if status == 'scanned' then
  local by = redis.call('HMGET', k, 'appid', 'openid')
  if by[1] == ARGV[2] and by[2] == ARGV[3] then return {'ok', tostring(now), unpack(origin())} end
  return {'taken'}
end
return {'expired'}
"""
)

# A confirmation is two steps around the database's transaction (Tickets.claim):
# the claim reserves the scanned ticket for one confirmation of its scanner for
# a lease; the confirm, once the user's row is committed, makes it "confirmed".
# ARGV: ticket, appid, openid, claim token, lease (ms), the number picked ('' none).
# With number matching on (issue 20), a wrong number cancels the ticket at once
# ('number_mismatch'): nobody gets a second guess. Answers origin() after the outcome.
_CLAIM = (
    _PROLOGUE
    + """
if status == 'pending' then return {'not_scanned'} end
if status ~= 'scanned' then return {'expired'} end
local by = redis.call('HMGET', k, 'appid', 'openid', 'claim', 'claimexp', 'num')
if by[1] ~= ARGV[2] or by[2] ~= ARGV[3] then return {'not_scanner'} end
if by[3] and tonumber(by[4]) > now then return {'expired'} end
if by[5] and ARGV[6] == '' then return {'number_required'} end
if by[5] and ARGV[6] ~= by[5] then
  redis.call('HSET', k, 'status', 'cancelled')
  publish('cancelled')
  return {'number_mismatch', unpack(origin())}
end
redis.call('HSET', k, 'claim', ARGV[4], 'claimexp', now + tonumber(ARGV[5]))
return {'ok', unpack(origin())}
"""
)

# ARGV: ticket, claim token
_RELEASE = """
if redis.call('HGET', KEYS[1], 'claim') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'claim', 'claimexp')
end
return {'ok'}
"""

# ARGV: ticket, appid, openid, user id, auth time (s), nickname, avatar url, claim token
_CONFIRM = (
    _PROLOGUE
    + """
if status == 'pending' then return {'not_scanned'} end
if status ~= 'scanned' then return {'expired'} end
local by = redis.call('HMGET', k, 'appid', 'openid', 'claim')
if by[1] ~= ARGV[2] or by[2] ~= ARGV[3] then return {'not_scanner'} end
if by[3] ~= ARGV[8] then return {'expired'} end
redis.call('HSET', k, 'status', 'confirmed', 'uid', ARGV[4], 'at', ARGV[5], 'nick', ARGV[6], 'avatar', ARGV[7])
publish('confirmed')
return {'ok'}
"""
)

# Only the scanner may cancel (issue 16): a pending ticket has no scanner, and a
# mini-program session that merely knows its id must not end someone's login.
# ARGV: ticket, appid, openid
_CANCEL = (
    _PROLOGUE
    + """
if status == 'pending' then return {'not_scanner'} end
if status ~= 'scanned' then return {'expired'} end
local by = redis.call('HMGET', k, 'appid', 'openid')
if by[1] ~= ARGV[2] or by[2] ~= ARGV[3] then return {'not_scanner'} end
redis.call('HSET', k, 'status', 'cancelled')
publish('cancelled')
return {'ok', unpack(origin())}
"""
)

# ARGV: ticket, secret hash, "1" where a hosted page's ticket may end (its completion)
_EXCHANGE = (
    _PROLOGUE
    + """
if redis.call('HGET', k, 'sh') ~= ARGV[2] then return {'bad_secret'} end
if ARGV[3] ~= '1' and redis.call('HEXISTS', k, 'hosted') == 1 then return {'hosted'} end
if status ~= 'confirmed' then return {'not_confirmed', status} end
if redis.call('HSETNX', k, 'used', '1') == 0 then return {'used'} end
local f = redis.call('HMGET', k, 'pool', 'client', 'uid', 'at', 'appid', 'openid')
return {'ok', f[1], f[2], f[3], f[4], f[5], f[6]}
"""
)


@dataclass(frozen=True)
class NewTicket:
    ticket: str
    secret: str
    expires_in: int


@dataclass(frozen=True)
class TicketState:
    ticket: str
    status: str
    pool_id: int
    client_id: str
    expires_at_ms: int
    now_ms: int
    nickname: str
    avatar_url: str
    secret_hash: str
    number: str = ""  # number matching (issue 20): what the PC page shows once scanned

    @property
    def expires_in(self) -> int:
        if self.status in FINAL:
            return 0
        return max(0, -(-(self.expires_at_ms - self.now_ms) // 1000))

    def public(self) -> dict:
        """The status JSON of the QR API."""
        scanned = self.status in ("scanned", "confirmed") and (self.nickname or self.avatar_url)
        body = {
            "status": self.status,
            "expires_in": self.expires_in,
            "scanned_by": {"nickname": self.nickname or None, "avatar_url": self.avatar_url or None}
            if scanned
            else None,
        }
        if self.number and self.status == "scanned":
            body["number"] = int(self.number)  # the person picks it on the phone
        return body


@dataclass(frozen=True)
class Origin:
    """Where a ticket was made and how its QR code reached the phone, as the
    ticket holds them (raw; portal/scan/origin.py describes them)."""

    scene: int | None  # WeChat's launch scene the mini program sent, if any
    source: str  # 'ok', 'warned', 'refused', 'unknown' (sql/0011_scan_origin.sql)
    user_agent: str
    ip: str
    site: str
    created_ms: int
    choices: tuple[str, ...] = ()  # number matching: the three numbers offered

    @classmethod
    def of(cls, fields: list) -> Origin:
        scene, source, ua, ip, site, created, nums = fields
        return cls(
            int(scene) if scene.isdigit() else None,
            source or "unknown",
            ua,
            ip,
            site,
            int(created or 0),
            tuple(nums.split(",")) if nums else (),
        )


class ScanRefused(Exception):
    """The pool refuses this ticket's QR code opened that way (scan_source_policy)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin


class NumberMismatch(PortalError):
    status_code = 403
    error = "number_mismatch"
    description = "That is not the number shown on the computer: the login was cancelled."

    def __init__(self, origin: Origin | None = None) -> None:
        super().__init__()
        self.origin = origin


class NumberRequired(PortalError):
    status_code = 400
    error = "number_required"
    description = "Pick the number shown on the computer to confirm."


@dataclass(frozen=True)
class Exchanged:
    pool_id: int
    client_id: str
    user_id: str
    auth_time: int
    appid: str
    openid: str


class Tickets:
    def __init__(
        self,
        redis: aioredis.Redis,
        box: SecretBox,
        mux: Multiplexer,
        *,
        per_address: Limit = NO_LIMIT,
        per_pool: Limit = NO_LIMIT,
    ) -> None:
        self.redis = redis
        self.box = box
        # Counted in ``create`` itself, which every path that makes a ticket calls
        # (the QR API, the hosted page, the pool's page): none can go around them.
        self.per_address = per_address
        self.per_pool = per_pool
        self._mux = mux  # every ticket script goes over the process's shared connection
        sharded = getattr(mux, "cluster", False)  # a Redis Cluster: SPUBLISH, shard channels

        def script(text: str):
            text = hashtags.sharded_script(text, TICKETS_CHANNEL) if sharded else text
            return redis.register_script(text)

        self._create = script(_CREATE)
        self._status = script(_STATUS)
        self._scan = script(_SCAN)
        self._claim = script(_CLAIM)
        self._release = script(_RELEASE)
        self._confirm = script(_CONFIRM)
        self._cancel = script(_CANCEL)
        self._exchange = script(_EXCHANGE)
        # On a cluster these answer once a replica has them: a master lost right
        # after takes no confirmed login along, and cannot let one be used twice.
        # Not the claim: a claim lost with its master only makes its confirm fail
        # ("expired": the confirm checks the claim's token, on the replica that
        # has no claim), so a replica's copy of it adds a wait and protects nothing.
        mux.make_durable(self._confirm, self._exchange)
        # The event hub hears the changes of tickets this process holds (a cluster's
        # hub subscribes to their pool's shard channel; EventHub hears them all).
        self.follow: Callable[[str], None] = _hear_all
        # ticket → (state, Redis's clock minus ours, good until); oldest first.
        self._cache: OrderedDict[str, tuple[TicketState, float, float]] = OrderedDict()

    async def create(
        self,
        *,
        pool_id: int,
        client_id: str,
        lifetime: int,
        address: str,
        hosted: bool = False,
        user_agent: str = "",
        site: str = "",
        device: str = "pc",
    ) -> NewTicket:
        """A new pending ticket for a browser at ``address`` (the client IP);
        RateLimited, and nothing created, when that address or the pool is over
        its limit (``per_address``, ``per_pool``). A ``hosted`` ticket (the hosted
        login page's) ends only as a code bound to its authorization request: the
        QR API's exchange refuses it, without spending it. ``user_agent``, ``site``
        and ``device`` (origin.device_of) say where it was made, for the confirm
        screen; they are stored as they are, parsed only if someone scans."""
        per_address, per_pool = self.per_address, self.per_pool
        # One read of the system's randomness for both: the ticket, 32 characters
        # (its pool's 4-character hash tag, then 168 random bits; fits WeChat's
        # 32-character scene), and the secret, 43 (256 bits).
        raw = base64.urlsafe_b64encode(secrets.token_bytes(56)).decode()
        ticket, secret = hashtags.pool_tag(pool_id) + raw[4:32], raw[32:75]
        secret_hash = self.box.hash_secret(secret)
        r = await self._mux.evalsha(
            self._create,
            [key(ticket), *hashtags.qr_limit_keys(pool_id, address)],
            [pool_id, client_id, secret_hash, lifetime, lifetime + RETENTION_S,
             per_address.count, per_address.window * 1000,
             per_pool.count, per_pool.window * 1000, "1" if hosted else "",
             user_agent[:300], address, site[:253], device],
        )  # fmt: skip
        if r[0] == "limited":
            raise ratelimit.RateLimited(ratelimit.retry_after_s(int(r[1])))
        exp, now = r
        self._remember(
            TicketState(
                ticket, "pending", pool_id, client_id, int(exp), int(now), "", "", secret_hash
            )
        )
        TALLY.inc(TICKETS_CREATED)  # the hot path: counted in process, written twice a second
        return NewTicket(ticket, secret, lifetime)

    async def state(self, ticket: str) -> TicketState:
        """The ticket as Redis has it now (expiring it if its time is up)."""
        r = await self._mux.evalsha(self._status, [key(ticket)], [ticket])
        if r[0] != "ok":
            self._cache.pop(ticket, None)
            raise TicketNotFound()
        _, status, pool, client, exp, nick, avatar, sh, now, number = r
        state = TicketState(
            ticket, status, int(pool), client, int(exp), int(now), nick, avatar, sh, number
        )
        self._remember(state)
        return state

    # A page polling its ticket's status is the commonest request there is. Each
    # process keeps what it last learnt of recent tickets (from Redis, or from
    # the tickets channel, which carries every change) and answers plain status
    # reads from it for a few seconds; near its expiry a ticket is read from
    # Redis, whose clock decides. Waiting (long poll, SSE) always reads Redis.

    def _remember(self, state: TicketState) -> None:
        self.follow(state.ticket)
        cache = self._cache
        now = time.monotonic()
        # Entries are kept in the order they go stale: drop the stale ones from the
        # front, so the cache holds a few seconds of tickets, not all of them.
        while cache:
            first = next(iter(cache))
            if cache[first][2] > now and len(cache) < _CACHE_MAX:
                break
            del cache[first]
        offset = state.now_ms - time.time() * 1000  # Redis's clock minus ours
        cache.pop(state.ticket, None)
        cache[state.ticket] = (state, offset, now + _CACHE_S)

    async def recent_state(self, ticket: str) -> TicketState:
        entry = self._cache.get(ticket)
        if entry is not None:
            state, offset, until = entry
            if time.monotonic() < until:
                now_ms = int(time.time() * 1000 + offset)
                if state.status in FINAL or state.expires_at_ms - now_ms > _NEAR_EXPIRY_MS:
                    return dataclasses.replace(state, now_ms=now_ms)
        return await self.state(ticket)

    def handle_event(self, message: dict) -> None:
        """A change published by any process: keep the cached copy current."""
        entry = self._cache.get(message.get("t"))  # type: ignore[arg-type]
        if entry is None or message.get("s") not in STATUSES:
            return
        state, offset, until = entry
        changed = dataclasses.replace(
            state,
            status=message["s"],
            nickname=message.get("n") or "",
            avatar_url=message.get("a") or "",
            expires_at_ms=int(message.get("e") or state.expires_at_ms),
            number=message.get("m") or "",
        )
        self._cache[state.ticket] = (changed, offset, until)

    def forget_all(self) -> None:
        self._cache.clear()

    def forget_tag(self, tag: str) -> None:
        """Forget the tickets of one pool tag (its events may have been missed)."""
        for ticket in [t for t in self._cache if hashtags.ticket_tag(t) == tag]:
            del self._cache[ticket]

    def check_secret(self, state: TicketState, secret: str | None) -> None:
        if not secret or not self.box.verify_secret(secret, state.secret_hash):
            raise InvalidSecret()

    async def scan(
        self,
        ticket: str,
        appid: str,
        openid: str,
        *,
        nickname: str = "",
        avatar_url: str = "",
        scene: int | None = None,
        scene_kind: str = "",
        policy: str = "warn",
        number: tuple[str, ...] = (),
    ) -> tuple[int, Origin]:
        """Redis's clock at the scan and the ticket's origin; ``ScanRefused`` when
        the pool refuses the QR code opened that way (the ticket stays pending).
        ``number``: the number to match and the three choices (number matching)."""
        r = await self._mux.evalsha(
            self._scan,
            [key(ticket)],
            [ticket, appid, openid, nickname, avatar_url, "" if scene is None else scene,
             scene_kind, policy, number[0] if number else "", ",".join(number[1:])],
        )  # fmt: skip
        if r[0] == "refused":
            raise ScanRefused(Origin.of(r[2:]))
        _raise_for(r[0])
        return int(r[1]), Origin.of(r[2:])

    async def claim(
        self, ticket: str, appid: str, openid: str, lease_ms: int = 15_000, *, number: str = ""
    ) -> tuple[str, Origin]:
        """Reserve a scanned ticket for one confirmation by its scanner; the token
        to ``confirm`` or ``release`` it with. A second claim while the lease runs
        is refused like a confirmation of a final ticket (410).

        Why two steps: the user's row must be committed before anyone can see
        the ticket "confirmed" (a browser exchanges it at once and reads the
        user), yet only one of several concurrent confirmations may write it.
        The claim decides the winner before the transaction; ``confirm`` after
        the commit publishes. A process that dies in between leaves a lease
        that runs out, and the scanner can confirm again.

        With number matching, ``number`` is the one picked: a wrong one cancels
        the ticket (``NumberMismatch``). Returns the token and the ticket's origin."""
        token = secrets.token_hex(8)
        r = await self._mux.evalsha(
            self._claim, [key(ticket)], [ticket, appid, openid, token, lease_ms, number]
        )
        if r[0] == "number_mismatch":
            _CANCELLED.inc()
            raise NumberMismatch(Origin.of(r[1:]))
        if r[0] == "number_required":
            raise NumberRequired()
        _raise_for(r[0])
        return token, Origin.of(r[1:])

    async def release(self, ticket: str, claim: str) -> None:
        """Give a claim back (the confirmation failed): the scanner may try again."""
        await self._mux.evalsha(self._release, [key(ticket)], [ticket, claim])

    async def confirm(
        self,
        ticket: str,
        appid: str,
        openid: str,
        *,
        claim: str,
        user_id: str,
        auth_time: int,
        nickname: str,
        avatar_url: str,
    ) -> None:
        r = await self._mux.evalsha(
            self._confirm,
            [key(ticket)],
            [ticket, appid, openid, user_id, auth_time, nickname, avatar_url, claim],
        )
        _raise_for(r[0])
        _CONFIRMED.inc()

    async def cancel(self, ticket: str, appid: str, openid: str) -> Origin:
        r = await self._mux.evalsha(self._cancel, [key(ticket)], [ticket, appid, openid])
        _raise_for(r[0])
        _CANCELLED.inc()
        return Origin.of(r[1:])

    async def exchange(self, ticket: str, secret: str, *, hosted: bool = False) -> Exchanged:
        """Once, for a confirmed ticket; a hosted page's ticket only where it ends
        (``hosted``: the hosted page's completion)."""
        r = await self._mux.evalsha(
            self._exchange,
            [key(ticket)],
            [ticket, self.box.hash_secret(secret or ""), "1" if hosted else ""],
        )
        if r[0] == "ok":
            TICKETS_EXCHANGED.inc()
            return Exchanged(int(r[1]), r[2], r[3], int(r[4]), r[5], r[6])
        if r[0] == "bad_secret":
            raise InvalidSecret()
        if r[0] == "hosted":
            # Its redirect URI, PKCE, scope and state are checked only where it ends:
            # here it would give tokens around all of that. Not spent.
            raise PortalError(
                "This login is completed on its login page, not through the QR API.",
                error="invalid_grant",
            )
        if r[0] == "not_found":
            raise TicketNotFound()
        if r[0] == "used":
            raise PortalError("This login was already exchanged.", error="invalid_grant")
        raise PortalError(f"The login is not confirmed (status: {r[1]}).", error="invalid_grant")


def _hear_all(ticket: str) -> None:
    pass


def _raise_for(outcome: str) -> None:
    errors = {
        "not_found": TicketNotFound,
        "expired": TicketExpired,
        "taken": TicketTaken,
        "not_scanner": NotScanner,
        "not_scanned": NotScanned,
    }
    if outcome != "ok":
        raise errors[outcome]()


def parse_event(message: dict) -> tuple[str, dict] | None:
    """A tickets-channel message → (ticket, fields) or None if malformed."""
    ticket = message.get("t")
    if not isinstance(ticket, str) or message.get("s") not in STATUSES:
        return None
    return ticket, message


def dumps(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
