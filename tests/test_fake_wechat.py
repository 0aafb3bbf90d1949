"""The fake WeChat API, over real HTTP, answers like WeChat (docs/design.md §7)."""

import asyncio
import io
import json
import time
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image

from portal.wechat.fake import (
    DEMO_APPID,
    DEMO_SECRET,
    PUBLISHED_PAGES,
    create_fake_wechat_app,
    openid_for,
    parse_app_arg,
    run_in_thread,
    unionid_for,
)

OTHER_APPID, OTHER_SECRET = "wx00000000000other", "othersecretothersecretothersecre"


BOUND_APPID, BOUND_SECRET = "wx0000000000bound", "boundsecretboundsecretboundsecre"
OPEN_PLATFORM = "wxopen0000000001"  # the Open Platform account BOUND_APPID and OTHER_APPID join


@pytest.fixture(scope="module")
def fake():
    apps = {DEMO_APPID: DEMO_SECRET, OTHER_APPID: OTHER_SECRET, BOUND_APPID: BOUND_SECRET}
    with run_in_thread(apps, bound={BOUND_APPID: OPEN_PLATFORM}) as running:
        yield running


@pytest.fixture
async def http(fake):
    async with httpx.AsyncClient(base_url=fake.url) as client:
        (await client.post("/_fake/reset")).raise_for_status()
        yield client


async def login(http, code, appid=DEMO_APPID, secret=DEMO_SECRET, grant_type="authorization_code"):
    params = {"appid": appid, "secret": secret, "js_code": code, "grant_type": grant_type}
    response = await http.get("/sns/jscode2session", params=params)
    assert response.status_code == 200
    return response.json()


async def stable_token(http, appid=DEMO_APPID, secret=DEMO_SECRET, **extra):
    body = {"grant_type": "client_credential", "appid": appid, "secret": secret, **extra}
    return (await http.post("/cgi-bin/stable_token", json=body)).json()


async def token(http, appid=DEMO_APPID, secret=DEMO_SECRET):
    return (await stable_token(http, appid, secret))["access_token"]


async def phone(http, access_token, code):
    response = await http.post(
        "/wxa/business/getuserphonenumber",
        params={"access_token": access_token},
        json={"code": code},
    )
    return response.json()


async def wxacode(http, access_token, **body):
    return await http.post(
        "/wxa/getwxacodeunlimit", params={"access_token": access_token}, json=body
    )


def errcode(data):
    return data.get("errcode")


# -- jscode2session ------------------------------------------------------


async def test_login_openid_per_app_unionid_only_when_bound(http):
    demo = await login(http, "alice.1")
    again = await login(http, "alice")
    other = await login(http, "alice.2", OTHER_APPID, OTHER_SECRET)
    bob = await login(http, "bob_2.x")

    assert demo["openid"] == again["openid"] == openid_for(DEMO_APPID, "alice")
    assert len(demo["openid"]) == 28 and demo["openid"].startswith("o")
    assert other["openid"] == openid_for(OTHER_APPID, "alice") != demo["openid"]
    assert bob["openid"] == openid_for(DEMO_APPID, "bob_2")
    assert demo["session_key"] and demo["session_key"] != again["session_key"]
    # Neither app is bound to an Open Platform account: WeChat returns no unionid.
    assert "unionid" not in demo and "unionid" not in other

    # Bound (at start, or at runtime): the unionid is per (account, person).
    bound = await login(http, "alice.3", BOUND_APPID, BOUND_SECRET)
    assert bound["unionid"] == unionid_for("alice", OPEN_PLATFORM)
    body = {"appid": OTHER_APPID, "secret": OTHER_SECRET, "bound": OPEN_PLATFORM}
    assert (await http.post("/_fake/apps", json=body)).json()["bound"] == OPEN_PLATFORM
    other = await login(http, "alice.4", OTHER_APPID, OTHER_SECRET)
    assert other["unionid"] == bound["unionid"] and other["openid"] != bound["openid"]
    assert (await login(http, "bob.5", OTHER_APPID, OTHER_SECRET))["unionid"] != bound["unionid"]
    body["bound"] = "wxopen0000000002"  # another account: another unionid
    await http.post("/_fake/apps", json=body)
    assert (await login(http, "alice.6", OTHER_APPID, OTHER_SECRET))["unionid"] != other["unionid"]
    # A reset puts back the bindings the fake started with.
    await http.post("/_fake/reset")
    assert "unionid" not in await login(http, "alice.7", OTHER_APPID, OTHER_SECRET)
    assert "unionid" in await login(http, "alice.8", BOUND_APPID, BOUND_SECRET)


