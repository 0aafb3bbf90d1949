"""Log in on the phone itself (issue 20, item 5): ``POST /api/qrcode/{ticket}/applink``
and the fake WeChat's URL Scheme and URL Link, with WeChat's rules."""

from __future__ import annotations

import httpx
import pytest

from portal.tenants import pools
from portal.wechat.fake import DEMO_APPID, DEMO_SECRET
from tests.phone import Phone


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="other", name="Other")
        return await pools.create(conn, box, slug="acme", name="Acme")


async def _ticket(pc) -> dict:
    r = await pc.post("/api/qrcode", json={})
    assert r.status_code == 201, r.text
    return r.json()


async def _calls(fake, path: str) -> int:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        return (await client.get("/_fake/stats")).json()["calls"].get(path, 0)


async def test_a_link_per_ticket_that_opens_its_confirm_page(pc, apex, portal, fresh_fake):
    t = await _ticket(pc)
    r = await pc.post(f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "scheme" and body["url"].startswith("weixin://dl/business/?t=")
    assert 0 < body["expires_in"] <= 120 and r.headers["cache-control"] == "no-store"
    # Asked again: the same link, and WeChat is not asked again (its quota is daily).
    again = await pc.post(f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"]})
    assert again.json()["url"] == body["url"]
    assert await _calls(fresh_fake, "/wxa/generatescheme") == 1
    link = await pc.post(
        f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"], "kind": "url_link"}
    )
    assert link.json()["url"].startswith("https://wxaurl.cn/")
    # WeChat opens the mini program's confirm page with the ticket, scene 1065.
    async with httpx.AsyncClient(base_url=fresh_fake.url) as fake:
        opened = (await fake.post("/_fake/openlink", json={"link": body["url"]})).json()
        via_link = (await fake.post("/_fake/openlink", json={"link": link.json()["url"]})).json()
        unknown = await fake.post("/_fake/openlink", json={"link": "weixin://dl/business/?t=no"})
    assert opened == {
        "appid": DEMO_APPID,
        "path": "pages/login/index",
        "query": f"ticket={t['ticket']}",
        "scene": 1065,
    }
    assert via_link["scene"] == 1194 and unknown.status_code == 404
    # The phone scans with that scene: a computer made this ticket (no phone browser
    # asked for the link), so the confirm screen warns.
    pat = Phone(apex, "pat")
    (await pat.login()).raise_for_status()
    r = await apex.post(
        f"/api/mp/tickets/{t['ticket']}/scan", json={"scene": opened["scene"]}, headers=pat._auth()
    )
    assert r.json()["scan_source"] == "warned"


async def test_only_the_ticket_holder_gets_a_link(pc, portal, fresh_fake):
    t = await _ticket(pc)
    url = f"/api/qrcode/{t['ticket']}/applink"
    assert (await pc.post(url, json={})).json()["error"] == "invalid_request"  # no secret
    assert (await pc.post(url, json={"secret": "x" * 43})).status_code == 403
    r = await pc.post(url, json={"secret": t["secret"], "kind": "sms"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    async with portal.client("other") as other:  # another pool's host: no such ticket
        r = await other.post(url, json={"secret": t["secret"]})
    assert (r.status_code, r.json()["error"]) == (404, "ticket_not_found")
    assert await _calls(fresh_fake, "/wxa/generatescheme") == 0


async def test_wechat_refusals_fall_back_to_scanning(pc, portal, fresh_fake, apex):
    async with httpx.AsyncClient(base_url=fresh_fake.url) as fake:
        # Over the day's quota: 503, and WeChat is left alone for a while.
        await fake.post("/_fake/links", json={"appid": DEMO_APPID, "daily_quota": 0})
        for _ in range(2):
            t = await _ticket(pc)
            r = await pc.post(f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"]})
            assert (r.status_code, r.json()["error"]) == (503, "applink_quota_exceeded")
        assert await _calls(fresh_fake, "/wxa/generatescheme") == 1
        await portal.state["redis"].delete(f"applink:quota:{DEMO_APPID}")
        # A personal account's mini program (40002): no links, remembered.
        await fake.post(
            "/_fake/links", json={"appid": DEMO_APPID, "daily_quota": 10, "personal": True}
        )
        for _ in range(2):
            t = await _ticket(pc)
            r = await pc.post(f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"]})
            assert (r.status_code, r.json()["error"]) == (503, "applink_unavailable")
        assert await _calls(fresh_fake, "/wxa/generatescheme") == 2
        # The fake outlives the test: back to a company's mini program.
        await fake.post(
            "/_fake/links", json={"appid": DEMO_APPID, "personal": False, "daily_quota": 500_000}
        )
    # A final ticket gets none.
    await portal.state["redis"].delete(f"applink:off:{DEMO_APPID}")
    t = await _ticket(pc)
    phone = Phone(apex, "quinn")
    assert (await phone.scan(t["ticket"])).status_code == 200
    assert (await phone.cancel(t["ticket"])).status_code == 200
    r = await pc.post(f"/api/qrcode/{t['ticket']}/applink", json={"secret": t["secret"]})
    assert (r.status_code, r.json()["error"]) == (410, "ticket_expired")


async def test_the_fake_has_wechat_s_rules_for_links(fresh_fake):
    async with httpx.AsyncClient(base_url=fresh_fake.url) as fake:
        token = (
            await fake.post(
                "/cgi-bin/stable_token",
                json={"grant_type": "client_credential", "appid": DEMO_APPID,
                      "secret": DEMO_SECRET},
            )
        ).json()["access_token"]  # fmt: skip

        async def scheme(**jump) -> dict:
            body = {"jump_wxa": {"path": "pages/login/index", **jump}, "expire_type": 1,
                    "expire_interval": jump.pop("days", 1)}  # fmt: skip
            r = await fake.post("/wxa/generatescheme", params={"access_token": token}, json=body)
            return r.json()

        assert (await scheme(query="ticket=abc"))["openlink"].startswith("weixin://")
        assert (await scheme(path="pages/unpublished"))["errcode"] == 40165
        assert (await scheme(path="pages/login/index?x=1"))["errcode"] == 40165
        assert (await scheme(query="x" * 1025))["errcode"] == 40212
        assert (await scheme(query="a=<b>"))["errcode"] == 40212
        assert (await scheme(days=31))["errcode"] == 85401
        assert (await scheme(env_version="beta"))["errcode"] == 40097
        r = await fake.post(
            "/wxa/generate_urllink",
            params={"access_token": token},
            json={"path": "pages/login/index", "query": "ticket=abc", "expire_type": 0,
                  "expire_time": 1},
        )  # fmt: skip
        assert r.json()["errcode"] == 85401
        r = await fake.post("/wxa/generatescheme", params={"access_token": "nope"}, json={})
        assert r.json()["errcode"] == 40001
