"""A fake WeChat API server for dev and tests (docs/design.md §7), all in memory.

It answers like ``api.weixin.qq.com``: HTTP 200 with WeChat's JSON field names
and ``{"errcode": N, "errmsg": "..."}`` errors, so the production client talks
to it unchanged (only ``WECHAT_API_BASE`` differs).

WeChat endpoints and their rules:

- ``GET /sns/jscode2session``: a ``js_code`` works once (then 40163) and for
  5 minutes (then 40029), like ``wx.login``'s. ``POST /_fake/wxlogin`` mints
  one as ``wx.login`` does; a hand-made ``USER`` or ``USER.ANYTHING`` (USER:
  letters, digits, ``_``) counts as minted just now (the phone simulator and
  most tests). ``invalid...`` or malformed → 40029, ``risky...`` → 40226. The
  openid is derived from (appid, USER); a ``unionid`` is returned only for a
  mini program bound to an Open Platform account (``bound``), derived from
  (that account, USER), as at WeChat.
- ``POST /cgi-bin/stable_token`` (JSON): the same token until its last 5
  minutes, when a new one is issued (the old stays valid until it expires);
  ``force_refresh: true`` issues a new one and kills the previous at once, at
  most 20 times a day (Beijing day) per AppID (then 45009), and not within 30 s
  of the previous forced refresh (then the current token is handed back as it
  is, unrefreshed: WeChat's "否则不会刷新").
  ``GET /cgi-bin/token``: a new token per call, the previous lives 5 more minutes.
  Unknown appid → 40013, wrong secret → 40125; a caller whose address is not
  on the app's IP whitelist (if one is set) → 40164, whose errmsg names the
  address as WeChat's does (``invalid ip A.B.C.D ipv6 ::ffff:A.B.C.D, not in
  whitelist``).
- ``POST /wxa/business/getuserphonenumber?access_token=``: a phone ``code``
  works once (40163) and for 5 minutes (40029). ``POST /_fake/phonecode``
  mints one for an openid as the phone button does; a body ``openid`` that is
  not the one it was minted for → 40029 (WeChat documents the ``openid`` field,
  which makes it check the code belongs to that user). A hand-made ``DIGITS`` or
  ``DIGITS.ANYTHING`` yields that number (country code 86), minted just now
  for anyone.
- ``POST /wxa/getwxacodeunlimit?access_token=``: a PNG QR code (error
  correction H) whose text is exactly ``scene``. Scene empty or over 32
  characters → 40169, outside WeChat's character set → 40129; a ``page``
  starting with ``invalid`` or ``/`` → 41030, and with ``check_path`` (true
  by default, as at WeChat) a ``page`` that is not a published page of the
  mini program → 41030 (published: the pages of ``miniprogram/app.json``,
  see ``/_fake/wxacode``; an empty page means the home page). Over the daily
  quota (unlimited unless set) → 45009; so is more than the minute quota (5000
  codes per AppID per clock minute, WeChat's documented "调用分钟频率受限
  (目前5000次/分钟)": the errmsg still says "daily quota").
- Missing or unknown access token → 40001, expired → 42001.
- ``busy_rate`` F answers ``{"errcode": -1, "errmsg": "system error"}`` to
  that fraction of calls.
- Link rules (issue 17), ``POST /cgi-bin/wxopen/qrcodejump{add,publish,get,
  delete,download}?access_token=``: a prefix belongs to one AppID (85072;
  85071 when it has it), at most 100 rules per AppID (85073; ``/_fake/linkrules``
  ``{"max": N}``), publishing fetches the verification file (``verify_file_for``)
  under the prefix's last path segment or at the host root (85069).
  ``POST /_fake/linkrules`` ``{"appid", "prefix", "path"?, "published"?}`` adds
  one by hand; ``POST /_fake/scan`` ``{"content"}`` is WeChat's scanner: →
  ``{"appid", "path", "q", "scancode_time"}`` under a published rule, else 404
  ``{"error": "no_rule", "error_description": why}``.
- ``POST /wxa/modify_domain`` ``{"action": get|set|add|delete, "requestdomain"?,
  ...}``: the server domains (https; http for localhost names).
- getPhoneNumber's quota: ``POST /_fake/phonequota`` ``{"appid", "quota": N or
  null}`` lets the app get N more numbers; then ``/_fake/phonecode`` answers the
  button's ``{"errno": 1400001, "errMsg": ...}`` instead of a code.
- Content security v2: ``POST /wxa/msg_sec_check`` (``version`` 2, ``scene``
  1-4, ``openid``; else 40097) → ``result.suggest`` risky / review / pass by the
  words of ``POST /_fake/secblock`` ``{"words"?, "review"?, "media"?}``;
  ``POST /wxa/media_check_async`` → ``trace_id``, and 50 ms later the signed
  ``wxa_media_check`` event pushed to the URL and Token of ``POST /_fake/push``
  ``{"appid", "url", "token"}`` (``/_fake/secblock``'s answer lists the pushes).

Test-control endpoints (never counted, never busy; bad input → HTTP 400):

- ``POST /_fake/faults`` ``{"path": "/sns/jscode2session", "errcode": 45011,
  "errmsg"?: "...", "delay"?: 3.0, "times"?: 1}``: the next ``times`` calls
  of that path first sleep ``delay`` seconds, then answer ``errcode`` (if
  given) instead of doing their work. → ``{"path", "pending"}``
- ``GET /_fake/stats`` → ``{"calls": {path: number of calls}, "forced":
  {appid: forced refreshes today}}``
- ``POST /_fake/reset``: clears faults, stats, codes, tokens, forced refreshes,
  IP whitelists and the clock, and puts back the Open Platform bindings the
  fake was started with.
- ``POST /_fake/clock`` ``{"advance": seconds}``: moves the fake's clock
  forward (to expire tokens). → ``{"offset": seconds}``
- ``POST /_fake/apps`` ``{"appid", "secret", "bound"?: OPENPLATFORM_ID or
  null}``: registers a mini program, bound to an Open Platform account or not.
- ``POST /_fake/wxlogin`` ``{"appid", "user"}`` → ``{"code"}``: a ``wx.login``
  code minted now (it expires 5 minutes later on the fake's clock).
- ``POST /_fake/phonecode`` ``{"appid", "phone", "openid"?}`` → ``{"code"}``: a
  phone code minted now, for that openid if given.
- ``POST /_fake/ipwhitelist`` ``{"appid", "ips": [...] or null}``: the
  addresses allowed to fetch the app's access token (null: any).
- ``POST /_fake/wxacode`` ``{"pages"?: [...], "daily_quota"?: N or null,
  "minute_quota"?: N}``: the published pages that ``check_path`` accepts, how
  many mini-program codes may be made before 45009 (null: no limit), and how
  many per AppID in one minute. → ``{"pages", "daily_quota", "minute_quota", "made"}``
- ``POST /wxa/generatescheme`` and ``POST /wxa/generate_urllink``
  (``?access_token=``): a URL Scheme (``weixin://dl/business/?t=…``) or a URL
  Link (``https://wxaurl.cn/…``) opening a published page with a query (issue
  20). As WeChat: a personal account's mini program may not (40002), the page
  must be published and carry no query (40165), the query is at most 1024
  characters of WeChat's set (40212), the expiry is between a minute and 30
  days (85401), and links of both kinds are counted together against a daily
  quota (500,000 per AppID; then 45009).
- ``POST /_fake/links`` ``{"appid", "personal"?: bool, "daily_quota"?: N}``: make
  the app a personal account's (no links), or set its daily quota.
- ``POST /_fake/openlink`` ``{"link"}``: what WeChat does when the phone opens a
  link → ``{"appid", "path", "query", "scene"}`` (1065 for a URL Scheme, 1194 for
  a URL Link), or 404 ``unknown_link`` / 410 ``expired_link``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import logging
import random
import re
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import segno
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.obs.logs import RedactAccessArgs
from portal.wechat.errors import ERRMSG, PHONE_QUOTA_ERRNO, ErrCode

DEMO_APPID = "wx000000000000demo"
DEMO_SECRET = "demosecretdemosecretdemosecret00"

TOKEN_TTL = 7200
CODE_TTL = 300  # wx.login and phone codes live 5 minutes (code2Session, getPhoneNumber docs)
FORCE_REFRESH_DAILY = 20  # getStableAccessToken: force_refresh "限制每天20次"
FORCE_REFRESH_GAP = 30  # "调用时间隔至少为30s，否则不会刷新"
BEIJING = 8 * 3600  # WeChat's days are Beijing days
RENEW_WINDOW = 300  # WeChat renews stable tokens (and retires plain ones) 5 minutes early

JSCODE2SESSION = "/sns/jscode2session"
STABLE_TOKEN = "/cgi-bin/stable_token"
TOKEN = "/cgi-bin/token"
PHONE_NUMBER = "/wxa/business/getuserphonenumber"
WXACODE_UNLIMIT = "/wxa/getwxacodeunlimit"
WXACODE_MINUTE_QUOTA = 5000  # per AppID (WeChat's getUnlimitedQRCode documentation)
# URL Scheme and URL Link (issue 20): generated together at most 500,000 a day per
# mini program; each valid at most 30 days; the launch scenes they open with.
GENERATE_SCHEME = "/wxa/generatescheme"
GENERATE_URLLINK = "/wxa/generate_urllink"
LINKS_DAILY_QUOTA = 500_000
LINK_MAX_DAYS = 30
SCHEME_SCENE, URLLINK_SCENE = 1065, 1194
_LINK_QUERY = re.compile(r"[0-9A-Za-z!#$&'()*+,/:;=?@\-._~%]{0,1024}")
# Link rules ("扫普通链接二维码打开小程序"), managed by API as in the mini program's admin.
LINK_ADD = "/cgi-bin/wxopen/qrcodejumpadd"
LINK_PUBLISH = "/cgi-bin/wxopen/qrcodejumppublish"
LINK_GET = "/cgi-bin/wxopen/qrcodejumpget"
LINK_DELETE = "/cgi-bin/wxopen/qrcodejumpdelete"
LINK_DOWNLOAD = "/cgi-bin/wxopen/qrcodejumpdownload"
# Content security (security.msgSecCheck v2, security.mediaCheckAsync v2): what the
# fake calls risky unless tests say otherwise (/_fake/secblock).
MSG_SEC_CHECK = "/wxa/msg_sec_check"
MEDIA_CHECK_ASYNC = "/wxa/media_check_async"
RISKY_WORDS = ("risky", "违规")
PHONE_QUOTA_ERRMSG = "getPhoneNumber:fail 该功能使用次数已达当前小程序上限，暂时无法使用"
LINK_RULES_MAX = 100  # rules per mini program ("about 100"; then 85073)
MODIFY_DOMAIN = "/wxa/modify_domain"  # the mini program's server domains
# https (wss) only, as at WeChat; http for localhost names too, as the devtools allow.
_DOMAIN = re.compile(
    r"^(?:(?:https|wss)://[a-z0-9.-]+|http://(?:[a-z0-9-]+\.)*localhost(?::\d+)?)$"
)
DOMAIN_KINDS = ("requestdomain", "wsrequestdomain", "uploaddomain", "downloaddomain")
API_PATHS = (
    JSCODE2SESSION, STABLE_TOKEN, TOKEN, PHONE_NUMBER, WXACODE_UNLIMIT,
    LINK_ADD, LINK_PUBLISH, LINK_GET, LINK_DELETE, LINK_DOWNLOAD, MODIFY_DOMAIN,
)  # fmt: skip
_LINK_PREFIX = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/\S*$")

_USER_CODE = re.compile(r"([A-Za-z0-9_]{1,64})(?:\..*)?", re.DOTALL)
_PHONE_CODE = re.compile(r"([0-9]{1,20})(?:\..*)?", re.DOTALL)
_SCENE = re.compile(r"[A-Za-z0-9!#$&'()*+,/:;=?@\-._~]*")
# The pages every fake mini program has "published": those of the login mini program
# (miniprogram/app.json), so check_path accepts exactly what the real one would.
PUBLISHED_PAGES = ("pages/index/index", "pages/login/index")


def openid_for(appid: str, user: str) -> str:
    """The fake's openid of WeChat user ``user`` in mini program ``appid``."""
    digest = hashlib.sha256(f"{appid}:{user}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:27]


def unionid_for(user: str, openplatform: str) -> str:
    """The fake's unionid of WeChat user ``user`` under Open Platform account
    ``openplatform`` (the same in every mini program bound to it)."""
    digest = hashlib.sha256(f"unionid:{openplatform}:{user}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:28]


class _Refusal(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = int(errcode)
        self.errmsg = errmsg or ERRMSG.get(errcode, "fault injected")


@dataclass(frozen=True)
class _Minted:
    appid: str
    subject: str  # the user (wx.login) or the phone number (phone code)
    openid: str | None  # the phone code's owner, if minted for one
    at: float


@dataclass
class _LinkRule:
    appid: str
    prefix: str
    path: str
    published: bool = False


def verify_file_for(appid: str) -> tuple[str, str]:
    """The verification file (name, content) WeChat hands ``appid``'s admin for
    its link rules (the fake's: derived from the AppID)."""
    digest = hashlib.sha256(f"linkrule:{appid}".encode()).hexdigest()
    return f"{digest[:10]}.txt", digest[10:42]


def _link_match(content: str, prefix: str) -> bool:
    return content.startswith(prefix)


@dataclass(frozen=True)
class _Fault:
    errcode: int | None
    errmsg: str | None
    delay: float


def _errbody(errcode: int, errmsg: str) -> dict[str, Any]:
    # Real errmsgs end with a request id; callers must not match on errmsg text.
    return {"errcode": errcode, "errmsg": f"{errmsg}, rid: {secrets.token_hex(8)}"}


def _qr_png(text: str, width: int) -> bytes:
    qr = segno.make_qr(text, error="h")
    modules = qr.symbol_size(border=4)[0]
    out = io.BytesIO()
    qr.save(out, kind="png", scale=max(1, width // modules), border=4)
    return out.getvalue()


class _FakeWeChat:
    def __init__(
        self,
        apps: dict[str, str],
        busy_rate: float,
        seed: int | None,
        bound: dict[str, str] | None = None,
    ) -> None:
        self.apps = apps
        self.initial_bound = dict(bound or {})  # appid -> Open Platform account
        self.busy_rate = busy_rate
        self.rng = random.Random(seed)
        self._tasks: set[asyncio.Task] = set()  # message pushes on their way
        self.reset()

    def reset(self) -> None:
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, deque[_Fault]] = {}
        self.used_codes: set[str] = set()
        self.used_phone_codes: set[str] = set()
        self.minted: dict[str, _Minted] = {}  # wx.login codes made by /_fake/wxlogin
        self.minted_phone: dict[str, _Minted] = {}  # phone codes made by /_fake/phonecode
        self.bound: dict[str, str] = dict(self.initial_bound)
        self.forced: dict[str, list[float]] = {}  # appid -> times of forced refreshes
        self.ip_whitelist: dict[str, frozenset[str]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (appid, expires_at)
        self.stable: dict[str, str] = {}  # appid -> current stable token
        self.plain: dict[str, str] = {}  # appid -> latest /cgi-bin/token token
        self.clock_offset = 0.0
        self.pages: tuple[str, ...] = PUBLISHED_PAGES
        self.wxacode_quota: int | None = None
        self.wxacodes_made = 0
        self.wxacode_minute_quota = WXACODE_MINUTE_QUOTA
        self.wxacode_minutes: dict[str, tuple[int, int]] = {}  # appid -> (minute, made in it)
        # Link rules: prefix -> rule; a prefix belongs to one mini program.
        self.link_rules: dict[str, _LinkRule] = {}
        self.link_rules_max = LINK_RULES_MAX
        self.domains: dict[str, dict[str, list[str]]] = {}  # appid -> kind -> https origins
        # getPhoneNumber is quota-limited per AppID: numbers given, and the quota (None: none)
        self.phone_given: Counter[str] = Counter()
        self.phone_quota: dict[str, int] = {}
        # Content security: blocked words (risky), words for review, blocked media (URL parts)
        self.sec_words: tuple[str, ...] = RISKY_WORDS
        self.sec_review: tuple[str, ...] = ()
        self.sec_media: tuple[str, ...] = ()
        self.push: dict[str, tuple[str, str]] = {}  # appid -> (message push URL, Token)
        self.pushed: list[dict[str, Any]] = []  # events pushed (and the HTTP status)
        # URL Schemes and URL Links: token -> (appid, kind, path, query, expires at)
        self.open_links: dict[str, tuple[str, str, str, str, float]] = {}
        self.links_made: Counter[str] = Counter()  # appid -> links generated today
        self.links_quota: dict[str, int] = {}  # appid -> daily quota (default 500,000)
        self.personal: set[str] = set()  # apps of personal accounts: no links

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- helpers ---------------------------------------------------------

    def _check_app(self, appid: Any, secret: Any) -> str:
        if not appid:
            raise _Refusal(ErrCode.APPID_MISSING)
        if not isinstance(appid, str) or appid not in self.apps:
            raise _Refusal(ErrCode.INVALID_APPID)
        if not secret:
            raise _Refusal(ErrCode.APPSECRET_MISSING)
        if not secrets.compare_digest(str(secret).encode(), self.apps[appid].encode()):
            raise _Refusal(ErrCode.INVALID_APPSECRET)
        return appid

    def _check_ip(self, appid: str, request: Request) -> None:
        allowed = self.ip_whitelist.get(appid)
        ip = request.client.host if request.client else ""
        if allowed is not None and ip not in allowed:
            raise _Refusal(
                ErrCode.IP_NOT_WHITELISTED, f"invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist"
            )

    def _check_minted(self, minted: _Minted | None, appid: str) -> None:
        """A minted code of another app, or older than 5 minutes: 40029."""
        if minted is not None and (minted.appid != appid or self.now() - minted.at > CODE_TTL):
            raise _Refusal(ErrCode.INVALID_CODE)

    def _check_token(self, request: Request) -> str:
        entry = self.tokens.get(request.query_params.get("access_token", ""))
        if entry is None:
            raise _Refusal(ErrCode.INVALID_CREDENTIAL)
        appid, expires_at = entry
        if self.now() >= expires_at:
            raise _Refusal(ErrCode.ACCESS_TOKEN_EXPIRED)
        return appid

    def _issue(self, appid: str) -> str:
        token = secrets.token_urlsafe(96)
        self.tokens[token] = (appid, self.now() + TOKEN_TTL)
        return token

    @staticmethod
    async def _body(request: Request, errcode: int = ErrCode.DATA_FORMAT) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise _Refusal(errcode) from None
        if not isinstance(body, dict):
            raise _Refusal(errcode)
        return body

    # -- WeChat endpoints ------------------------------------------------

    async def jscode2session(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        appid = self._check_app(q.get("appid"), q.get("secret"))
        if q.get("grant_type") != "authorization_code":
            raise _Refusal(ErrCode.INVALID_GRANT_TYPE)
        code = q.get("js_code", "")
        if not code:
            raise _Refusal(ErrCode.CODE_MISSING)
        minted = self.minted.get(code)
        match = _USER_CODE.fullmatch(code)
        if minted is None and (match is None or code.startswith("invalid")):
            raise _Refusal(ErrCode.INVALID_CODE)
        if code.startswith("risky"):
            raise _Refusal(ErrCode.HIGH_RISK_USER)
        if code in self.used_codes:
            raise _Refusal(ErrCode.CODE_USED)
        self._check_minted(minted, appid)
        self.used_codes.add(code)
        user = minted.subject if minted else match.group(1)  # type: ignore[union-attr]
        answer = {
            "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
            "openid": openid_for(appid, user),
        }
        if appid in self.bound:  # only mini programs bound to an Open Platform account
            answer["unionid"] = unionid_for(user, self.bound[appid])
        return answer

    async def stable_token(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        if body.get("grant_type") != "client_credential":
            raise _Refusal(ErrCode.INVALID_GRANT_TYPE)
        appid = self._check_app(body.get("appid"), body.get("secret"))
        self._check_ip(appid, request)
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            raise _Refusal(ErrCode.INVALID_ARGS)
        now = self.now()
        current = self.stable.get(appid)
        expires_at = self.tokens.get(current or "", ("", 0.0))[1]
        if force:
            today = self._forced_today(appid)
            if len(today) >= FORCE_REFRESH_DAILY:
                raise _Refusal(ErrCode.DAILY_QUOTA)
            if today and now - today[-1] < FORCE_REFRESH_GAP and expires_at > now:
                force = False  # too soon after the last one: not refreshed
            else:
                self.forced[appid] = [*today, now]
        if force or expires_at - now <= RENEW_WINDOW:
            if force and current:
                self.tokens.pop(current, None)
            current = self.stable[appid] = self._issue(appid)
            expires_at = now + TOKEN_TTL
        return {"access_token": current, "expires_in": int(expires_at - now)}

    async def token(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        if q.get("grant_type") != "client_credential":
            raise _Refusal(ErrCode.INVALID_GRANT_TYPE)
        appid = self._check_app(q.get("appid"), q.get("secret"))
        self._check_ip(appid, request)
        previous = self.plain.get(appid)
        if previous in self.tokens:
            _, expires_at = self.tokens[previous]
            self.tokens[previous] = (appid, min(expires_at, self.now() + RENEW_WINDOW))
        self.plain[appid] = token = self._issue(appid)
        return {"access_token": token, "expires_in": TOKEN_TTL}

    def _forced_today(self, appid: str) -> list[float]:
        day = (self.now() + BEIJING) // 86400
        return [t for t in self.forced.get(appid, []) if (t + BEIJING) // 86400 == day]

    async def phone_number(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        body = await self._body(request)
        code, openid = body.get("code"), body.get("openid")
        if not code or not isinstance(code, str):
            raise _Refusal(ErrCode.CODE_MISSING)
        if openid is not None and not isinstance(openid, str):
            raise _Refusal(ErrCode.INVALID_ARGS)
        minted = self.minted_phone.get(code)
        match = _PHONE_CODE.fullmatch(code)
        if minted is None and match is None:
            raise _Refusal(ErrCode.INVALID_CODE)
        if code in self.used_phone_codes:
            raise _Refusal(ErrCode.CODE_USED)
        self._check_minted(minted, appid)
        if minted and minted.openid and openid and openid != minted.openid:
            raise _Refusal(ErrCode.INVALID_CODE)  # minted for another user
        self.used_phone_codes.add(code)
        self.phone_given[appid] += 1  # a paid call, counted against the app's quota
        number = minted.subject if minted else match.group(1)  # type: ignore[union-attr]
        return {
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": number,
                "purePhoneNumber": number,
                "countryCode": "86",
                "watermark": {"timestamp": int(self.now()), "appid": appid},
            },
        }

    async def wxacode_unlimit(self, request: Request) -> Response:
        appid = self._check_token(request)
        body = await self._body(request, ErrCode.INVALID_SCENE)
        scene, page = body.get("scene"), body.get("page", "")
        if not isinstance(scene, str) or not 1 <= len(scene) <= 32:
            raise _Refusal(ErrCode.INVALID_SCENE)
        if not _SCENE.fullmatch(scene):
            raise _Refusal(ErrCode.INVALID_SCENE_CHARS)
        if not isinstance(page, str) or page.startswith(("invalid", "/")):
            raise _Refusal(ErrCode.INVALID_PAGE)
        if body.get("env_version", "release") not in ("release", "trial", "develop"):
            raise _Refusal(ErrCode.INVALID_ARGS)
        check_path = body.get("check_path", True)
        if not isinstance(check_path, bool):
            raise _Refusal(ErrCode.INVALID_ARGS)
        if check_path and page and page not in self.pages:
            raise _Refusal(ErrCode.INVALID_PAGE)
        width = body.get("width", 430)
        if not isinstance(width, int):
            raise _Refusal(ErrCode.INVALID_ARGS)
        if self.wxacode_quota is not None and self.wxacodes_made >= self.wxacode_quota:
            raise _Refusal(ErrCode.DAILY_QUOTA)
        minute = int(self.now() // 60)
        start, made = self.wxacode_minutes.get(appid, (minute, 0))
        made = made if start == minute else 0
        if made >= self.wxacode_minute_quota:
            raise _Refusal(ErrCode.DAILY_QUOTA)
        self.wxacode_minutes[appid] = (minute, made + 1)
        self.wxacodes_made += 1
        return Response(_qr_png(scene, min(max(width, 280), 1280)), media_type="image/png")

    # -- URL Scheme and URL Link (issue 20) ------------------------------

    def _open_link(self, appid: str, kind: str, path: Any, query: Any, env: Any, body: dict):
        if appid in self.personal:
            raise _Refusal(ErrCode.LINK_NO_PERMISSION, "no permission (non-personal accounts only)")
        if (
            not isinstance(path, str)
            or "?" in path
            or (path and path.lstrip("/") not in self.pages)
        ):
            raise _Refusal(ErrCode.LINK_INVALID_PATH)
        if not isinstance(query, str) or not _LINK_QUERY.fullmatch(query):
            raise _Refusal(ErrCode.LINK_INVALID_QUERY)
        if env not in ("release", "trial", "develop"):
            raise _Refusal(ErrCode.INVALID_ARGS)
        now = self.now()
        if body.get("expire_type", 1) == 0:
            until = body.get("expire_time")
            if type(until) is not int or not now + 60 <= until <= now + LINK_MAX_DAYS * 86400:
                raise _Refusal(ErrCode.LINK_EXPIRY)
        else:
            days = body.get("expire_interval", LINK_MAX_DAYS)
            if type(days) is not int or not 1 <= days <= LINK_MAX_DAYS:
                raise _Refusal(ErrCode.LINK_EXPIRY)
            until = now + days * 86400
        if self.links_made[appid] >= self.links_quota.get(appid, LINKS_DAILY_QUOTA):
            raise _Refusal(ErrCode.DAILY_QUOTA)
        self.links_made[appid] += 1
        token = "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(11))
        self.open_links[token] = (appid, kind, path.lstrip("/"), query, float(until))
        return token

    async def generate_scheme(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        body = await self._body(request)
        jump = body.get("jump_wxa", {})
        if not isinstance(jump, dict):
            raise _Refusal(ErrCode.INVALID_ARGS)
        token = self._open_link(
            appid, "scheme", jump.get("path", ""), jump.get("query", ""),
            jump.get("env_version", "release"), body,
        )  # fmt: skip
        return {"errcode": 0, "errmsg": "ok", "openlink": f"weixin://dl/business/?t={token}"}

    async def generate_urllink(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        body = await self._body(request)
        token = self._open_link(
            appid, "url_link", body.get("path", ""), body.get("query", ""),
            body.get("env_version", "release"), body,
        )  # fmt: skip
        return {"errcode": 0, "errmsg": "ok", "url_link": f"https://wxaurl.cn/{token}"}

    async def links_control(self, request: Request) -> Response:
        body = await self._control_body(request, "appid")
        personal, quota = (body or {}).get("personal"), (body or {}).get("daily_quota")
        if (
            body is None
            or not (personal is None or isinstance(personal, bool))
            or not (quota is None or (type(quota) is int and quota >= 0))
        ):
            return _bad_request('expected {"appid", "personal"?: bool, "daily_quota"?: N}')
        appid = body["appid"]
        if personal is not None:
            (self.personal.add if personal else self.personal.discard)(appid)
        if quota is not None:
            self.links_quota[appid] = quota
        return JSONResponse(
            {"appid": appid, "personal": appid in self.personal,
             "daily_quota": self.links_quota.get(appid, LINKS_DAILY_QUOTA),
             "made": self.links_made[appid]}
        )  # fmt: skip

    async def openlink(self, request: Request) -> Response:
        """``{"link"}``: the phone opens a URL Scheme or a URL Link."""
        body = await self._control_body(request, "link")
        if body is None:
            return _bad_request('expected {"link"}')
        link = body["link"]
        token = ""
        for prefix in ("weixin://dl/business/?t=", "https://wxaurl.cn/"):
            if link.startswith(prefix):
                token = link[len(prefix) :].split("&")[0].split("?")[0]
        entry = self.open_links.get(token)
        if entry is None:
            return JSONResponse(
                {"error": "unknown_link", "error_description": "WeChat made no such link"},
                status_code=404,
            )
        appid, kind, path, query, until = entry
        if self.now() >= until:
            return JSONResponse(
                {"error": "expired_link", "error_description": "the link has expired"},
                status_code=410,
            )
        scene = SCHEME_SCENE if kind == "scheme" else URLLINK_SCENE
        return JSONResponse({"appid": appid, "path": path, "query": query, "scene": scene})

    # -- link rules (扫普通链接二维码打开小程序) ----------------------------

    async def link_add(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        body = await self._body(request)
        prefix, path = body.get("prefix"), body.get("path", "")
        if not isinstance(prefix, str) or not _LINK_PREFIX.match(prefix):
            raise _Refusal(ErrCode.LINK_INVALID)
        if not isinstance(path, str) or (path and path.split("?")[0] not in self.pages):
            raise _Refusal(ErrCode.INVALID_PAGE)
        rule = self.link_rules.get(prefix)
        if rule is not None and rule.appid != appid:
            raise _Refusal(ErrCode.LINK_TAKEN)
        if rule is not None and not body.get("is_edit"):
            raise _Refusal(ErrCode.LINK_EXISTS)
        if rule is None:
            mine = sum(1 for r in self.link_rules.values() if r.appid == appid)
            if mine >= self.link_rules_max:
                raise _Refusal(ErrCode.LINK_RULES_FULL)
            self.link_rules[prefix] = _LinkRule(appid, prefix, path)
        else:
            rule.path, rule.published = path, False
        return {"errcode": 0, "errmsg": "ok"}

    def _own_rule(self, appid: str, prefix: Any) -> _LinkRule:
        rule = self.link_rules.get(prefix) if isinstance(prefix, str) else None
        if rule is None or rule.appid != appid:
            raise _Refusal(ErrCode.LINK_INVALID)
        return rule

    async def link_publish(self, request: Request) -> dict[str, Any]:
        """Publishing checks the verification file: under the rule's last path
        segment, or at the host's root, as WeChat fetches it."""
        appid = self._check_token(request)
        rule = self._own_rule(appid, (await self._body(request)).get("prefix"))
        name, expected = verify_file_for(appid)
        directory = rule.prefix.rsplit("/", 1)[0] + "/"
        root = "/".join(rule.prefix.split("/", 3)[:3]) + "/"
        for url in dict.fromkeys((directory + name, root + name)):
            if await _fetch_text(url) == expected:
                rule.published = True
                return {"errcode": 0, "errmsg": "ok"}
        raise _Refusal(ErrCode.LINK_VERIFY_FAILED)

    async def link_get(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        rules = [r for r in self.link_rules.values() if r.appid == appid]
        return {
            "errcode": 0,
            "errmsg": "ok",
            "rule_list": [
                {
                    "prefix": r.prefix,
                    "path": r.path,
                    "state": 2 if r.published else 1,
                    "open_version": 3,
                    "permit_sub_rule": 1,
                    "debug_url": [],
                }
                for r in rules
            ],
            "qrcodejump_open": 1,
            "list_size": len(rules),
            "qrcodejump_max": self.link_rules_max,
        }

    async def link_delete(self, request: Request) -> dict[str, Any]:
        appid = self._check_token(request)
        rule = self._own_rule(appid, (await self._body(request)).get("prefix"))
        del self.link_rules[rule.prefix]
        return {"errcode": 0, "errmsg": "ok"}

    async def link_download(self, request: Request) -> dict[str, Any]:
        name, content = verify_file_for(self._check_token(request))
        return {"errcode": 0, "errmsg": "ok", "file_name": name, "file_content": content}

    async def modify_domain(self, request: Request) -> dict[str, Any]:
        """``action`` get / set / add / delete of the server domains (https only)."""
        appid = self._check_token(request)
        body = await self._body(request)
        action = body.get("action", "get")
        mine = self.domains.setdefault(appid, {kind: [] for kind in DOMAIN_KINDS})
        if action != "get":
            for kind in DOMAIN_KINDS:
                values = body.get(kind, [])
                if not isinstance(values, list) or not all(
                    isinstance(v, str) and _DOMAIN.match(v) for v in values
                ):
                    raise _Refusal(ErrCode.INVALID_ARGS)
                if action == "set":
                    mine[kind] = list(dict.fromkeys(values))
                elif action == "add":
                    mine[kind] = list(dict.fromkeys([*mine[kind], *values]))
                elif action == "delete":
                    mine[kind] = [v for v in mine[kind] if v not in values]
                else:
                    raise _Refusal(ErrCode.INVALID_ARGS)
        return {"errcode": 0, "errmsg": "ok", **{k: list(v) for k, v in mine.items()}}

    # -- content security ------------------------------------------------

    @staticmethod
    def _sec_args(body: dict[str, Any]) -> tuple[str, int]:
        """v2's required fields: version 2, a scene 1-4, the user's openid."""
        openid, scene = body.get("openid"), body.get("scene")
        if body.get("version") != 2 or type(scene) is not int or not 1 <= scene <= 4:
            raise _Refusal(ErrCode.INVALID_ARGS)
        if not isinstance(openid, str) or not openid:
            raise _Refusal(ErrCode.INVALID_ARGS)
        return openid, scene

    async def msg_sec_check(self, request: Request) -> dict[str, Any]:
        self._check_token(request)
        body = await self._body(request)
        self._sec_args(body)
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise _Refusal(ErrCode.INVALID_ARGS)
        if any(w and w in content for w in self.sec_words):
            suggest, label = "risky", 20001
        elif any(w and w in content for w in self.sec_review):
            suggest, label = "review", 20001
        else:
            suggest, label = "pass", 100
        trace_id = secrets.token_hex(12)
        return {
            "errcode": 0,
            "errmsg": "ok",
            "result": {"suggest": suggest, "label": label},
            "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest,
                        "label": label, "prob": 90 if suggest != "pass" else 0}],
            "trace_id": trace_id,
        }  # fmt: skip

    async def media_check_async(self, request: Request) -> dict[str, Any]:
        """Answers a trace_id at once; the result is pushed later to the app's
        message push URL (``wxa_media_check`` event), signed with its Token."""
        appid = self._check_token(request)
        body = await self._body(request)
        openid, _ = self._sec_args(body)
        url, kind = body.get("media_url"), body.get("media_type")
        if (
            not isinstance(url, str)
            or not url.startswith(("http://", "https://"))
            or kind not in (1, 2)
        ):
            raise _Refusal(ErrCode.INVALID_ARGS)
        trace_id = secrets.token_hex(12)
        risky = any(m and m in url for m in self.sec_media)
        event = {
            "ToUserName": "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12],
            "FromUserName": openid,
            "CreateTime": int(self.now()),
            "MsgType": "event",
            "Event": "wxa_media_check",
            "appid": appid,
            "trace_id": trace_id,
            "version": 2,
            "detail": [{"strategy": "content_model", "errcode": 0,
                        "suggest": "risky" if risky else "pass", "label": 20002 if risky else 100,
                        "prob": 90 if risky else 0}],
            "errcode": 0,
            "errmsg": "ok",
            "result": {"suggest": "risky" if risky else "pass", "label": 20002 if risky else 100},
        }  # fmt: skip
        if appid in self.push:
            task = asyncio.get_running_loop().create_task(self._push(appid, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {"errcode": 0, "errmsg": "ok", "trace_id": trace_id}

    async def _push(self, appid: str, event: dict[str, Any]) -> None:
        """WeChat's message push (plain mode): POST the JSON event to the URL with
        ``signature`` = sha1 of the sorted Token, timestamp and nonce."""
        await asyncio.sleep(0.05)  # the result comes later, never in the answer
        url, token = self.push[appid]
        timestamp, nonce = str(int(self.now())), str(self.rng.randrange(10**9))
        signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()  # noqa: S324 (WeChat's scheme)
        params = {"signature": signature, "timestamp": timestamp, "nonce": nonce}
        status = 0
        try:
            parts = httpx.URL(url)
            local = parts.host == "localhost" or parts.host.endswith(".localhost")
            target = parts.copy_with(host="127.0.0.1") if local else parts
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.post(
                    target, params=params, json=event, headers={"host": parts.netloc.decode()}
                )
            status = r.status_code
        except httpx.HTTPError:
            pass
        self.pushed.append({"appid": appid, "trace_id": event["trace_id"], "status": status,
                            "suggest": event["result"]["suggest"]})  # fmt: skip

    def open_for(self, content: str) -> tuple[_LinkRule | None, str]:
        """What WeChat's scanner does with a link QR: the published rule (the
        longest prefix) that opens a mini program, or None and why not."""
        rules = [r for r in self.link_rules.values() if _link_match(content, r.prefix)]
        if not rules:
            return None, (
                "No mini program has a link rule for this QR code's prefix: WeChat shows it "
                "as a web link, it does not open the mini program."
            )
        rule = max(rules, key=lambda r: len(r.prefix))
        if not rule.published:
            return None, (
                f"The link rule {rule.prefix} of mini program {rule.appid} is not published "
                "(its verification file was never checked): WeChat does not open the mini "
                "program for it."
            )
        return rule, ""

    def endpoint(
        self,
        handler: Callable[[Request], Awaitable[dict[str, Any] | Response]],
        media_type: str = "application/json",
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a WeChat handler with stats, injected faults, busy answers and errors."""

        def answer(body: dict[str, Any]) -> Response:
            return Response(json.dumps(body, ensure_ascii=False), media_type=media_type)

        async def wrapped(request: Request) -> Response:
            path = request.url.path
            self.calls[path] += 1
            queue = self.faults.get(path)
            if queue:
                fault = queue.popleft()
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.errcode is not None:
                    refusal = _Refusal(fault.errcode, fault.errmsg)
                    return answer(_errbody(refusal.errcode, refusal.errmsg))
            if self.busy_rate and self.rng.random() < self.busy_rate:
                return answer(_errbody(ErrCode.SYSTEM_BUSY, ERRMSG[ErrCode.SYSTEM_BUSY]))
            try:
                result = await handler(request)
            except _Refusal as refusal:
                return answer(_errbody(refusal.errcode, refusal.errmsg))
            return result if isinstance(result, Response) else answer(result)

        return wrapped

    # -- test control ----------------------------------------------------

    async def add_fault(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            path = body["path"]
            errcode = None if body.get("errcode") is None else int(body["errcode"])
            delay = float(body.get("delay", 0))
            times = int(body.get("times", 1))
        except (ValueError, TypeError, KeyError):
            return _bad_request("expected {path, errcode and/or delay, times?}")
        if path not in API_PATHS:
            return _bad_request(f"path must be one of {', '.join(API_PATHS)}")
        if (errcode is None and delay <= 0) or times < 1:
            return _bad_request("need errcode or a positive delay, and times >= 1")
        queue = self.faults.setdefault(path, deque())
        queue.extend([_Fault(errcode, body.get("errmsg"), delay)] * times)
        return JSONResponse({"path": path, "pending": len(queue)})

    async def stats(self, request: Request) -> Response:
        forced = {appid: len(self._forced_today(appid)) for appid in self.forced}
        return JSONResponse({"calls": dict(self.calls), "forced": forced})

    async def reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def clock(self, request: Request) -> Response:
        try:
            advance = float(json.loads(await request.body())["advance"])
        except (ValueError, TypeError, KeyError):
            return _bad_request('expected {"advance": seconds}')
        if advance < 0:
            return _bad_request("the clock only moves forward")
        self.clock_offset += advance
        return JSONResponse({"offset": self.clock_offset})

    async def wxacode_control(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            pages = body.get("pages", self.pages)
            quota = body.get("daily_quota", self.wxacode_quota)
            per_minute = body.get("minute_quota", self.wxacode_minute_quota)
            if not isinstance(per_minute, int) or per_minute < 0:
                raise TypeError
            if not isinstance(pages, list | tuple) or not all(isinstance(p, str) for p in pages):
                raise TypeError
            if quota is not None and (not isinstance(quota, int) or quota < 0):
                raise TypeError
        except (ValueError, TypeError, AttributeError):
            return _bad_request(
                'expected {"pages"?: [page, ...], "daily_quota"?: N or null, "minute_quota"?: N}'
            )
        self.pages, self.wxacode_quota = tuple(pages), quota
        self.wxacode_minute_quota = per_minute
        return JSONResponse(
            {"pages": list(self.pages), "daily_quota": quota, "minute_quota": per_minute,
             "made": self.wxacodes_made}
        )  # fmt: skip

    async def add_app(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            appid, secret = str(body["appid"]), str(body["secret"])
            bound = body.get("bound")
            if bound is not None and (not isinstance(bound, str) or not bound):
                raise TypeError
        except (ValueError, TypeError, KeyError, AttributeError):
            return _bad_request('expected {"appid", "secret", "bound"?: OPENPLATFORM_ID or null}')
        if not appid or not secret:
            return _bad_request("appid and secret must not be empty")
        self.apps[appid] = secret
        if bound:
            self.bound[appid] = bound
        else:
            self.bound.pop(appid, None)
        return JSONResponse({"appid": appid, "bound": bound})

    async def _control_body(self, request: Request, *fields: str) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None
        if not isinstance(body, dict) or any(not isinstance(body.get(f), str) for f in fields):
            return None
        return body

    async def wxlogin(self, request: Request) -> Response:
        body = await self._control_body(request, "appid", "user")
        if body is None or not _USER_CODE.fullmatch(body["user"]) or "." in body["user"]:
            return _bad_request('expected {"appid", "user"} (user: letters, digits, _)')
        code = secrets.token_hex(16)
        self.minted[code] = _Minted(body["appid"], body["user"], None, self.now())
        return JSONResponse({"code": code})

    async def phonecode(self, request: Request) -> Response:
        body = await self._control_body(request, "appid", "phone")
        openid = body.get("openid") if body else None
        if (
            body is None
            or not body["phone"].isdigit()
            or (openid is not None and not isinstance(openid, str))
        ):
            return _bad_request('expected {"appid", "phone" (digits), "openid"?}')
        quota = self.phone_quota.get(body["appid"])
        if quota is not None and self.phone_given[body["appid"]] >= quota:
            # The button's event when the quota is spent: an errno, no code.
            return JSONResponse({"errno": PHONE_QUOTA_ERRNO, "errMsg": PHONE_QUOTA_ERRMSG})
        code = secrets.token_hex(32)
        self.minted_phone[code] = _Minted(body["appid"], body["phone"], openid, self.now())
        return JSONResponse({"code": code})

    async def secblock(self, request: Request) -> Response:
        """``{"words"?: [...], "review"?: [...], "media"?: [...]}``: what content
        security calls risky (words in a text; parts of a media URL) or sends to review."""
        try:
            body = json.loads(await request.body())
            lists = {k: body.get(k) for k in ("words", "review", "media") if k in body}
            if not all(
                isinstance(v, list) and all(isinstance(i, str) for i in v) for v in lists.values()
            ):
                raise TypeError
        except (ValueError, TypeError, AttributeError):
            return _bad_request('expected {"words"?: [...], "review"?: [...], "media"?: [...]}')
        self.sec_words = tuple(lists.get("words", self.sec_words))
        self.sec_review = tuple(lists.get("review", self.sec_review))
        self.sec_media = tuple(lists.get("media", self.sec_media))
        return JSONResponse({"words": list(self.sec_words), "review": list(self.sec_review),
                             "media": list(self.sec_media), "pushed": self.pushed})  # fmt: skip

    async def push_control(self, request: Request) -> Response:
        """``{"appid", "url", "token"}``: the app's message push URL and Token (its admin's
        开发管理 → 消息推送), where media check results are pushed."""
        body = await self._control_body(request, "appid", "url", "token")
        if body is None:
            return _bad_request('expected {"appid", "url", "token"}')
        self.push[body["appid"]] = (body["url"], body["token"])
        return JSONResponse({"appid": body["appid"], "url": body["url"]})

    async def phonequota(self, request: Request) -> Response:
        """``{"appid", "quota": N or null}``: numbers the app may still get before the
        phone button answers errno 1400001 (counted from the numbers given so far)."""
        body = await self._control_body(request, "appid")
        quota = body.get("quota") if body else None
        if body is None or not (quota is None or (type(quota) is int and quota >= 0)):
            return _bad_request('expected {"appid", "quota": N or null}')
        appid = body["appid"]
        if quota is None:
            self.phone_quota.pop(appid, None)
        else:
            self.phone_quota[appid] = self.phone_given[appid] + quota
        return JSONResponse({"appid": appid, "quota": quota, "given": self.phone_given[appid]})

    async def linkrules_control(self, request: Request) -> Response:
        """``{"appid", "prefix", "path"?, "published"?: true}`` adds (and publishes) a
        rule as its admin would by hand; ``{"max": N}`` caps rules per mini program."""
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise TypeError
            if "max" in body:
                if not isinstance(body["max"], int) or body["max"] < 0:
                    raise TypeError
                self.link_rules_max = body["max"]
            if "prefix" in body:
                appid, prefix = str(body["appid"]), body["prefix"]
                if not isinstance(prefix, str) or not _LINK_PREFIX.match(prefix):
                    raise TypeError
                rule = self.link_rules.get(prefix)
                if rule is not None and rule.appid != appid:
                    return JSONResponse(_errbody(ErrCode.LINK_TAKEN, ERRMSG[ErrCode.LINK_TAKEN]))
                self.link_rules[prefix] = _LinkRule(
                    appid, prefix, str(body.get("path", "pages/login/index")),
                    bool(body.get("published", True)),
                )  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return _bad_request(
                'expected {"appid", "prefix", "path"?, "published"?} and/or {"max": N}'
            )
        rules = [
            {"appid": r.appid, "prefix": r.prefix, "path": r.path, "published": r.published}
            for r in self.link_rules.values()
        ]
        return JSONResponse({"rules": rules, "max": self.link_rules_max})

    async def scan(self, request: Request) -> Response:
        """``{"content"}``: what WeChat's scanner does with a link QR code. →
        ``{"appid", "path", "q", "scancode_time"}`` (the page's options), or 404
        ``{"error": "no_rule", "error_description": why}``."""
        body = await self._control_body(request, "content")
        if body is None:
            return _bad_request('expected {"content"}')
        rule, why = self.open_for(body["content"])
        if rule is None:
            return JSONResponse({"error": "no_rule", "error_description": why}, status_code=404)
        return JSONResponse(
            {"appid": rule.appid, "path": rule.path, "q": body["content"],
             "scancode_time": int(self.now())}
        )  # fmt: skip

    async def ipwhitelist(self, request: Request) -> Response:
        body = await self._control_body(request, "appid")
        ips = body.get("ips") if body else None
        if body is None or not (
            ips is None or (isinstance(ips, list) and all(isinstance(i, str) for i in ips))
        ):
            return _bad_request('expected {"appid", "ips": [address, ...] or null}')
        if ips is None:
            self.ip_whitelist.pop(body["appid"], None)
        else:
            self.ip_whitelist[body["appid"]] = frozenset(ips)
        return JSONResponse({"appid": body["appid"], "ips": ips})


async def _fetch_text(url: str) -> str | None:
    """GET ``url`` as WeChat's checker does (``localhost`` names are loopback, as
    RFC 6761 says, where the resolver does not know them); None on any failure."""
    parts = httpx.URL(url)
    host = parts.host
    target = (
        parts.copy_with(host="127.0.0.1")
        if host == "localhost" or host.endswith(".localhost")
        else parts
    )
    try:
        async with httpx.AsyncClient(timeout=5, follow_redirects=False) as client:
            r = await client.get(target, headers={"host": parts.netloc.decode()})
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


def _bad_request(message: str) -> Response:
    return JSONResponse({"error": "bad_request", "error_description": message}, status_code=400)


def create_fake_wechat_app(
    apps: dict[str, str] | None = None,
    busy_rate: float = 0.0,
    seed: int | None = None,
    bound: dict[str, str] | None = None,
) -> Starlette:
    """The fake as an ASGI app; ``apps`` maps appid → secret (default: the demo
    app), ``bound`` appid → the Open Platform account it is bound to (default:
    none, so no unionid).

    The fake's state is at ``app.state.fake``; ``app.state.apps`` is the live
    appid → secret dict.
    """
    if not 0.0 <= busy_rate <= 1.0:
        raise ValueError("busy_rate must be between 0 and 1")
    fake = _FakeWeChat(dict(apps) if apps else {DEMO_APPID: DEMO_SECRET}, busy_rate, seed, bound)
    api = fake.endpoint
    routes = [
        # Like the real one, jscode2session answers JSON labelled text/plain.
        Route(JSCODE2SESSION, api(fake.jscode2session, "text/plain"), methods=["GET"]),
        Route(STABLE_TOKEN, api(fake.stable_token), methods=["POST"]),
        Route(TOKEN, api(fake.token), methods=["GET"]),
        Route(PHONE_NUMBER, api(fake.phone_number), methods=["POST"]),
        Route(WXACODE_UNLIMIT, api(fake.wxacode_unlimit), methods=["POST"]),
        Route(GENERATE_SCHEME, api(fake.generate_scheme), methods=["POST"]),
        Route(GENERATE_URLLINK, api(fake.generate_urllink), methods=["POST"]),
        Route("/_fake/links", fake.links_control, methods=["POST"]),
        Route("/_fake/openlink", fake.openlink, methods=["POST"]),
        Route(LINK_ADD, api(fake.link_add), methods=["POST"]),
        Route(LINK_PUBLISH, api(fake.link_publish), methods=["POST"]),
        Route(LINK_GET, api(fake.link_get), methods=["POST"]),
        Route(LINK_DELETE, api(fake.link_delete), methods=["POST"]),
        Route(LINK_DOWNLOAD, api(fake.link_download), methods=["POST"]),
        Route(MODIFY_DOMAIN, api(fake.modify_domain), methods=["POST"]),
        Route("/_fake/linkrules", fake.linkrules_control, methods=["POST"]),
        Route("/_fake/phonequota", fake.phonequota, methods=["POST"]),
        Route(MSG_SEC_CHECK, api(fake.msg_sec_check), methods=["POST"]),
        Route(MEDIA_CHECK_ASYNC, api(fake.media_check_async), methods=["POST"]),
        Route("/_fake/secblock", fake.secblock, methods=["POST"]),
        Route("/_fake/push", fake.push_control, methods=["POST"]),
        Route("/_fake/scan", fake.scan, methods=["POST"]),
        Route("/_fake/faults", fake.add_fault, methods=["POST"]),
        Route("/_fake/stats", fake.stats, methods=["GET"]),
        Route("/_fake/reset", fake.reset_endpoint, methods=["POST"]),
        Route("/_fake/clock", fake.clock, methods=["POST"]),
        Route("/_fake/apps", fake.add_app, methods=["POST"]),
        Route("/_fake/wxacode", fake.wxacode_control, methods=["POST"]),
        Route("/_fake/wxlogin", fake.wxlogin, methods=["POST"]),
        Route("/_fake/phonecode", fake.phonecode, methods=["POST"]),
        Route("/_fake/ipwhitelist", fake.ipwhitelist, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    app.state.apps = fake.apps
    return app


def publish_link_rule(url: str, appid: str, prefix: str) -> None:
    """Publishes ``appid``'s link rule ``prefix`` on the running fake at ``url``, as its
    admin would by hand (``portal dev``, the tests): the phone simulator then opens
    that mini program for QR codes under it."""
    body = {"appid": appid, "prefix": prefix, "published": True}
    httpx.post(f"{url}/_fake/linkrules", json=body, timeout=5).raise_for_status()


class _AppArgError(argparse.ArgumentTypeError, ValueError):
    """A ValueError for plain callers; argparse shows its message as is."""


def parse_app_arg(s: str) -> tuple[str, str, str | None]:
    """Parse ``--app APPID:SECRET[:bound=OPENPLATFORM_ID]`` into (appid,
    secret, the Open Platform account it is bound to or None)."""
    appid, sep, secret = s.partition(":")
    bound = None
    head, marker, tail = secret.rpartition(":bound=")
    if marker:
        secret, bound = head, tail.strip()
        if not bound:
            raise _AppArgError("expected APPID:SECRET[:bound=OPENPLATFORM_ID], all non-empty")
    appid, secret = appid.strip(), secret.strip()
    if not sep or not appid or not secret:
        raise _AppArgError("expected APPID:SECRET[:bound=OPENPLATFORM_ID], all non-empty")
    return appid, secret, bound


def redact_access_log() -> None:
    """Installs the redaction on uvicorn's access logger (once per process), the
    one the fake's lines go through, wherever the fake runs. WeChat's API takes the
    AppSecret and ``wx.login`` codes in the query string (``jscode2session``,
    ``/cgi-bin/token``) and the access token beside them, and uvicorn's access line
    shows the whole query: ``portal dev`` runs the fake in its own process, whose
    log would otherwise show every tenant's AppSecret."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactAccessArgs) for f in logger.filters):
        logger.addFilter(RedactAccessArgs())


def serve(
    host: str = "127.0.0.1",
    port: int = 8001,
    apps: dict[str, str] | None = None,
    busy_rate: float = 0.0,
    seed: int | None = None,
    access_log: bool = True,
    bound: dict[str, str] | None = None,
) -> None:
    """Run the fake until interrupted (``portal fake-wechat``)."""
    redact_access_log()
    uvicorn.run(
        create_fake_wechat_app(apps, busy_rate, seed, bound),
        host=host,
        port=port,
        access_log=access_log,
    )


@dataclass(frozen=True)
class RunningFake:
    url: str  # base URL, no trailing slash: use as WECHAT_API_BASE
    apps: dict[str, str]  # the live appid → secret dict


@contextmanager
def run_in_thread(
    apps: dict[str, str] | None = None,
    busy_rate: float = 0.0,
    seed: int | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    bound: dict[str, str] | None = None,
) -> Iterator[RunningFake]:
    """Run the fake over real HTTP in a background thread (tests, ``portal dev``).

    ``port=0`` picks a free port; the URL yielded carries the real one.
    """
    app = create_fake_wechat_app(apps, busy_rate, seed, bound)
    redact_access_log()
    # log_config=None: leave the host program's logging alone. (access_log=False
    # would silence uvicorn.access for the whole process, the portal's too.)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-wechat", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the fake WeChat server did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningFake(url=f"http://{host}:{bound_port}", apps=app.state.apps)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
