"""Authorization requests and authorization codes, in Redis.

A code lives 60 seconds and works once (GETDEL). A redeemed code leaves a
marker naming the token family it produced, so a second use is recognised
as replay and revokes what the first one issued (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from portal.stores.crypto import SecretBox

CODE_TTL = 60
SPENT_TTL = 600


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

    def _keys(self, pool_id: int, code: str) -> tuple[str, str]:
        h = self.box.hash_secret(code)
        return f"code:{pool_id}:{h}", f"codespent:{pool_id}:{h}"

    async def issue(self, pool_id: int, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        live, _ = self._keys(pool_id, code)
        await self.redis.set(live, json.dumps(asdict(grant)), ex=CODE_TTL)
        return code

    async def redeem(self, pool_id: int, code: str) -> tuple[CodeGrant | None, str | None]:
        """(grant, None) the first time; (None, family_id) on replay; (None, None) if unknown."""
        live, spent = self._keys(pool_id, code)
        raw = await self.redis.getdel(live)
        if raw is None:
            return None, await self.redis.get(spent)
        grant = CodeGrant(**json.loads(raw))
        await self.redis.set(spent, grant.family_id, ex=SPENT_TTL)
        return grant, None
