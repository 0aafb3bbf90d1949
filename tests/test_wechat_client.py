"""The production WeChat client against the fake WeChat server over HTTP and a real Redis."""

import asyncio
import io
import json
import logging
import time
import traceback
import uuid

import httpx
import pytest
import zxingcpp
from PIL import Image

from portal.wechat.client import PhoneInfo, WeChatClient, secret_fingerprint
from portal.wechat.errors import WeChatError, WeChatUnavailable, whitelist_ip
from portal.wechat.fake import openid_for, unionid_for

STABLE_TOKEN = "/cgi-bin/stable_token"
JSCODE2SESSION = "/sns/jscode2session"
PHONE = "/wxa/business/getuserphonenumber"


@pytest.fixture
def app(fake_wechat):
    """(appid, secret) of a mini program registered with the fake."""
    return next(iter(fake_wechat.apps.items()))


@pytest.fixture
async def control(fresh_fake):
    """Talks to the fake's /_fake endpoints, reset first (its forced refreshes
    are rationed per AppID, like WeChat's). Compare stats by delta."""
    async with httpx.AsyncClient(base_url=fresh_fake.url) as client:
        yield client


@pytest.fixture
async def wechat(fake_wechat, redis_client):
    client = WeChatClient(fake_wechat.url, redis_client, timeout=2.0, retry_backoff=(0.01, 0.02))
    yield client
    await client.aclose()


class Calls:
    """Counts calls the fake received per path since creation."""

    def __init__(self, control):
        self.control = control
        self.start = {}

    async def _now(self):
        return (await self.control.get("/_fake/stats")).json()["calls"]

    async def __aenter__(self):
        self.start = await self._now()
        return self

    async def __aexit__(self, *exc):
        return False

    async def __call__(self, path):
        return (await self._now()).get(path, 0) - self.start.get(path, 0)


async def fault(control, path, **spec):
    response = await control.post("/_fake/faults", json={"path": path, **spec})
    response.raise_for_status()


def code(user="alice"):
    return f"{user}.{uuid.uuid4().hex}"


def phone_code(number="13800138000"):
    return f"{number}.{uuid.uuid4().hex}"


async def cached_token(redis_client, appid):
    raw = await redis_client.get(f"wechat:token:{appid}")
    return None if raw is None else json.loads(raw)


# -- code2session ----------------------------------------------------------


async def test_code2session(wechat, app, control):
    appid, secret = app
    session = await wechat.code2session(appid, secret, code("alice"))
    assert session.openid == openid_for(appid, "alice")
    assert session.unionid is None  # not bound to an Open Platform account
    assert session.session_key
    assert session.session_key not in repr(session)
    body = {"appid": appid, "secret": secret, "bound": "wxopen0000000001"}
    (await control.post("/_fake/apps", json=body)).raise_for_status()
    try:
        session = await wechat.code2session(appid, secret, code("alice"))
        assert session.unionid == unionid_for("alice", "wxopen0000000001")
    finally:
        await control.post("/_fake/reset")


@pytest.mark.parametrize(
    ("js_code", "errcode"),
    [("invalid.1", 40029), ("risky.1", 40226), ("no spaces", 40029)],
)
async def test_code2session_errors(wechat, app, js_code, errcode):
    with pytest.raises(WeChatError) as caught:
        await wechat.code2session(*app, js_code)
    assert caught.value.errcode == errcode
    assert not isinstance(caught.value, WeChatUnavailable)


async def test_code2session_code_used(wechat, app):
    js_code = code()
    await wechat.code2session(*app, js_code)
    with pytest.raises(WeChatError) as caught:
        await wechat.code2session(*app, js_code)
    assert caught.value.errcode == 40163


async def test_code2session_bad_credentials(wechat, app):
    appid, secret = app
    with pytest.raises(WeChatError) as caught:
        await wechat.code2session(appid, "wrong-secret-value", code())
    assert caught.value.errcode == 40125
    with pytest.raises(WeChatError) as caught:
        await wechat.code2session("wxnotregistered00", secret, code())
    assert caught.value.errcode == 40013
    assert secret not in str(caught.value)


# -- access token ----------------------------------------------------------


async def test_token_cached_in_redis(wechat, app, control, redis_client):
    appid, secret = app
    async with Calls(control) as calls:
        first = await wechat.access_token(appid, secret)
        assert await calls(STABLE_TOKEN) == 1
        assert await wechat.access_token(appid, secret) == first
        assert await calls(STABLE_TOKEN) == 1

    cached = await cached_token(redis_client, appid)
    assert cached["token"] == first
    assert 0 < cached["refresh_at"] - time.time() < cached["expires_at"] - time.time() <= 7200
    assert 7000 < await redis_client.ttl(f"wechat:token:{appid}") <= 7200