async def test_jscode2session_answers_json_as_text_plain_like_wechat(http):
    params = {
        "appid": DEMO_APPID,
        "secret": DEMO_SECRET,
        "js_code": "carol",
        "grant_type": "authorization_code",
    }
    response = await http.get("/sns/jscode2session", params=params)
    assert response.headers["content-type"].startswith("text/plain")


async def test_code_works_once(http):
    assert "openid" in await login(http, "dave.once")
    used = await login(http, "dave.once")
    assert errcode(used) == 40163
    assert used["errmsg"].startswith("code been used")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("invalid", 40029),
        ("invalid_user.1", 40029),
        ("not-a-user", 40029),
        ("two words", 40029),
        (".nouser", 40029),
        ("", 41008),
        ("risky", 40226),
        ("risky_bob.7", 40226),
    ],
)
async def test_bad_codes(http, code, expected):
    assert errcode(await login(http, code)) == expected


async def test_login_credentials_checked(http):
    assert errcode(await login(http, "erin", appid="wxunknown")) == 40013
    assert errcode(await login(http, "erin", secret="wrong")) == 40125
    assert errcode(await login(http, "erin", secret=OTHER_SECRET)) == 40125
    assert errcode(await login(http, "erin", grant_type="client_credential")) == 40002
    # Refused calls do not spend the code.
    assert "openid" in await login(http, "erin")


# -- access tokens -------------------------------------------------------


async def test_stable_token_is_stable_until_forced(http):
    first = await stable_token(http)
    assert first["expires_in"] == 7200
    assert (await stable_token(http))["access_token"] == first["access_token"]

    forced = await stable_token(http, force_refresh=True)
    assert forced["access_token"] != first["access_token"]
    # A forced refresh kills the previous token at once.
    assert errcode(await phone(http, first["access_token"], "13800000000")) == 40001
    assert "phone_info" in await phone(http, forced["access_token"], "13800000001")


async def test_stable_token_renewed_in_its_last_five_minutes(http):
    first = await token(http)
    await http.post("/_fake/clock", json={"advance": 7200 - 299})
    second = await stable_token(http)
    assert second["access_token"] != first and second["expires_in"] == 7200
    # The old one stays valid until it expires...
    assert "phone_info" in await phone(http, first, "13800000002")
    await http.post("/_fake/clock", json={"advance": 300})
    # ...then it is expired, the new one is not.
    assert errcode(await phone(http, first, "13800000003")) == 42001
    assert "phone_info" in await phone(http, second["access_token"], "13800000004")


async def test_stable_token_credentials_checked(http):
    assert errcode(await stable_token(http, appid="wxunknown")) == 40013
    assert errcode(await stable_token(http, secret="wrong")) == 40125
    assert errcode(await stable_token(http, grant_type="password")) == 40002
    assert errcode(await stable_token(http, force_refresh="yes")) == 40097
    response = await http.post("/cgi-bin/stable_token", content=b"not json")
    assert errcode(response.json()) == 47001


async def test_plain_token(http):
    params = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET}
    first = (await http.get("/cgi-bin/token", params=params)).json()
    second = (await http.get("/cgi-bin/token", params=params)).json()
    assert first["expires_in"] == 7200 and first["access_token"] != second["access_token"]
    assert "phone_info" in await phone(http, first["access_token"], "13800000005")
    await http.post("/_fake/clock", json={"advance": 301})
    assert errcode(await phone(http, first["access_token"], "13800000006")) == 42001
    assert "phone_info" in await phone(http, second["access_token"], "13800000007")
    bad = (await http.get("/cgi-bin/token", params={**params, "secret": "x"})).json()
    assert errcode(bad) == 40125


