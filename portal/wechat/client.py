"""The production WeChat API client (async, aiohttp), shared by all processes.

The access token lives in Redis (``wechat:token:{appid}``), so every process
of every machine uses the same one and only one of them refreshes it at a
time. It is handed out only to a caller with the AppSecret it was fetched
with (a fingerprint is stored beside it): a wrong AppSecret never borrows
the mini program's token, it gets WeChat's 40125. Secrets, session keys,
access tokens and codes never appear in exceptions or logs.

Forcing WeChat to issue a new stable token (``force_refresh``) is rationed by
WeChat (20 a day per AppID, 30 s apart) and kills the token every process is
using, so it is budgeted per AppID in Redis (``wechat:force:{appid}:*``): at
most ``force_daily`` a day (Beijing days, as WeChat counts), 30 s apart, and
never again for a token that was itself just forced (when a forced token is
refused too, the token is not the problem: another service may be forcing
with the same AppSecret). A refusal that may not be answered with a forced
refresh raises :class:`WeChatUnavailable`.

The calls go through one pooled keep-alive ``aiohttp.ClientSession`` per client:
a call costs about a seventh of the instructions of ``httpx.AsyncClient``'s (httpx
→ httpcore → anyio), a quarter of its CPU time, measured by
bench/bench_wechat_call.py (issue 23 in bench/README.md). An ``httpx.AsyncClient`` passed as ``http`` is still used as is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import certifi
import httpx
from redis.asyncio import Redis
from yarl import URL

from portal.obs.metrics import WECHAT_CALLS, WECHAT_ERRORS
from portal.wechat.errors import ErrCode, WeChatError, WeChatUnavailable

__all__ = ["PhoneInfo", "Session", "WeChatClient", "WeChatError", "WeChatUnavailable"]

log = logging.getLogger(__name__)

_TOKEN_INVALID = (ErrCode.INVALID_CREDENTIAL, ErrCode.ACCESS_TOKEN_EXPIRED)
FORCE_GAP = 30  # seconds between forced refreshes of one AppID (WeChat's rule)
FORCE_DAILY = 10  # of WeChat's 20 a day: the rest is left for an operator's emergency
_BEIJING = 8 * 3600
# Connection never established: WeChat cannot have acted on the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAX_CONNECTIONS = 100  # per process, as httpx's default pool
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class _RedactQuery(logging.Filter):
    """httpx logs every request URL at INFO, and jscode2session carries the
    AppSecret in its query string (WeChat accepts nothing else)."""

    _pattern = re.compile(r"\b(secret|js_code|access_token|code)=[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._pattern.sub(r"\1=***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactQuery) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactQuery())


class _TransportFailure(Exception):
    """No HTTP answer: ``name`` as httpx would call it (ConnectError, ReadTimeout...),
    ``not_sent`` when the connection was never made, so WeChat cannot have acted."""

    def __init__(self, name: str, not_sent: bool) -> None:
        super().__init__(name)
        self.name, self.not_sent = name, not_sent


def _failure(exc: BaseException) -> _TransportFailure:
    """An aiohttp (or asyncio) failure under httpx's names, which the logs and the
    "network" error metric have always used."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _TransportFailure("ConnectTimeout", True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _TransportFailure("ConnectError", True)
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError included
        return _TransportFailure("ReadTimeout", False)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _TransportFailure("RemoteProtocolError", False)
    return _TransportFailure(type(exc).__name__, False)