async def test_token_shared_between_clients(wechat, app, control, fake_wechat, redis_client):
    other = WeChatClient(fake_wechat.url, redis_client)
    try:
        async with Calls(control) as calls:
            assert await wechat.access_token(*app) == await other.access_token(*app)
            assert await calls(STABLE_TOKEN) == 1
    finally:
        await other.aclose()


async def test_no_stampede_on_empty_cache(wechat, app, control, fake_wechat, redis_client):
    # Two clients stand for two processes; the slow answer keeps everyone waiting at once.
    other = WeChatClient(fake_wechat.url, redis_client, retry_backoff=(0.01,))
    await fault(control, STABLE_TOKEN, delay=0.3)
    try:
        async with Calls(control) as calls:
            tokens = await asyncio.gather(
                *(client.access_token(*app) for client in [wechat, other] * 25)
            )
            assert len(set(tokens)) == 1
            assert await calls(STABLE_TOKEN) == 1
    finally:
        await other.aclose()


async def test_refresh_before_expiry(wechat, app, control, redis_client):
    appid, secret = app
    await wechat.access_token(appid, secret)
    key = f"wechat:token:{appid}"
    cached = await cached_token(redis_client, appid)
    # Make it look like the token has 4 minutes left.
    now = time.time()
    await redis_client.set(
        key, json.dumps({**cached, "refresh_at": now - 1, "expires_at": now + 240}), ex=240
    )
    async with Calls(control) as calls:
        await wechat.access_token(appid, secret)
        assert await calls(STABLE_TOKEN) == 1
    assert (await cached_token(redis_client, appid))["refresh_at"] > time.time() + 3600


async def test_valid_token_served_while_another_process_refreshes(
    wechat, app, control, redis_client
):
    appid, secret = app
    now = time.time()
    stale = {"token": "still-valid-token", "refresh_at": now - 1, "expires_at": now + 240,
             "secret_fp": secret_fingerprint(appid, secret)}  # fmt: skip
    await redis_client.set(f"wechat:token:{appid}", json.dumps(stale), ex=240)
    await redis_client.set(f"wechat:token:{appid}:lock", "someone-else", px=5000)
    async with Calls(control) as calls:
        assert await wechat.access_token(appid, secret) == "still-valid-token"
        assert await calls(STABLE_TOKEN) == 0


async def test_lock_of_a_crashed_process_expires(wechat, app, control, redis_client):
    appid, secret = app
    await redis_client.set(f"wechat:token:{appid}:lock", "crashed-process", px=300)
    async with Calls(control) as calls:
        started = time.monotonic()
        assert await wechat.access_token(appid, secret)
        assert time.monotonic() - started >= 0.2
        assert await calls(STABLE_TOKEN) == 1


async def test_force_refresh(wechat, app, control):
    appid, secret = app
    first = await wechat.access_token(appid, secret)
    async with Calls(control) as calls:
        forced = await wechat.access_token(appid, secret, force=True)
        assert forced != first
        # Normal mode handed back the same token, so the client forced WeChat.
        assert await calls(STABLE_TOKEN) == 2
        assert await wechat.access_token(appid, secret) == forced
        assert await calls(STABLE_TOKEN) == 2


# -- token refused: refresh and retry once ------------------------------------


async def test_token_refused_refresh_and_retry_once(wechat, app, control, redis_client):
    appid, secret = app
    # A token another party has made stale sits in the cache.
    now = time.time()
    bogus = {"token": "stale-token", "refresh_at": now + 3600, "expires_at": now + 7000,
             "secret_fp": secret_fingerprint(appid, secret)}  # fmt: skip
    await redis_client.set(f"wechat:token:{appid}", json.dumps(bogus), ex=7000)
    async with Calls(control) as calls:
        info = await wechat.phone_number(appid, secret, phone_code("13800138000"))
        assert info == PhoneInfo("13800138000", "13800138000", "86")
        assert await calls(PHONE) == 2
        assert await calls(STABLE_TOKEN) == 1
    assert (await cached_token(redis_client, appid))["token"] != "stale-token"


@pytest.mark.parametrize("errcode", [40001, 42001])
async def test_token_refused_though_wechat_still_hands_it_out(
    wechat, app, control, redis_client, errcode
):
    appid, secret = app
    old = await wechat.access_token(appid, secret)
    await fault(control, PHONE, errcode=errcode)
    async with Calls(control) as calls:
        info = await wechat.phone_number(appid, secret, phone_code("13900000000"))
        assert info.pure_phone_number == "13900000000"
        assert await calls(PHONE) == 2
        assert await calls(STABLE_TOKEN) == 2  # same token again, then force_refresh
    assert (await cached_token(redis_client, appid))["token"] != old


