"""Content security for what a person types or picks in the mini program
(issue 17, item 6; on with ``PORTAL_CONTENT_SECURITY``).

WeChat requires user-provided nicknames and avatars to pass its content
security before they are shown to others:

- a nickname goes through ``security.msgSecCheck`` v2 (the scanner's openid,
  scene 1 "profile") before the confirmation claims the ticket: ``risky`` is
  refused (400 ``nickname_refused``, nothing written, the person may pick
  another), ``review`` is left out (the login goes on without it);
- an avatar goes through ``security.mediaCheckAsync`` v2 when it is uploaded:
  WeChat answers a ``trace_id`` at once and pushes the result later to the
  mini program's message push URL, ``{apex}/wechat/push/{appid}`` here. Until a
  ``pass`` arrives the avatar is ``pending`` and ``/avatars/{sha}.png`` serves
  the placeholder; a ``risky`` one is gone (404) and removed from every user
  who chose it.

The push endpoint checks WeChat's signature (``sha1`` of the sorted Token,
``timestamp`` and ``nonce``; plain mode, JSON) with the Token of that mini
program: derived from ``PORTAL_SECRET_KEY`` and the AppID (``push_token``;
``portal mp check`` prints it with the URL to enter in 开发管理 → 消息推送), and
refuses a timestamp more than 5 minutes off. The first ``GET`` (WeChat's URL
check) echoes ``echostr``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import asyncpg
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from portal.errors import PortalError
from portal.settings import Settings
from portal.tenants.mpsetup import PUSH_PATH, push_token, push_url

__all__ = ["PUSH_PATH", "push_token", "push_url"]
from portal.web.jsonapi import read_body
from portal.wechat.errors import WeChatError

log = logging.getLogger(__name__)

MAX_SKEW = 300  # seconds a pushed message's timestamp may be off
MAX_PUSH_BYTES = 64 * 1024


class NicknameRefused(PortalError):
    status_code = 400
    error = "nickname_refused"
    description = "WeChat's content security refused this nickname; choose another."


def signature_ok(token: str, timestamp: str, nonce: str, signature: str) -> bool:
    expected = hashlib.sha1(  # noqa: S324 (WeChat's message push signature is SHA-1)
        "".join(sorted([token, timestamp, nonce])).encode()
    ).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


async def check_nickname(
    request: Request, appid: str, secret: str | None, openid: str, nickname: str | None
) -> str | None:
    """The nickname to keep: as typed, None (left out), or NicknameRefused."""
    if not nickname or not request.state.settings.content_security:
        return nickname
    if secret is None:
        return None
    try:
        data = await request.state.wechat.msg_sec_check(appid, secret, openid, nickname)
    except WeChatError as exc:
        log.warning("msgSecCheck failed (%s): the nickname is left out", exc.errcode)
        return None  # never shown unchecked
    suggest = (data.get("result") or {}).get("suggest")
    if suggest == "risky":
        raise NicknameRefused()
    return nickname if suggest == "pass" else None


async def submit_avatar(
    request: Request, appid: str, secret: str | None, openid: str, sha: str, png: bytes
) -> None:
    """Stores the avatar (``pending`` while content security is on) and asks WeChat to
    check a new one; the result arrives at the push endpoint."""
    state = request.state
    on = state.settings.content_security
    created = await state.db.fetchval(
        """INSERT INTO avatars (sha256, png, status) VALUES ($1, $2, $3)
           ON CONFLICT (sha256) DO NOTHING RETURNING true""",
        sha,
        png,
        "pending" if on else "pass",
    )
    if not on:
        return
    pending = created or await state.db.fetchval(
        "SELECT status = 'pending' FROM avatars WHERE sha256 = $1", sha
    )
    if not pending:
        return  # checked already (passed, or risky and refused)
    if secret is None:
        return
    url = f"{state.settings.base_url}/avatars/{sha}.png"
    try:
        trace_id = await state.wechat.media_check_async(appid, secret, openid, url)
    except WeChatError as exc:
        log.warning("mediaCheckAsync failed (%s): the avatar stays hidden", exc.errcode)
        return
    await state.db.execute(
        "INSERT INTO avatar_checks (trace_id, appid, sha256) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        trace_id,
        appid,
        sha,
    )


async def apply_result(db: asyncpg.Pool, settings: Settings, appid: str, event: dict) -> bool:
    """A pushed ``wxa_media_check`` event: pass shows the avatar, risky removes it."""
    trace_id = event.get("trace_id")
    suggest = (event.get("result") or {}).get("suggest")
    if not isinstance(trace_id, str) or suggest not in ("pass", "review", "risky"):
        return False
    async with db.acquire() as conn, conn.transaction():
        sha = await conn.fetchval(
            "SELECT sha256 FROM avatar_checks WHERE trace_id = $1 AND appid = $2", trace_id, appid
        )
        if sha is None:
            return False
        if suggest == "pass":
            await conn.execute(
                "UPDATE avatars SET status = 'pass' WHERE sha256 = $1 AND status = 'pending'", sha
            )
        else:  # risky, or sent to review: not shown to anyone
            await conn.execute("UPDATE avatars SET status = 'risky' WHERE sha256 = $1", sha)
            await conn.execute(
                "UPDATE users SET avatar_url = NULL, updated_at = now() WHERE avatar_url = $1",
                f"{settings.base_url}/avatars/{sha}.png",
            )
        await conn.execute("DELETE FROM avatar_checks WHERE trace_id = $1", trace_id)
    return True


async def push(request: Request) -> Response:
    """``GET|POST /wechat/push/{appid}``: WeChat's message push for that mini program."""
    appid = request.path_params["appid"]
    settings = request.state.settings
    q = request.query_params
    timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
    signature = q.get("signature", "")
    if (
        len(appid) > 32
        or not timestamp.isdigit()
        or abs(time.time() - int(timestamp)) > MAX_SKEW
        or not signature_ok(push_token(settings, appid), timestamp, nonce, signature)
    ):
        return PlainTextResponse("invalid signature", status_code=403)
    if request.method == "GET":  # the URL check when the admin saves the push settings
        return PlainTextResponse(q.get("echostr", ""))
    try:
        event = json.loads(await read_body(request, MAX_PUSH_BYTES))
    except ValueError:
        return PlainTextResponse("invalid body", status_code=400)
    if isinstance(event, dict) and event.get("Event") == "wxa_media_check":
        await apply_result(request.state.db, settings, appid, event)
    return PlainTextResponse("success")  # WeChat retries anything else


def routes() -> list[Route]:
    return [Route(PUSH_PATH, push, methods=["GET", "POST"])]