@pytest.mark.parametrize("access_token", [None, "", "unknown-token"])
async def test_missing_or_unknown_token(http, access_token):
    params = {} if access_token is None else {"access_token": access_token}
    response = await http.post(
        "/wxa/business/getuserphonenumber", params=params, json={"code": "1"}
    )
    assert errcode(response.json()) == 40001
    response = await http.post("/wxa/getwxacodeunlimit", params=params, json={"scene": "x"})
    assert response.headers["content-type"].startswith("application/json")
    assert errcode(response.json()) == 40001


async def test_expired_token(http):
    access_token = await token(http)
    await http.post("/_fake/clock", json={"advance": 7200})
    assert errcode(await phone(http, access_token, "13800000008")) == 42001
    assert (await wxacode(http, access_token, scene="x")).json()["errcode"] == 42001


# -- phone numbers -------------------------------------------------------


async def test_phone_number(http):
    demo_token = await token(http)
    answer = await phone(http, demo_token, "13812345678")
    assert answer["errcode"] == 0 and answer["errmsg"] == "ok"
    info = answer["phone_info"]
    assert info["phoneNumber"] == info["purePhoneNumber"] == "13812345678"
    assert info["countryCode"] == "86"
    assert info["watermark"]["appid"] == DEMO_APPID
    assert abs(info["watermark"]["timestamp"] - time.time()) < 60

    other_token = await token(http, OTHER_APPID, OTHER_SECRET)
    other = await phone(http, other_token, "13812345678.second")
    assert other["phone_info"]["purePhoneNumber"] == "13812345678"
    assert other["phone_info"]["watermark"]["appid"] == OTHER_APPID


async def test_phone_code_rules(http):
    access_token = await token(http)
    assert "phone_info" in await phone(http, access_token, "13900000000.a")
    assert errcode(await phone(http, access_token, "13900000000.a")) == 40163
    assert errcode(await phone(http, access_token, "alice")) == 40029
    assert errcode(await phone(http, access_token, "+8613900000000")) == 40029
    assert errcode(await phone(http, access_token, "")) == 41008


# -- mini-program codes --------------------------------------------------


def decode_qr(png: bytes) -> str:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1
    return results[0].text


@pytest.mark.parametrize("scene", ["a", "Xk3_-9aZ" * 4, "id=12&from=pc"])
async def test_wxacode_encodes_the_scene(http, scene):
    response = await wxacode(http, await token(http), scene=scene, page="pages/login/index")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode_qr(response.content) == scene


async def test_wxacode_width(http):
    access_token = await token(http)
    small = await wxacode(http, access_token, scene="abc", width=280)
    large = await wxacode(http, access_token, scene="abc", width=1280)
    assert Image.open(io.BytesIO(small.content)).width <= 280
    assert Image.open(io.BytesIO(large.content)).width > 1000


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"scene": "x" * 33}, 40169),
        ({"scene": ""}, 40169),
        ({"page": "pages/index/index"}, 40169),
        ({"scene": "has space"}, 40129),
        ({"scene": "ok", "page": "invalid/page"}, 41030),
        ({"scene": "ok", "env_version": "beta"}, 40097),
    ],
)
async def test_wxacode_errors_are_json(http, body, expected):
    response = await wxacode(http, await token(http), **body)
    assert response.headers["content-type"].startswith("application/json")
    assert errcode(response.json()) == expected


def test_published_pages_are_the_login_mini_programs():
    app_json = json.loads((Path(__file__).parent.parent / "miniprogram" / "app.json").read_text())
    assert set(PUBLISHED_PAGES) == set(app_json["pages"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"page": "pages/login/index"}, None),
        ({"page": ""}, None),  # the home page
        ({}, None),
        ({"page": "pages/nope/index"}, 41030),  # check_path is true by default, as at WeChat
        ({"page": "pages/nope/index", "check_path": False}, None),
        ({"page": "/pages/login/index"}, 41030),  # no leading slash
        ({"page": "pages/login/index", "check_path": "yes"}, 40097),
    ],
)
async def test_wxacode_check_path(http, body, expected):
    response = await wxacode(http, await token(http), scene="abc", **body)
    if expected is None:
        assert response.headers["content-type"] == "image/png"
    else:
        assert errcode(response.json()) == expected


