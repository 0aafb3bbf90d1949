"""Scan login that resists phishing (issue 20), over real HTTP with the mini
program's API: where the login was started (shown on the confirm screen), the
launch scene against where the ticket was made (warned, refused, recorded),
number matching, and "this wasn't me"."""

from __future__ import annotations

import json

import pytest

from portal.scan.tickets import key
from portal.tenants import pools
from tests import xdb
from tests.phone import Phone
from tests.support import TRUST_LOCALHOST, forwarded_for, free_socket, run_portal
from tests.test_wxacode import change_pool

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
WECHAT_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44(0x18002c2c) NetType/WIFI "
    "Language/zh_CN"
)
SHENZHEN = "14.153.1.2"


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme")


@pytest.fixture
async def portal(db, redis_client, settings_factory, tmp_path):
    """A portal behind a trusted proxy (the test speaks for any address) with a
    small ip2region database (tests/xdb.py)."""
    places = xdb.write(
        tmp_path / "ip2region_v4.xdb",
        [
            ("14.153.0.0", "14.153.255.255", "中国|广东省|深圳市|电信|CN"),
            ("8.8.8.0", "8.8.8.255", "United States|California|0|Google|US"),
        ],
    )
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        trusted_proxies=TRUST_LOCALHOST,
        ip2region_xdb=str(places),
    )
    async with run_portal(settings, sock=sock) as running:
        yield running


class ScenePhone(Phone):
    """The mini program as issue 20 has it: the scan says how WeChat opened it."""

    async def scan(self, ticket: str, scene: int | None = None):
        if self.token is None:
            (await self.login()).raise_for_status()
        body = {} if scene is None else {"scene": scene}
        return await self.client.post(
            f"/api/mp/tickets/{ticket}/scan", json=body, headers=self._auth()
        )

    async def confirm_number(self, ticket: str, number: int | None):
        body = {} if number is None else {"number": number}
        return await self.client.post(
            f"/api/mp/tickets/{ticket}/confirm", json=body, headers=self._auth()
        )

    async def not_me(self, ticket: str):
        if self.token is None:
            (await self.login()).raise_for_status()
        return await self.client.post(
            f"/api/mp/tickets/{ticket}/cancel", json={"reason": "not_me"}, headers=self._auth()
        )