async def test_token_refused_twice_gives_up(wechat, app, control):
    await fault(control, PHONE, errcode=40001, times=2)
    async with Calls(control) as calls:
        with pytest.raises(WeChatError) as caught:
            await wechat.phone_number(*app, phone_code())
        assert caught.value.errcode == 40001
        assert await calls(PHONE) == 2


# -- phone number and mini-program code ----------------------------------------


async def test_phone_number_errors(wechat, app):
    used = phone_code()
    await wechat.phone_number(*app, used)
    for bad, errcode in [(used, 40163), ("not-digits", 40029)]:
        with pytest.raises(WeChatError) as caught:
            await wechat.phone_number(*app, bad)
        assert caught.value.errcode == errcode


async def test_wxacode_unlimited(wechat, app):
    scene = "AbC-_123" * 4
    png = await wechat.wxacode_unlimited(*app, scene, "pages/login/index")
    assert png.startswith(b"\x89PNG")
    (result,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert result.text == scene


@pytest.mark.parametrize(
    ("scene", "page", "errcode"),
    [("x" * 33, "pages/index/index", 40169), ("ok", "invalid/page", 41030)],
)
async def test_wxacode_unlimited_errors(wechat, app, scene, page, errcode):
    with pytest.raises(WeChatError) as caught:
        await wechat.wxacode_unlimited(*app, scene, page)
    assert caught.value.errcode == errcode


async def test_wxacode_unlimited_retries_on_token_refused(wechat, app, control):
    await wechat.access_token(*app)
    await fault(control, "/wxa/getwxacodeunlimit", errcode=40001)
    png = await wechat.wxacode_unlimited(*app, "retry", "pages/index/index")
    assert png.startswith(b"\x89PNG")


# -- transient failures -----------------------------------------------------------


async def test_busy_once_then_success(wechat, app, control):
    await fault(control, JSCODE2SESSION, errcode=-1)
    async with Calls(control) as calls:
        session = await wechat.code2session(*app, code("bob"))
        assert session.openid == openid_for(app[0], "bob")
        assert await calls(JSCODE2SESSION) == 2


async def test_busy_persistently(wechat, app, control):
    await fault(control, JSCODE2SESSION, errcode=-1, times=3)
    async with Calls(control) as calls:
        with pytest.raises(WeChatUnavailable) as caught:
            await wechat.code2session(*app, code())
        assert await calls(JSCODE2SESSION) == 3
    assert caught.value.errcode == -1
    assert isinstance(caught.value, WeChatError)


async def test_busy_token_endpoint(wechat, app, control):
    await fault(control, STABLE_TOKEN, errcode=-1, times=3)
    with pytest.raises(WeChatUnavailable):
        await wechat.access_token(*app)
    # The lock was released: the next call refreshes at once.
    assert await wechat.access_token(*app)


async def test_rate_limited_is_not_retried(wechat, app, control):
    await fault(control, JSCODE2SESSION, errcode=45011)
    async with Calls(control) as calls:
        with pytest.raises(WeChatError) as caught:
            await wechat.code2session(*app, code())
        assert caught.value.errcode == 45011
        assert await calls(JSCODE2SESSION) == 1


@pytest.fixture
async def impatient(fake_wechat, redis_client):
    client = WeChatClient(fake_wechat.url, redis_client, timeout=0.2, retry_backoff=(0.01, 0.02))
    yield client
    await client.aclose()


async def test_timeouts_then_unavailable(impatient, app, control):
    await fault(control, JSCODE2SESSION, delay=0.5, times=3)
    with pytest.raises(WeChatUnavailable) as caught:
        await impatient.code2session(*app, code())
    assert "Timeout" in str(caught.value)


async def test_timeout_once_then_success(impatient, app, control):
    await fault(control, STABLE_TOKEN, delay=0.5)
    assert await impatient.access_token(*app)


async def test_code_spent_by_timed_out_attempt_is_unavailable(
    fake_wechat, redis_client, app, control
):
    # The first attempt times out but WeChat still spends the code; the retry
    # then hears "code been used", which is not the user's fault.
    client = WeChatClient(fake_wechat.url, redis_client, timeout=0.2, retry_backoff=(1.0,))
    await fault(control, JSCODE2SESSION, delay=0.5)
    try:
        with pytest.raises(WeChatUnavailable):
            await client.code2session(*app, code())
    finally:
        await client.aclose()


async def test_connection_refused(redis_client, app):
    client = WeChatClient("http://127.0.0.1:9", redis_client, retry_backoff=(0.01,))
    try:
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code2session(*app, code())
        assert "ConnectError" in str(caught.value)
    finally:
        await client.aclose()


async def test_proxy_from_the_environment(fake_wechat, redis_client, app, monkeypatch):
    # A deployment reaching WeChat through HTTP_PROXY/HTTPS_PROXY (here one that is
    # down) goes through it, unless NO_PROXY names WeChat's host.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = WeChatClient(fake_wechat.url, redis_client, retry_backoff=())
    try:
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code2session(*app, code())
        assert "ConnectError" in str(caught.value)
    finally:
        await client.aclose()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = WeChatClient(fake_wechat.url, redis_client, retry_backoff=())
    try:
        assert (await client.code2session(*app, code())).openid
    finally:
        await client.aclose()


# -- secrets stay secret ----------------------------------------------------------


def everything_about(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))