async def test_wxacode_minute_quota_is_per_appid_and_per_minute(http):
    """WeChat: 45009 when an AppID makes over 5000 codes a minute (issue 16)."""
    first, second = await token(http), await token(http, OTHER_APPID, OTHER_SECRET)
    r = await http.post("/_fake/wxacode", json={"minute_quota": 2})
    assert r.json()["minute_quota"] == 2
    await http.post("/_fake/clock", json={"advance": 60 - time.time() % 60 + 0.5})
    for _ in range(2):
        assert (await wxacode(http, first, scene="x")).headers["content-type"] == "image/png"
    assert errcode((await wxacode(http, first, scene="x")).json()) == 45009
    assert (await wxacode(http, second, scene="x")).headers["content-type"] == "image/png"
    await http.post("/_fake/clock", json={"advance": 60})  # the next minute
    assert (await wxacode(http, first, scene="x")).headers["content-type"] == "image/png"
    assert (await http.post("/_fake/wxacode", json={"minute_quota": -1})).status_code == 400


async def test_wxacode_control_pages_and_daily_quota(http):
    access_token = await token(http)
    r = await http.post("/_fake/wxacode", json={"pages": ["pages/a/a"], "daily_quota": 2})
    assert r.json() == {"pages": ["pages/a/a"], "daily_quota": 2, "minute_quota": 5000, "made": 0}
    assert errcode((await wxacode(http, access_token, scene="x", page="pages/login/index")).json())
    for _ in range(2):
        ok = await wxacode(http, access_token, scene="x", page="pages/a/a")
        assert ok.headers["content-type"] == "image/png"
    spent = await wxacode(http, access_token, scene="x", page="pages/a/a")
    assert errcode(spent.json()) == 45009
    assert (await http.post("/_fake/wxacode", json={"daily_quota": -1})).status_code == 400
    assert (await http.post("/_fake/wxacode", json={"pages": "x"})).status_code == 400
    await http.post("/_fake/reset")  # back to the published pages and no quota
    access_token = await token(http)
    for _ in range(3):
        ok = await wxacode(http, access_token, scene="x", page="pages/login/index")
        assert ok.headers["content-type"] == "image/png"


# -- busy rate, faults, stats, reset --------------------------------------


async def test_busy_rate_one_answers_system_error_everywhere():
    with run_in_thread(busy_rate=1.0) as busy:
        async with httpx.AsyncClient(base_url=busy.url) as http:
            answers = [
                await login(http, "alice"),
                await stable_token(http),
                await phone(http, "any", "13800000000"),
                (await wxacode(http, "any", scene="x")).json(),
            ]
            assert [errcode(a) for a in answers] == [-1, -1, -1, -1]
            assert all(a["errmsg"].startswith("system error") for a in answers)


async def test_busy_rate_fraction():
    with run_in_thread(busy_rate=0.5, seed=7) as busy:
        async with httpx.AsyncClient(base_url=busy.url) as http:
            answers = [await login(http, f"user{i}") for i in range(200)]
    busy_count = sum(errcode(a) == -1 for a in answers)
    assert 60 < busy_count < 140
    assert all("openid" in a for a in answers if errcode(a) != -1)


async def test_fault_errcode(http):
    fault = {"path": "/sns/jscode2session", "errcode": 45011, "times": 2}
    assert (await http.post("/_fake/faults", json=fault)).json()["pending"] == 2
    assert errcode(await login(http, "frank.1")) == 45011
    assert errcode(await login(http, "frank.1")) == 45011
    assert "openid" in await login(http, "frank.1")


