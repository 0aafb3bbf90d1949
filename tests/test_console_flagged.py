"""The console's login log filters the attempts flagged as phishing (issue 20):
"this wasn't me" and a wrong number, made over the real mini-program API."""

from __future__ import annotations

import asyncio
import csv
import io

from portal.tenants import pools
from tests.phone import Phone
from tests.test_console import Console, World, as_a, world  # noqa: F401  (fixtures)


async def _ticket(running, slug: str) -> dict:
    async with running.client(slug) as pc:
        r = await pc.post("/api/qrcode", json={}, headers={"user-agent": "Mozilla/5.0 (X11)"})
    assert r.status_code == 201, r.text
    return r.json()


async def test_the_login_log_filters_flagged_attempts(world: World, as_a: Console, db):  # noqa: F811
    running = world.running
    async with running.client() as apex:
        # One ordinary login, one "this wasn't me", one wrong number; and in the other
        # pool, a flagged attempt alpha's admin must never see.
        ann = Phone(apex, "ann")
        assert (await ann.scan_and_confirm((await _ticket(running, "alpha"))["ticket"])).is_success
        t = await _ticket(running, "alpha")
        await ann.scan(t["ticket"])
        r = await apex.post(
            f"/api/mp/tickets/{t['ticket']}/cancel", json={"reason": "not_me"}, headers=ann._auth()
        )
        assert r.status_code == 200
        await db.execute("UPDATE pools SET number_match = true WHERE slug = 'alpha'")
        await pools.announce_change(running.state["hub"], "alpha")
        for _ in range(200):
            if (await running.state["pools"].get("alpha")).number_match:
                break
            await asyncio.sleep(0.01)
        t = await _ticket(running, "alpha")
        r = await ann.scan(t["ticket"])
        choices = r.json()["number_choices"]
        async with running.client("alpha") as pc:
            s = await pc.get(
                f"/api/qrcode/{t['ticket']}/status",
                params={"secret": t["secret"], "wait": 5, "known": "pending"},
            )
        wrong = next(n for n in choices if n != s.json()["number"])
        r = await apex.post(
            f"/api/mp/tickets/{t['ticket']}/confirm", json={"number": wrong}, headers=ann._auth()
        )
        assert r.json()["error"] == "number_mismatch"
        bob = Phone(apex, "bob")
        t = await _ticket(running, "bravo")
        await bob.scan(t["ticket"])
        r = await apex.post(
            f"/api/mp/tickets/{t['ticket']}/cancel", json={"reason": "not_me"}, headers=bob._auth()
        )
        assert r.status_code == 200

    page = await as_a.get("/console/pools/alpha/logins")
    assert page.text.count('class="result result-bad flagged"') == 2
    assert 'id="f-flagged"' in page.text and "只看可疑的尝试" in page.text
    flagged = await as_a.get("/console/pools/alpha/logins", params={"flagged": "1"})
    assert flagged.status_code == 200
    log = flagged.text.split("<tbody>")[-1]  # the log table (the chart has its own)
    assert log.count("<tr>") == 2  # the two flagged
    assert ">not_me<" in log and ">number_mismatch<" in log
    assert ">success<" not in log and ">signup<" not in log
    assert log.count("unknown location") == 2  # where each was started (loopback: unknown)
    r = await as_a.get("/console/pools/alpha/logins.csv", params={"flagged": "1"})
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert sorted(row["result"] for row in rows) == ["not_me", "number_mismatch"]
    assert {row["flagged"] for row in rows} == {"yes"}
    assert {row["started_from"] for row in rows} == {"unknown location"}
    # Not a value the form sends: ignored and said so, never an error.
    page = await as_a.get("/console/pools/alpha/logins", params={"flagged": "yes"})
    assert page.status_code == 200 and "已忽略" in page.text


async def test_the_phishing_controls_are_pool_settings(world: World, as_a: Console, db):  # noqa: F811
    page = await as_a.get("/console/pools/alpha")
    assert 'name="scan_source_policy"' in page.text and 'value="warn" selected' in page.text
    assert 'name="number_match"' in page.text and "数字匹配" in page.text
    form = {
        "name": "Alpha",
        "qr_lifetime": "120",
        "id_token_ttl": "3600",
        "access_token_ttl": "3600",
        "refresh_token_ttl": "2592000",
        "id_token_alg": "RS256",
        "qr_type": "link",
        "scan_reveal": "none",
    }
    r = await as_a.post(
        "/console/pools/alpha", {**form, "scan_source_policy": "refuse", "number_match": "on"}
    )
    assert r.status_code == 303, r.text
    row = await db.fetchrow(
        "SELECT scan_source_policy, number_match FROM pools WHERE slug = 'alpha'"
    )
    assert tuple(row) == ("refuse", True)
    r = await as_a.post("/console/pools/alpha", {**form, "scan_source_policy": "ignore"})
    assert r.status_code == 400
    row = await db.fetchrow(
        "SELECT scan_source_policy, number_match FROM pools WHERE slug = 'alpha'"
    )
    assert tuple(row) == ("refuse", True)
    # Bravo's admin cannot change alpha's (another pool is a 404).
    b = Console(world.running)
    assert (await b.login("b@example.com")).status_code == 303
    r = await b.post("/console/pools/alpha", {**form, "scan_source_policy": "warn"})
    assert r.status_code == 404
    await b.aclose()
    assert (
        await db.fetchval("SELECT scan_source_policy FROM pools WHERE slug = 'alpha'") == "refuse"
    )