async def test_no_secret_in_errors_logs_or_redis(
    wechat, impatient, app, control, redis_client, caplog
):
    appid, secret = app
    caplog.set_level(logging.DEBUG)
    session = await wechat.code2session(appid, secret, code())
    token = await wechat.access_token(appid, secret)
    used_phone = phone_code("13700000000")
    await wechat.phone_number(appid, secret, used_phone)

    failures = []
    for attempt in [
        wechat.code2session(appid, secret, "invalid.x"),
        wechat.code2session(appid, secret + "x", code()),
        wechat.phone_number(appid, secret, used_phone),
    ]:
        with pytest.raises(WeChatError) as caught:
            await attempt
        failures.append(caught.value)
    await fault(control, JSCODE2SESSION, delay=0.5, times=3)
    with pytest.raises(WeChatUnavailable) as caught:
        await impatient.code2session(appid, secret, code())
    failures.append(caught.value)

    for exc in failures:
        text = everything_about(exc)
        for value in (secret, session.session_key, token, used_phone):
            assert value not in text
    # The fake's own access log (uvicorn.access) is WeChat's side: not ours to check.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "uvicorn.access")
    for value in (secret, session.session_key, token, used_phone):
        assert value not in ours
    assert "secret=***" in ours  # httpx's request log, redacted

    for key in await redis_client.keys("*"):
        value = await redis_client.get(key)
        assert secret not in (value if isinstance(value, str) else value.decode())


# -- WeChat's rules: forced refreshes rationed, IP whitelist, phone codes per user ----


async def forced(control, appid):
    return (await control.get("/_fake/stats")).json()["forced"].get(appid, 0)


async def test_a_loop_of_refused_tokens_forces_one_refresh(wechat, app, control):
    """Every call refused with 40001 (say another service keeps forcing with this
    AppSecret): at most one forced refresh, however many calls, at once or not."""
    appid, secret = app
    await wechat.access_token(appid, secret)
    await fault(control, PHONE, errcode=40001, times=100)
    results = await asyncio.gather(
        *(wechat.phone_number(appid, secret, phone_code()) for _ in range(8)),
        return_exceptions=True,
    )
    for _ in range(4):
        await control.post("/_fake/clock", json={"advance": 31})  # WeChat would force again
        with pytest.raises(WeChatError):
            await wechat.phone_number(appid, secret, phone_code())
    assert all(isinstance(r, WeChatError) for r in results), results
    assert await forced(control, appid) == 1


async def test_no_forced_refresh_beyond_the_budget(fake_wechat, redis_client, app, control):
    appid, secret = app
    client = WeChatClient(fake_wechat.url, redis_client, retry_backoff=(), force_daily=0)
    try:
        await client.access_token(appid, secret)
        await fault(control, PHONE, errcode=40001)
        with pytest.raises(WeChatUnavailable, match="forced refreshes are spent"):
            await client.phone_number(appid, secret, phone_code())
    finally:
        await client.aclose()
    assert await forced(control, appid) == 0


async def test_phone_number_sends_the_openid(wechat, app, control):
    appid, secret = app
    mia, ned = openid_for(appid, "mia"), openid_for(appid, "ned")
    body = {"appid": appid, "phone": "13700000009", "openid": mia}
    minted = (await control.post("/_fake/phonecode", json=body)).json()["code"]
    with pytest.raises(WeChatError) as caught:
        await wechat.phone_number(appid, secret, minted, openid=ned)
    assert caught.value.errcode == 40029
    info = await wechat.phone_number(appid, secret, minted, openid=mia)
    assert info.pure_phone_number == "13700000009"


async def test_ip_not_on_the_whitelist(wechat, app, control):
    appid, secret = app
    body = {"appid": appid, "ips": ["203.0.113.7"]}
    (await control.post("/_fake/ipwhitelist", json=body)).raise_for_status()
    with pytest.raises(WeChatError) as caught:
        await wechat.check_credentials(appid, secret)
    assert caught.value.errcode == 40164 and not isinstance(caught.value, WeChatUnavailable)
    assert whitelist_ip(caught.value.errmsg) == "127.0.0.1"
    with pytest.raises(WeChatError) as caught:
        await wechat.phone_number(appid, secret, phone_code())
    assert caught.value.errcode == 40164