async def test_fault_other_paths_untouched(http):
    await http.post("/_fake/faults", json={"path": "/cgi-bin/stable_token", "errcode": -1})
    assert "openid" in await login(http, "gina")
    assert errcode(await stable_token(http)) == -1
    assert "access_token" in await stable_token(http)


async def test_fault_delay(http):
    await http.post("/_fake/faults", json={"path": "/sns/jscode2session", "delay": 0.3})
    started = time.monotonic()
    assert "openid" in await login(http, "hank")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert "openid" in await login(http, "hank.2")
    assert time.monotonic() - started < 0.3


async def test_fault_delay_then_timeout_for_client(http):
    await http.post("/_fake/faults", json={"path": "/cgi-bin/stable_token", "delay": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/cgi-bin/stable_token", json={}, timeout=0.1)


@pytest.mark.parametrize(
    "fault",
    [
        {"path": "/nope", "errcode": -1},
        {"path": "/sns/jscode2session"},
        {"path": "/sns/jscode2session", "errcode": -1, "times": 0},
        {"errcode": -1},
    ],
)
async def test_bad_fault_is_refused(http, fault):
    assert (await http.post("/_fake/faults", json=fault)).status_code == 400


async def test_stats_and_reset(http):
    await login(http, "ivan")
    await login(http, "ivan")
    old_token = await token(http)
    await http.post("/_fake/faults", json={"path": "/sns/jscode2session", "errcode": -1})
    stats = (await http.get("/_fake/stats")).json()
    assert stats == {"calls": {"/sns/jscode2session": 2, "/cgi-bin/stable_token": 1}, "forced": {}}

    await http.post("/_fake/reset")
    assert (await http.get("/_fake/stats")).json() == {"calls": {}, "forced": {}}
    assert "openid" in await login(http, "ivan")  # used codes and faults are gone
    assert errcode(await phone(http, old_token, "13800000009")) == 40001  # tokens too


async def test_register_app_at_runtime(http, fake):
    body = {"appid": "wx0000000000000new", "secret": "newsecret"}
    assert (await http.post("/_fake/apps", json=body)).status_code == 200
    assert "openid" in await login(http, "judy", "wx0000000000000new", "newsecret")
    assert fake.apps["wx0000000000000new"] == "newsecret"
    assert (await http.post("/_fake/apps", json={"appid": "x"})).status_code == 400


async def test_concurrent_codes_only_one_wins(http):
    answers = await asyncio.gather(*(login(http, "kate.race") for _ in range(10)))
    assert sum("openid" in a for a in answers) == 1
    assert sum(errcode(a) == 40163 for a in answers) == 9


# -- helpers for the CLI ---------------------------------------------------


def test_parse_app_arg():
    assert parse_app_arg("wx123:s3cret") == ("wx123", "s3cret", None)
    assert parse_app_arg("wx123:a:b") == ("wx123", "a:b", None)
    assert parse_app_arg("wx123:s3cret:bound=wxopen1") == ("wx123", "s3cret", "wxopen1")
    assert parse_app_arg("wx123:a:b:bound=wxopen1") == ("wx123", "a:b", "wxopen1")
    for bad in ["wx123", "wx123:", ":secret", "", "wx123:s3cret:bound=", "wx123::bound=x"]:
        with pytest.raises(ValueError, match="APPID:SECRET"):
            parse_app_arg(bad)


def test_busy_rate_must_be_a_fraction():
    with pytest.raises(ValueError, match="busy_rate"):
        create_fake_wechat_app(busy_rate=1.5)


# -- codes expire after 5 minutes and work once (code2Session, getPhoneNumber) ----


async def mint(http, path, **body):
    response = await http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()["code"]


async def test_wx_login_codes_expire_after_five_minutes(http):
    fresh = await mint(http, "/_fake/wxlogin", appid=DEMO_APPID, user="mia")
    stale = await mint(http, "/_fake/wxlogin", appid=DEMO_APPID, user="mia")
    other_app = await mint(http, "/_fake/wxlogin", appid=OTHER_APPID, user="mia")
    await http.post("/_fake/clock", json={"advance": 299})
    assert (await login(http, fresh))["openid"] == openid_for(DEMO_APPID, "mia")
    assert errcode(await login(http, fresh)) == 40163  # once
    assert errcode(await login(http, other_app)) == 40029  # minted for another mini program
    await http.post("/_fake/clock", json={"advance": 2})
    assert errcode(await login(http, stale)) == 40029  # 5 minutes and 1 second old
    assert (await http.post("/_fake/wxlogin", json={"appid": DEMO_APPID})).status_code == 400


async def test_phone_codes_expire_work_once_and_belong_to_one_user(http):
    access_token = await token(http)
    mia, ned = openid_for(DEMO_APPID, "mia"), openid_for(DEMO_APPID, "ned")
    code = await mint(http, "/_fake/phonecode", appid=DEMO_APPID, phone="13700000001", openid=mia)

    async def ask(code, openid=None):
        body = {"code": code} | ({"openid": openid} if openid else {})
        response = await http.post(
            "/wxa/business/getuserphonenumber", params={"access_token": access_token}, json=body
        )
        return response.json()

    assert errcode(await ask(code, ned)) == 40029  # minted for mia, asked for ned
    assert (await ask(code, mia))["phone_info"]["purePhoneNumber"] == "13700000001"
    assert errcode(await ask(code, mia)) == 40163
    stale = await mint(http, "/_fake/phonecode", appid=DEMO_APPID, phone="13700000002")
    await http.post("/_fake/clock", json={"advance": 301})
    access_token = await token(http)
    assert errcode(await ask(stale)) == 40029
    # A hand-made code is minted just now, for anyone.
    assert (await ask("13700000003.x", ned))["phone_info"]["phoneNumber"] == "13700000003"


# -- forced refreshes of the stable token: 20 a day, 30 s apart -----------------


async def test_forced_refreshes_are_rationed(http):
    first = (await stable_token(http, force_refresh=True))["access_token"]
    # Within 30 s of the last forced refresh: not refreshed, the same token back.
    await http.post("/_fake/clock", json={"advance": 29})
    assert (await stable_token(http, force_refresh=True))["access_token"] == first
    assert (await http.get("/_fake/stats")).json()["forced"] == {DEMO_APPID: 1}
    tokens = {first}
    for _ in range(19):
        await http.post("/_fake/clock", json={"advance": 30})
        tokens.add((await stable_token(http, force_refresh=True))["access_token"])
    assert len(tokens) == 20
    await http.post("/_fake/clock", json={"advance": 30})
    over = await stable_token(http, force_refresh=True)
    assert errcode(over) == 45009
    # The normal mode still works; another AppID has its own budget.
    assert (await stable_token(http))["access_token"] in tokens
    assert "access_token" in await stable_token(http, OTHER_APPID, OTHER_SECRET, force_refresh=True)
    # A new (Beijing) day, a new budget.
    await http.post("/_fake/clock", json={"advance": 86400})
    assert "access_token" in await stable_token(http, force_refresh=True)


# -- the IP whitelist (40164) ------------------------------------------------


async def test_ip_whitelist(http):
    body = {"appid": DEMO_APPID, "ips": ["203.0.113.7"]}
    assert (await http.post("/_fake/ipwhitelist", json=body)).status_code == 200
    refused = await stable_token(http)
    assert errcode(refused) == 40164
    # WeChat names the address it saw, the one to add.
    assert refused["errmsg"].startswith("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in")
    plain = await http.get(
        "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET},
    )
    assert errcode(plain.json()) == 40164
    assert "access_token" in await stable_token(http, OTHER_APPID, OTHER_SECRET)  # per app
    body["ips"] = ["203.0.113.7", "127.0.0.1"]
    await http.post("/_fake/ipwhitelist", json=body)
    assert "access_token" in await stable_token(http)
    await http.post("/_fake/ipwhitelist", json={"appid": DEMO_APPID, "ips": ["203.0.113.7"]})
    await http.post("/_fake/reset")  # a reset lifts it
    assert "access_token" in await stable_token(http)
    assert (await http.post("/_fake/ipwhitelist", json={"appid": 1})).status_code == 400