async def _ticket(pc, agent: str = CHROME_WINDOWS, ip: str = SHENZHEN, **headers) -> dict:
    r = await pc.post(
        "/api/qrcode", json={}, headers={"user-agent": agent, **forwarded_for(ip), **headers}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _status(pc, t: dict) -> dict:
    r = await pc.get(f"/api/qrcode/{t['ticket']}/status", params={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    return r.json()


async def _number(pc, t: dict) -> int:
    """The number the PC page shows once scanned (it waits for the change, as pages do)."""
    r = await pc.get(
        f"/api/qrcode/{t['ticket']}/status",
        params={"secret": t["secret"], "wait": 5, "known": "pending"},
    )
    assert r.json()["status"] == "scanned", r.text
    return r.json()["number"]


@pytest.fixture
async def subscribed(db, acme) -> None:
    """An endpoint of acme's webhooks subscribed to login.suspicious, where webhooks
    exist (sql/0008 keeps only the events some endpoint subscribes to)."""
    if await db.fetchval("SELECT to_regclass('webhook_endpoints') IS NOT NULL"):
        await db.execute(
            """INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc)
               VALUES ($1, 'https://hooks.example.com/portal', '{login.suspicious}', '\\x00')""",
            acme.pool.id,
        )


async def _suspicious(db) -> list[dict]:
    """The pool's login.suspicious events for its webhooks (portal.jobs' outbox)."""
    rows = await db.fetch(
        "SELECT data FROM events WHERE type = 'login.suspicious' ORDER BY created_at"
    )
    found = []
    for row in rows:
        data = json.loads(row["data"]) if isinstance(row["data"], str) else dict(row["data"])
        assert isinstance(data.pop("login_event_id"), int) and data.pop("client_id")
        found.append(data)
    return found


async def _events(db) -> list[dict]:
    rows = await db.fetch(
        """SELECT result, scene, scan_source, flagged, started_from FROM login_events
           ORDER BY id"""
    )
    return [dict(r) for r in rows]


async def test_the_confirm_screen_says_where_the_login_was_started(pc, apex):
    t = await _ticket(pc, referer="https://shop.example.com/login?next=/cart")
    r = await ScenePhone(apex, "alice").scan(t["ticket"], 1011)
    assert r.status_code == 200, r.text
    body = r.json()
    context = body["context"]
    assert context.pop("started_s_ago") in (0, 1)
    assert context == {
        "browser": "Chrome",
        "os": "Windows",
        "device": "pc",
        "location": "广东 深圳",
        "site": "shop.example.com",
        "client": None,  # the pool's own page
    }
    assert body["scan_source"] == "ok"
    assert "number_choices" not in body  # number matching is off by default
    # A private address, an unknown browser: said to be unknown, never guessed.
    t = await _ticket(pc, agent="curl/8.5.0", ip="192.168.1.20")
    context = (await ScenePhone(apex, "bob").scan(t["ticket"], 1011)).json()["context"]
    assert (context["location"], context["site"], context["os"]) == (None, None, None)
    t = await _ticket(pc, ip="8.8.8.8")
    context = (await ScenePhone(apex, "carol").scan(t["ticket"], 1011)).json()["context"]
    assert context["location"] == "United States California"


async def test_every_launch_scene_against_where_the_ticket_was_made(pc, apex):
    expected = {
        # scene: (computer, phone browser, WeChat's browser)
        1011: ("ok", "ok", "ok"),  # the camera
        1047: ("ok", "ok", "ok"),
        1012: ("warned", "warned", "ok"),  # long-press in an image: a forwarded screenshot,
        1013: ("warned", "warned", "ok"),  # or the same phone's WeChat browser
        1048: ("warned", "warned", "ok"),
        1049: ("warned", "warned", "ok"),
        1065: ("warned", "ok", "warned"),  # URL Scheme: "Open WeChat" on the phone itself
        1194: ("warned", "ok", "warned"),  # URL Link
        1286: ("warned", "ok", "warned"),
        1001: ("unknown", "unknown", "unknown"),  # any other way in
        None: ("unknown", "unknown", "unknown"),  # an older mini program says nothing
    }
    phone = ScenePhone(apex, "dave")
    for scene, outcomes in expected.items():
        for agent, outcome in zip(
            (CHROME_WINDOWS, SAFARI_IPHONE, WECHAT_IPHONE), outcomes, strict=True
        ):
            t = await _ticket(pc, agent=agent)
            r = await phone.scan(t["ticket"], scene)
            assert r.status_code == 200, r.text
            assert r.json()["scan_source"] == outcome, (scene, agent)
    bad = await _ticket(pc)
    for scene in ("camera", 12, -1, True, 1.5):
        r = await phone.scan(bad["ticket"], scene)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), scene


async def test_a_forwarded_screenshot_is_warned_or_refused_and_recorded(pc, apex, db, portal):
    # Warned (the default): the login may go on, and its event says how it came.
    t = await _ticket(pc)
    erin = ScenePhone(apex, "erin")
    r = await erin.scan(t["ticket"], 1012)
    assert r.json()["scan_source"] == "warned"
    assert (await erin.confirm(t["ticket"])).status_code == 200
    # Refused by the pool: nothing scanned, and the attempt is recorded.
    await change_pool(db, portal, "scan_source_policy = 'refuse'")
    t = await _ticket(pc)
    r = await erin.scan(t["ticket"], 1012)
    assert r.status_code == 403
    assert r.json()["error"] == "scan_source_refused"
    assert (await _status(pc, t))["status"] == "pending"
    # The camera still works for that same QR code, and WeChat's own browser's
    # long-press is expected, not refused.
    assert (await erin.scan(t["ticket"], 1011)).json()["scan_source"] == "ok"
    t = await _ticket(pc, agent=WECHAT_IPHONE)
    assert (await erin.scan(t["ticket"], 1012)).json()["scan_source"] == "ok"
    where = "Chrome on Windows · 广东 深圳"
    assert await _events(db) == [
        {
            "result": "signup",
            "scene": 1012,
            "scan_source": "warned",
            "flagged": False,
            "started_from": where,
        },
        {
            "result": "scan_source_refused",
            "scene": 1012,
            "scan_source": "refused",
            "flagged": False,
            "started_from": where,
        },
    ]


async def test_number_matching(pc, apex, db, portal, redis_client, subscribed):
    await change_pool(db, portal, "number_match = true")
    frank = ScenePhone(apex, "frank")
    # Right: the number the computer shows is among the three, and picking it logs in.
    t = await _ticket(pc)
    assert "number" not in await _status(pc, t)  # nothing before the scan
    choices = (await frank.scan(t["ticket"], 1011)).json()["number_choices"]
    shown = await _number(pc, t)
    assert len(set(choices)) == 3 and shown in choices and 10 <= shown <= 99
    r = await frank.confirm_number(t["ticket"], None)
    assert (r.status_code, r.json()["error"]) == (400, "number_required")
    assert (await frank.confirm_number(t["ticket"], shown)).status_code == 200
    assert "number" not in await _status(pc, t)
    # Wrong: the ticket is cancelled at once, no second guess, the attempt flagged.
    t = await _ticket(pc)
    choices = (await frank.scan(t["ticket"], 1012)).json()["number_choices"]
    shown = await _number(pc, t)
    wrong = next(n for n in choices if n != shown)
    r = await frank.confirm_number(t["ticket"], wrong)
    assert (r.status_code, r.json()["error"]) == (403, "number_mismatch")
    assert (await _status(pc, t))["status"] == "cancelled"
    r = await frank.confirm_number(t["ticket"], shown)
    assert (r.status_code, r.json()["error"]) == (410, "ticket_expired")
    # Timeout: the QR code's time runs out while the person looks for the number.
    t = await _ticket(pc)
    await frank.scan(t["ticket"], 1011)
    shown = await _number(pc, t)
    await redis_client.hset(key(t["ticket"]), "exp", 0)  # its lifetime is over
    r = await frank.confirm_number(t["ticket"], shown)
    assert (r.status_code, r.json()["error"]) == (410, "ticket_expired")
    events = await _events(db)
    assert [(e["result"], e["flagged"], e["scene"]) for e in events] == [
        ("signup", False, 1011),
        ("number_mismatch", True, 1012),
    ]
    assert await _suspicious(db) == [
        {"reason": "number_mismatch", "scene": 1012, "scan_source": "warned"}
    ]


async def test_this_was_not_me(pc, apex, db, subscribed):
    t = await _ticket(pc)
    grace = ScenePhone(apex, "grace")
    await grace.scan(t["ticket"], 1012)
    # Nobody else may flag or end her scan (only the scanner cancels).
    r = await ScenePhone(apex, "mallory").not_me(t["ticket"])
    assert (r.status_code, r.json()["error"]) == (403, "not_scanner")
    r = await grace.client.post(
        f"/api/mp/tickets/{t['ticket']}/cancel", json={"reason": "bored"}, headers=grace._auth()
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    r = await grace.not_me(t["ticket"])
    assert r.json() == {"status": "cancelled"}
    assert (await _status(pc, t))["status"] == "cancelled"
    # A plain cancel is no alarm: nothing recorded.
    t = await _ticket(pc)
    await grace.scan(t["ticket"], 1011)
    assert (await grace.cancel(t["ticket"])).status_code == 200
    assert await _events(db) == [
        {
            "result": "not_me",
            "scene": 1012,
            "scan_source": "warned",
            "flagged": True,
            "started_from": "Chrome on Windows · 广东 深圳",
        }
    ]
    assert await _suspicious(db) == [{"reason": "not_me", "scene": 1012, "scan_source": "warned"}]


def test_the_packaged_location_database_works_as_installed():
    """Without PORTAL_IP2REGION_XDB the portal uses ip2region's database that the
    package ships (portal/data), so the confirm screen names a place out of the
    box; "off" turns it off."""
    from portal.scan import origin
    from portal.settings import Settings

    env = {"PORTAL_ENV": "dev"}
    packaged = Settings.from_env(env).ip2region_xdb
    assert packaged.endswith("ip2region.xdb")
    assert origin.Locator(packaged).locate("183.14.29.1") == "广东 深圳"
    assert origin.Locator(packaged).locate("202.96.128.86") == "广东 广州"
    assert origin.Locator(packaged).locate("127.0.0.1") is None
    off = Settings.from_env({**env, "PORTAL_IP2REGION_XDB": "off"})
    assert off.ip2region_xdb == ""
    own = Settings.from_env({**env, "PORTAL_IP2REGION_XDB": "/x.xdb"})
    assert own.ip2region_xdb == "/x.xdb"
