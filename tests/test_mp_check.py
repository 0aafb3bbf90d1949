"""``portal mp check`` (issue 17, item 9): what a deployment's mini program setup
lacks, checked from our side against (the fake) WeChat and the running portal:
credentials and the IP whitelist, the request domain, the link rule published, the
verification file served under the prefix and at the root, recent phone quota errors."""

from __future__ import annotations

import json

import httpx

from portal.tenants import mpsetup
from portal.wechat import fake


def by_name(report: mpsetup.Report) -> dict[str, mpsetup.Check]:
    return {c.name: c for c in report.checks}


async def set_request_domain(fake_url: str, wechat, origin: str) -> None:
    token = await wechat.access_token(fake.DEMO_APPID, fake.DEMO_SECRET)
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{fake_url}/wxa/modify_domain",
            params={"access_token": token},
            json={"action": "set", "requestdomain": [origin], "uploaddomain": [origin]},
        )
    assert r.json()["errcode"] == 0, r.text


async def test_check_says_what_to_fix_then_passes(portal, db, fresh_fake):
    settings, wechat = portal.settings, portal.state["wechat"]
    mp = await mpsetup.resolve(db, settings, portal.state["box"], None)
    report = await mpsetup.check(db, settings, wechat, mp)
    checks = by_name(report)
    assert not report.ok
    assert checks["credentials"].ok and checks["ip_whitelist"].ok
    assert not checks["request_domain"].ok and settings.base_url in checks["request_domain"].fix
    assert not checks["link_rule"].ok and "portal mp publish-rule" in checks["link_rule"].fix
    assert not checks["verify_file"].ok
    assert checks["phone_quota"].ok

    await mpsetup.publish_rule(db, wechat, mp)
    await set_request_domain(fresh_fake.url, wechat, settings.base_url)
    report = await mpsetup.check(db, settings, wechat, mp)
    assert report.ok, report.json()
    assert "message_push" not in report.json()  # content security is off

    # the verification file no longer served where WeChat looks (another file set)
    await db.execute("UPDATE mp_verify_files SET content = 'changed'")
    assert not by_name(await mpsetup.check(db, settings, wechat, mp))["verify_file"].ok


async def test_check_names_the_address_to_whitelist_and_quota_errors(portal, db, fresh_fake):
    settings, wechat = portal.settings, portal.state["wechat"]
    mp = await mpsetup.resolve(db, settings, portal.state["box"], None)
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{fresh_fake.url}/_fake/ipwhitelist",
            json={"appid": fake.DEMO_APPID, "ips": ["10.0.0.9"]},
        )
    report = await mpsetup.check(db, settings, wechat, mp)
    assert [c.name for c in report.checks] == ["ip_whitelist"]
    assert "127.0.0.1" in report.checks[0].fix
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{fresh_fake.url}/_fake/ipwhitelist", json={"appid": fake.DEMO_APPID, "ips": None}
        )
    pool_id = await db.fetchval("INSERT INTO pools (slug, name) VALUES ('q', 'Q') RETURNING id")
    await db.execute(
        "INSERT INTO phone_calls (pool_id, day, outcome, calls) VALUES ($1, current_date, 'quota', 3)",
        pool_id,
    )
    quota = by_name(await mpsetup.check(db, settings, wechat, mp))["phone_quota"]
    assert not quota.ok and "3 phone-number requests" in quota.detail


def test_the_cli_prints_the_report_and_what_to_fix(portal_cli):
    portal_cli.env["PORTAL_DEFAULT_MP_SECRET"] = fake.DEMO_SECRET
    portal_cli.env["PORTAL_CONTENT_SECURITY"] = "1"
    out = portal_cli("mp", "check")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["mp_appid"] == fake.DEMO_APPID and report["ok"] is False
    assert report["prefix"] == "https://login.example.com/q/"
    assert (
        report["message_push"]["url"] == f"https://login.example.com/wechat/push/{fake.DEMO_APPID}"
    )
    assert len(report["message_push"]["token"]) == 32
    assert "portal: to fix: link_rule:" in out.stderr
    missing = portal_cli("mp", "check", "--pool", "nosuch")
    assert missing.returncode == 2 and "pool_not_found" in missing.stderr