def _env_proxy(base_url: str) -> str | None:
    """The proxy that HTTP_PROXY/HTTPS_PROXY/ALL_PROXY and NO_PROXY give for WeChat's
    API, as httpx honoured them: read once per client (aiohttp's ``trust_env`` would
    look them and ~/.netrc up in a thread on every request)."""
    url = urlsplit(base_url)
    if not url.hostname or proxy_bypass(url.hostname):
        return None
    proxies = getproxies()
    return proxies.get(url.scheme) or proxies.get("all")


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """The CA bundle httpx verified WeChat with (certifi's), built once per process."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


@dataclass(frozen=True, slots=True)
class Session:
    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PhoneInfo:
    phone_number: str
    pure_phone_number: str
    country_code: str


@dataclass(frozen=True, slots=True)
class _CachedToken:
    token: str
    refresh_at: float
    expires_at: float
    secret_fp: str = ""  # secret_fingerprint(appid, secret) of the secret it was fetched with


def secret_fingerprint(appid: str, secret: str) -> str:
    return hashlib.sha256(f"wechat-token\0{appid}\0{secret}".encode()).hexdigest()[:32]


class WeChatClient:
    """Calls WeChat's server APIs for any mini program (appid, secret per call).

    ``retry_backoff`` is the sleep before each retry of a transient failure
    (timeout, connection error, errcode -1, HTTP 5xx); after the last one the
    call raises :class:`WeChatUnavailable`. Other errcodes raise
    :class:`WeChatError` at once.
    """

    def __init__(
        self,
        base_url: str,
        redis: Redis,
        http: httpx.AsyncClient | None = None,
        *,
        timeout: float = 5.0,
        retry_backoff: Sequence[float] = (0.2, 0.6),
        refresh_margin: float = 300.0,
        lock_ttl: float = 30.0,
        force_daily: int = FORCE_DAILY,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._redis = redis
        self._http = http  # an httpx client of the caller's, or None: our own aiohttp session
        self._proxy = _env_proxy(self._base)
        self._session: aiohttp.ClientSession | None = None  # made at the first call, in its loop
        # As httpx.Timeout(timeout, connect=...): a connection (pool wait included) and
        # each read; no overall limit, which the retries' own timeouts bound.
        connect = min(timeout, 2.0)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=connect, sock_read=timeout
        )
        self._backoff = tuple(retry_backoff)
        self._refresh_margin = refresh_margin
        self._lock_ttl = lock_ttl
        self._force_daily = force_daily
        self._release_lock = redis.register_script(_RELEASE_LOCK)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _aiohttp(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, ssl=_tls()),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # WeChat sets none; never share one
            )
        return session

    async def _send(
        self, method: str, url: str, params: dict[str, str] | None, body: bytes | None
    ) -> tuple[int, str, bytes]:
        """One HTTP exchange: (status, content type, body), or :class:`_TransportFailure`."""
        if params:
            url = f"{url}?{urlencode(params)}"
        headers = {"Content-Type": "application/json"} if body is not None else None
        if self._http is not None:
            try:
                response = await self._http.request(method, url, content=body, headers=headers)
            except httpx.TransportError as exc:
                raise _TransportFailure(type(exc).__name__, isinstance(exc, _NOT_SENT)) from None
            return response.status_code, response.headers.get("content-type", ""), response.content
        try:
            async with self._aiohttp().request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc) from None
        if log.isEnabledFor(logging.DEBUG):
            redacted = _RedactQuery._pattern.sub(r"\1=***", url)
            log.debug("HTTP Request: %s %s %d", method, redacted, response.status)
        return response.status, response.content_type, content

    # -- API calls -------------------------------------------------------

    async def code2session(self, appid: str, secret: str, js_code: str) -> Session:
        params = {
            "appid": appid,
            "secret": secret,
            "js_code": js_code,
            "grant_type": "authorization_code",
        }
        data = await self._call("GET", "/sns/jscode2session", params=params, hide=(secret, js_code))
        return Session(data["openid"], data.get("unionid"), data["session_key"])

    async def phone_number(
        self, appid: str, secret: str, phone_code: str, *, openid: str | None = None
    ) -> PhoneInfo:
        """The number behind a phone button's code. With ``openid`` (the user who
        pressed it) WeChat also checks the code was minted for that user."""
        body = {"code": phone_code}
        if openid:
            body["openid"] = openid
        data = await self._call_with_token(
            appid, secret, "/wxa/business/getuserphonenumber", body, hide=(phone_code,)
        )
        info = data["phone_info"]
        return PhoneInfo(info["phoneNumber"], info["purePhoneNumber"], str(info["countryCode"]))

    async def wxacode_unlimited(
        self,
        appid: str,
        secret: str,
        scene: str,
        page: str,
        *,
        width: int = 430,
        check_path: bool = False,
        env_version: str = "release",
    ) -> bytes:
        """The PNG of an unlimited mini-program code that opens ``page`` with ``scene``."""
        body = {
            "scene": scene,
            "page": page,
            "width": width,
            "check_path": check_path,
            "env_version": env_version,
        }
        return await self._call_with_token(
            appid, secret, "/wxa/getwxacodeunlimit", body, image=True
        )

    # -- URL Scheme and URL Link: open the mini program from a phone's browser (issue 20)

    async def generate_scheme(
        self, appid: str, secret: str, *, path: str, query: str, days: int = 1
    ) -> str:
        """``generatescheme``: ``weixin://dl/business/?t=…``, valid ``days`` days (at most
        30), opening ``path`` with ``query`` (scene 1065). Non-personal mini programs
        only (40002); 45009 when the day's links are spent."""
        body = {
            "jump_wxa": {"path": path, "query": query, "env_version": "release"},
            "is_expire": True,
            "expire_type": 1,
            "expire_interval": days,
        }
        data = await self._call_with_token(appid, secret, "/wxa/generatescheme", body)
        return data["openlink"]

    async def generate_urllink(
        self, appid: str, secret: str, *, path: str, query: str, days: int = 1
    ) -> str:
        """``generate_urllink``: ``https://wxaurl.cn/…`` (scene 1194), as ``generate_scheme``."""
        body = {"path": path, "query": query, "env_version": "release", "is_expire": True,
                "expire_type": 1, "expire_interval": days}  # fmt: skip
        data = await self._call_with_token(appid, secret, "/wxa/generate_urllink", body)
        return data["url_link"]

    # -- link rules (扫普通链接二维码打开小程序, issue 17) --------------------

    async def link_rules(self, appid: str, secret: str) -> dict[str, Any]:
        """``qrcodejumpget``: the mini program's link rules (``rule_list``: prefix,
        path, state 1 unpublished / 2 published)."""
        return await self._call_with_token(appid, secret, "/cgi-bin/wxopen/qrcodejumpget", {})

    async def link_verify_file(self, appid: str, secret: str) -> tuple[str, str]:
        """``qrcodejumpdownload``: the verification file's name and content."""
        data = await self._call_with_token(appid, secret, "/cgi-bin/wxopen/qrcodejumpdownload", {})
        return data["file_name"], data["file_content"]

    async def link_rule_add(self, appid: str, secret: str, prefix: str, path: str) -> None:
        """``qrcodejumpadd``: a rule opening ``path`` for QR links under ``prefix``
        (85071 if the mini program has it already, 85072 another has it, 85073 full)."""
        body = {"prefix": prefix, "path": path, "open_version": "3", "permit_sub_rule": "1",
                "is_edit": 0, "debug_url": []}  # fmt: skip
        await self._call_with_token(appid, secret, "/cgi-bin/wxopen/qrcodejumpadd", body)

    async def link_rule_publish(self, appid: str, secret: str, prefix: str) -> None:
        """``qrcodejumppublish``: WeChat fetches the verification file (85069 if absent)."""
        await self._call_with_token(
            appid, secret, "/cgi-bin/wxopen/qrcodejumppublish", {"prefix": prefix}
        )

    async def msg_sec_check(
        self, appid: str, secret: str, openid: str, content: str, *, scene: int = 1
    ) -> dict[str, Any]:
        """``security.msgSecCheck`` v2: ``result.suggest`` is ``pass``, ``review`` or
        ``risky`` (scene 1: a profile)."""
        body = {"content": content, "version": 2, "scene": scene, "openid": openid}
        return await self._call_with_token(appid, secret, "/wxa/msg_sec_check", body)

    async def media_check_async(
        self, appid: str, secret: str, openid: str, media_url: str, *, scene: int = 1
    ) -> str:
        """``security.mediaCheckAsync`` v2 of an image: its ``trace_id``; the result is
        pushed later to the mini program's message push URL."""
        body = {"media_url": media_url, "media_type": 2, "version": 2, "scene": scene,
                "openid": openid}  # fmt: skip
        data = await self._call_with_token(appid, secret, "/wxa/media_check_async", body)
        return data["trace_id"]

    async def request_domains(self, appid: str, secret: str) -> dict[str, Any]:
        """``modify_domain`` with ``action: get``: the server domains (``requestdomain``,
        ``uploaddomain``, ...) the mini program may call."""
        return await self._call_with_token(appid, secret, "/wxa/modify_domain", {"action": "get"})

    # -- access token ----------------------------------------------------

    async def access_token(self, appid: str, secret: str, *, force: bool = False) -> str:
        """The mini program's stable access token, from the shared cache when fresh.

        ``force=True`` treats the currently cached token as invalid. It still
        goes through the refresh lock, so many callers forcing at once cause
        one refresh, not a chain of them invalidating each other.
        """
        rejected = None
        if force:
            cached = await self._read_token(appid)
            rejected = cached.token if cached else None
        return await self._token(appid, secret, rejected)

    async def check_credentials(self, appid: str, secret: str) -> None:
        """Asks WeChat for a token with these credentials (raising its error if
        it refuses them), bypassing the shared cache, which would vouch for a
        wrong secret. ``force_refresh`` stays false, so the token the running
        mini program uses is left as it is."""
        await self._stable_token(appid, secret, force=False)

    async def _token(self, appid: str, secret: str, rejected: str | None) -> str:
        lock, owner = f"wechat:token:{appid}:lock", secrets.token_hex(16)
        deadline = time.monotonic() + self._lock_ttl + 5
        fp = secret_fingerprint(appid, secret)
        while True:
            cached = await self._read_token(appid)
            # Only for the secret it was fetched with: another one is proven by WeChat first.
            usable = cached is not None and cached.token != rejected and cached.secret_fp == fp
            if usable and cached.refresh_at > time.time():
                return cached.token
            if await self._redis.set(lock, owner, nx=True, px=int(self._lock_ttl * 1000)):
                try:
                    # Someone may have refreshed between our read and our lock.
                    cached = await self._read_token(appid)
                    if (
                        cached
                        and cached.token != rejected
                        and cached.secret_fp == fp
                        and cached.refresh_at > time.time()
                    ):
                        return cached.token
                    return await self._fetch_token(appid, secret, rejected)
                finally:
                    await self._release_lock(keys=[lock], args=[owner])
            # Another process is refreshing: the current token is fine meanwhile.
            if usable and cached.expires_at - 30 > time.time():
                return cached.token
            if time.monotonic() > deadline:
                raise WeChatUnavailable("timed out waiting for the access token refresh")
            await asyncio.sleep(0.05)

    async def _fetch_token(self, appid: str, secret: str, rejected: str | None) -> str:
        started = time.time()
        data = await self._stable_token(appid, secret, force=False)
        if data["access_token"] == rejected:
            # WeChat still hands out the token it just refused: make it issue a
            # new one, if the budget allows (it raises otherwise).
            await self._spend_force(appid, rejected)
            data = await self._stable_token(appid, secret, force=True)
            await self._redis.set(
                f"wechat:force:{appid}:token", _token_fp(data["access_token"]), ex=7200
            )
        token, expires_in = data["access_token"], int(data["expires_in"])
        cached = _CachedToken(
            token=token,
            refresh_at=started + max(expires_in - self._refresh_margin, expires_in / 2),
            expires_at=started + expires_in,
            secret_fp=secret_fingerprint(appid, secret),
        )
        await self._redis.set(
            f"wechat:token:{appid}", json.dumps(asdict(cached)), px=max(1, int(expires_in * 1000))
        )
        return token

    async def _spend_force(self, appid: str, rejected: str) -> None:
        """Takes one forced refresh from ``appid``'s budget, or raises
        :class:`WeChatUnavailable` (nothing spent) when it may not be forced."""
        key = f"wechat:force:{appid}"
        forced = await self._redis.get(f"{key}:token")
        if isinstance(forced, bytes):
            forced = forced.decode()
        if forced == _token_fp(rejected):
            log.warning("WeChat refused a freshly forced token of %s: not forcing again", appid)
            raise WeChatUnavailable(
                "WeChat refused a freshly forced access token too (is another service "
                "forcing refreshes with this AppSecret?)",
                api="/cgi-bin/stable_token",
            )
        if not await self._redis.set(f"{key}:gap", "1", nx=True, ex=FORCE_GAP):
            raise WeChatUnavailable(
                "access token refused; a forced refresh was made less than 30 s ago",
                api="/cgi-bin/stable_token",
            )
        day = f"{key}:day:{int((time.time() + _BEIJING) // 86400)}"
        spent = await self._redis.incr(day)
        if spent == 1:
            await self._redis.expire(day, 2 * 86400)
        if spent > self._force_daily:
            log.error("forced access token refreshes of %s spent for today", appid)
            raise WeChatUnavailable(
                "access token refused; today's forced refreshes are spent",
                api="/cgi-bin/stable_token",
            )

    async def _stable_token(self, appid: str, secret: str, *, force: bool) -> dict[str, Any]:
        body = {
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret,
            "force_refresh": force,
        }
        return await self._call("POST", "/cgi-bin/stable_token", json_body=body, hide=(secret,))

    async def _read_token(self, appid: str) -> _CachedToken | None:
        raw = await self._redis.get(f"wechat:token:{appid}")
        if raw is None:
            return None
        return _CachedToken(**json.loads(raw))

    # -- HTTP ------------------------------------------------------------

    async def _call_with_token(
        self,
        appid: str,
        secret: str,
        path: str,
        body: dict[str, Any],
        *,
        hide: tuple[str, ...] = (),
        image: bool = False,
    ) -> Any:
        """POST with the access token; if WeChat refuses the token, refresh it and retry once."""
        token = await self._token(appid, secret, None)
        try:
            return await self._call(
                "POST",
                path,
                params={"access_token": token},
                json_body=body,
                hide=(*hide, token),
                image=image,
            )
        except WeChatError as exc:
            if exc.errcode not in _TOKEN_INVALID:
                raise
            log.info(
                "WeChat refused the access token of %s (errcode %s), refreshing", appid, exc.errcode
            )
        token = await self._token(appid, secret, rejected=token)
        return await self._call(
            "POST",
            path,
            params={"access_token": token},
            json_body=body,
            hide=(*hide, token),
            image=image,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        hide: tuple[str, ...] = (),
        image: bool = False,
    ) -> Any:
        """One WeChat API call with retries: the JSON dict, or the bytes of an image.

        ``hide`` lists the request's credentials, scrubbed from any errmsg.
        """
        url = self._base + path
        # As httpx encoded it: compact UTF-8 (WeChat reads Chinese text unescaped).
        body = None
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
        reason = ""
        maybe_spent = False  # a failed attempt may have reached WeChat and spent a code
        for attempt in range(len(self._backoff) + 1):
            if attempt:
                pause = self._backoff[attempt - 1]
                log.warning("WeChat %s failed (%s), retry %d in %gs", path, reason, attempt, pause)
                await asyncio.sleep(pause)
            WECHAT_CALLS.labels(path).inc()
            try:
                status, content_type, content = await self._send(method, url, params, body)
            except _TransportFailure as exc:
                # Only the class name: the exception or a chained traceback may carry the URL.
                reason = exc.name
                maybe_spent = maybe_spent or not exc.not_sent
                WECHAT_ERRORS.labels(path, "network").inc()
                continue
            if status >= 500:
                reason, maybe_spent = f"HTTP {status}", True
                WECHAT_ERRORS.labels(path, "http_5xx").inc()
                continue
            if image and content_type.startswith("image/"):
                return content
            try:
                data = _parse(status, content, path)
            except WeChatUnavailable:
                WECHAT_ERRORS.labels(path, "bad_response").inc()
                raise
            errcode = int(data.get("errcode") or 0)
            if errcode == 0:
                return data
            WECHAT_ERRORS.labels(path, str(errcode)).inc()
            errmsg = _scrub(str(data.get("errmsg", "")), hide)
            if errcode == ErrCode.SYSTEM_BUSY:
                reason = errmsg
                continue
            if errcode == ErrCode.CODE_USED and maybe_spent:
                # Our own earlier attempt spent the code: the user did nothing wrong.
                raise WeChatUnavailable(f"code spent by a failed attempt: {errmsg}", api=path)
            raise WeChatError(errcode, errmsg, api=path)
        raise WeChatUnavailable(f"{reason} after {len(self._backoff) + 1} attempts", api=path)


def _token_fp(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _parse(status: int, content: bytes, path: str) -> dict[str, Any]:
    # WeChat labels some JSON answers text/plain: parse the body whatever the type.
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if status != 200 or not isinstance(data, dict):
        raise WeChatUnavailable(f"unexpected answer (HTTP {status})", api=path)
    return data


def _scrub(text: str, hide: tuple[str, ...]) -> str:
    for value in hide:
        if value:
            text = text.replace(value, "***")
    return text
