"""Authorization requests and authorization codes, in Redis.

A code lives 60 seconds and works once. A redeemed code leaves a marker
naming the token family it produced, so a second use is recognised as replay
and revokes what the first one issued (RFC 6749 §4.1.2).

Redemption is one Lua script that checks the client, the ``redirect_uri`` and
the PKCE verifier and spends the code only when all three match: a failed
attempt (another client of the pool, a guessed verifier) leaves the code to
its rightful client, and of two good attempts exactly one wins.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from portal.stores.crypto import SecretBox

CODE_TTL = 60
SPENT_TTL = 600

# KEYS: the live code, its spent marker. ARGV: client_id, redirect_uri, the S256
# challenge of the verifier sent ("" for none), the marker's TTL.
# Answers {"ok", grant}, {"replay", family}, {"unknown"}, or {"mismatch", what}
# with what = "client", "redirect_uri", "verifier_missing", "verifier_unexpected"
# or "verifier"; nothing is changed unless the answer is "ok".
_REDEEM = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  local family = redis.call('GET', KEYS[2])
  if family then return {'replay', family} end
  return {'unknown'}
end
local grant = cjson.decode(raw)
if grant.client_id ~= ARGV[1] then return {'mismatch', 'client'} end
if grant.redirect_uri ~= ARGV[2] then return {'mismatch', 'redirect_uri'} end
local challenge = grant.code_challenge
if type(challenge) ~= 'string' then challenge = '' end
if challenge ~= ARGV[3] then
  if ARGV[3] == '' then return {'mismatch', 'verifier_missing'} end
  if challenge == '' then return {'mismatch', 'verifier_unexpected'} end
  return {'mismatch', 'verifier'}
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], grant.family_id, 'EX', tonumber(ARGV[4]))
return {'ok', raw}
"""


class CodeMismatch(Exception):
    """The code exists but this attempt does not match it; the code is not spent."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class AuthRequest:
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    response_mode: str
    max_age: int | None = None
    browser: str | None = None  # sessions.browser_binding: the browser that opened the page
    response_type: str = "code"  # or "id_token", "code id_token" (issue 18)


@dataclass(frozen=True)
class CodeGrant:
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    user_id: str
    auth_time: int
    family_id: str


def _request_key(pool_id: int, ticket: str) -> str:
    return f"authreq:{pool_id}:{ticket}"


async def save_request(
    redis: aioredis.Redis, pool_id: int, ticket: str, req: AuthRequest, ttl: int
) -> None:
    await redis.set(_request_key(pool_id, ticket), json.dumps(asdict(req)), ex=ttl)


async def take_request(redis: aioredis.Redis, pool_id: int, ticket: str) -> AuthRequest | None:
    raw = await redis.getdel(_request_key(pool_id, ticket))
    return AuthRequest(**json.loads(raw)) if raw else None


async def peek_request(redis: aioredis.Redis, pool_id: int, ticket: str) -> AuthRequest | None:
    raw = await redis.get(_request_key(pool_id, ticket))
    return AuthRequest(**json.loads(raw)) if raw else None


class Codes:
    def __init__(self, redis: aioredis.Redis, box: SecretBox) -> None:
        self.redis = redis
        self.box = box
        self._redeem = redis.register_script(_REDEEM)

    def _keys(self, pool_id: int, code: str) -> tuple[str, str]:
        h = self.box.hash_secret(code)
        # One hash tag for both (the redeem script touches both): one cluster slot.
        return f"code:{{{pool_id}:{h}}}", f"codespent:{{{pool_id}:{h}}}"

    async def issue(self, pool_id: int, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        live, _ = self._keys(pool_id, code)
        await self.redis.set(live, json.dumps(asdict(grant)), ex=CODE_TTL)
        return code

    async def redeem(
        self, pool_id: int, code: str, *, client_id: str, redirect_uri: str, challenge: str
    ) -> tuple[CodeGrant | None, str | None]:
        """(grant, None) the first time; (None, family_id) on replay; (None, None) if
        unknown; CodeMismatch, with the code left unspent, when the client, the
        redirect URI or ``challenge`` (the S256 of the verifier sent, "" for none)
        does not match the code's."""
        live, spent = self._keys(pool_id, code)
        answer = await self._redeem(
            keys=[live, spent], args=[client_id, redirect_uri, challenge, SPENT_TTL]
        )
        kind, *rest = (v.decode() if isinstance(v, bytes) else v for v in answer)
        if kind == "ok":
            return CodeGrant(**json.loads(rest[0])), None
        if kind == "replay":
            return None, rest[0]
        if kind == "mismatch":
            raise CodeMismatch(rest[0])
        return None, None
