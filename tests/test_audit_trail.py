"""The audit trail as admins and operators make it (issue 19, part 4), over real
HTTP, PostgreSQL and Redis: every console form and every CLI write leaves its row
(who, what, before/after of what changed, when, address, user agent), no secret
is ever in one, and the console's trail pages (a pool's, the platform's) filter,
page and export as CSV, in both languages, to whom may see them."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from PIL import Image

from portal import audit
from tests.test_console import (
    PASSWORD,
    SECOND_APPID,
    SECOND_SECRET,
    Console,
    World,
    world,  # noqa: F401  (the fixture)
)

UA = "AuditTrailTest/1.0 (console)"
_SECRET_FIELD_RE = re.compile(r'id="client-secret"[^>]*value="([^"]+)"')


@pytest.fixture
async def as_root(world: World):  # noqa: F811
    console = Console(world.running)
    console.http.headers["user-agent"] = UA
    assert (await console.login("root@example.com")).status_code == 303
    yield console
    await console.aclose()


@pytest.fixture
async def as_a(world: World):  # noqa: F811
    console = Console(world.running)
    console.http.headers["accept-language"] = "en"
    assert (await console.login("a@example.com")).status_code == 303
    yield console
    await console.aclose()


def logo_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 40)).save(out, "PNG")
    return out.getvalue()


async def last(db) -> dict:
    row = await db.fetchrow("SELECT *, host(ip) AS addr FROM audit_log ORDER BY id DESC LIMIT 1")
    assert row is not None, "no audit row"
    return dict(row)


SETTINGS_FORM = {
    "name": "Alpha 2",
    "callback_url": "",
    "qr_lifetime": "60",
    "id_token_ttl": "3600",
    "access_token_ttl": "3600",
    "refresh_token_ttl": "2592000",
    "id_token_alg": "RS256",
    "qr_type": "link",
    "qr_fallback": "on",
    "scan_reveal": "none",
}


async def test_every_console_form_leaves_its_row_and_no_secret(world: World, as_root, db):  # noqa: F811
    c, p = as_root, "/console/pools/alpha"
    root_id = await db.fetchval("SELECT id FROM admins WHERE email = 'root@example.com'")
    secrets: list[str] = [SECOND_SECRET, PASSWORD]
    seen: list[str] = []

    async def expect(response, action: str, target: str | None = None, **fields) -> dict:
        assert response.status_code in (200, 303), (action, response.status_code, response.text)
        row = await last(db)
        assert row["action"] == action
        assert (row["actor_type"], row["actor_id"]) == ("admin", str(root_id))
        assert row["actor_label"] == "root@example.com"
        assert row["addr"] == "127.0.0.1" and row["user_agent"] == UA
        if target is not None:
            assert row["target"] == target
        for name, value in fields.items():
            assert row[name] == value, (action, name, row[name])
        seen.append(action)
        return row

    r = await c.post("/console/pools", {"slug": "charlie", "name": "Charlie"})
    row = await expect(r, "pool.create", "charlie")
    assert row["pool_slug"] == "charlie" and row["after"] == {"slug": "charlie", "name": "Charlie"}

    r = await c.post(p, SETTINGS_FORM)
    await expect(
        r,
        "pool.update",
        "alpha",
        before={"name": "Alpha", "qr_lifetime": 120},
        after={"name": "Alpha 2", "qr_lifetime": 60},
    )

    r = await c.http.post(
        p + "/logo",
        data={"csrf": c.csrf, "logo_shape": "round"},
        files={"logo": ("logo.png", logo_png(), "image/png")},
    )
    row = await expect(r, "pool.logo_set", "alpha")
    assert row["before"]["logo_shape"] == "square" and row["after"]["logo_shape"] == "round"
    assert re.fullmatch(r"[0-9a-f]{64}", row["after"]["logo_sha256"])
    await expect(await c.post(p + "/logo/delete"), "pool.logo_remove", "alpha")

    r = await c.post(
        p + "/mini-program", {"mode": "private", "appid": SECOND_APPID, "secret": SECOND_SECRET}
    )
    await expect(
        r,
        "pool.mini_program_set",
        before={"mp_appid": None, "mp_secret": None},
        after={"mp_appid": SECOND_APPID, "mp_secret": audit.REDACTED},
    )
    row = await expect(await c.post(p + "/keys/rotate"), "pool.key_rotate")
    assert row["after"]["kid"]

    new_password = "another long password 42"
    secrets.append(new_password)
    r = await c.post(p + "/admins", {"email": "New@Example.com", "password": new_password})
    await expect(r, "pool.admin_add", "new@example.com", after={"new_account": True})
    new_id = await db.fetchval("SELECT id FROM admins WHERE email = 'new@example.com'")
    await expect(
        await c.post(f"{p}/admins/{new_id}/remove"), "pool.admin_remove", f"admin:{new_id}"
    )

    r = await c.post(
        p + "/clients",
        {
            "name": "Shop",
            "redirect_uris": "https://shop.example/cb",
            "scopes": ["openid", "profile"],
        },
    )
    row = await expect(r, "client.create")
    client_id = row["target"]
    assert row["after"]["name"] == "Shop" and row["after"]["secret"] == audit.REDACTED
    shown = await c.get(f"{p}/clients/{client_id}")
    secrets.append(_SECRET_FIELD_RE.search(shown.text).group(1))
    r = await c.post(
        f"{p}/clients/{client_id}",
        {"name": "Shop 2", "redirect_uris": "https://shop.example/cb\nhttps://shop.example/cb2"},
    )
    await expect(r, "client.update", client_id)
    row = await last(db)
    assert row["before"]["name"] == "Shop" and row["after"]["name"] == "Shop 2"
    assert row["after"]["redirect_uris"] == ["https://shop.example/cb", "https://shop.example/cb2"]
    assert "web_origins" not in row["after"]  # unchanged fields are not written
    r = await c.post(f"{p}/clients/{client_id}/rotate", {"confirm": "yes"})
    await expect(r, "client.rotate_secret", client_id, after={"secret": audit.REDACTED})
    shown = await c.get(f"{p}/clients/{client_id}")
    secrets.append(_SECRET_FIELD_RE.search(shown.text).group(1))
    secrets += [h for (h,) in await db.fetch("SELECT secret_hash FROM clients") if h]
    sealed = await db.fetchval("SELECT mp_secret_enc FROM pools WHERE slug = 'alpha'")
    secrets.append(sealed.hex())
    r = await c.post(f"{p}/clients/{client_id}/delete")
    await expect(r, "client.delete", client_id, before={"name": "Shop 2"})

    user = str(world.a_user)
    r = await c.post(f"{p}/users/{user}/block")
    await expect(r, "user.block", user, after={"blocked": True, "logins_ended": 0})
    r = await c.post(f"{p}/users/{user}/unblock")
    await expect(r, "user.unblock", user, after={"blocked": False, "logins_ended": 0})
    r = await c.post(f"{p}/retention", {"login_retention_days": "90", "ip_retention_days": "7"})
    await expect(
        r,
        "pool.update",
        "alpha",
        before={"login_retention_days": 180, "ip_retention_days": 30},
        after={"login_retention_days": 90, "ip_retention_days": 7},
    )
    r = await c.post(f"{p}/users/{user}/export")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["user"]["nickname"] == "Ann"
    await expect(r, "user.export", user)
    r = await c.post(f"{p}/users/{user}/delete", {"confirm": "yes"})
    await expect(r, "user.delete", user)
    r = await c.post("/console/pools/charlie/delete", {"confirm_slug": "charlie"})
    row = await expect(r, "pool.delete", "charlie")
    assert row["pool_slug"] == "charlie" and row["before"]["name"] == "Charlie"

    text = await db.fetchval("SELECT string_agg(t::text, ' ') FROM audit_log t")
    for secret in secrets:
        assert secret and secret not in text
    for personal in ("Ann", "13800001111"):
        assert personal not in text
    assert len(seen) == await db.fetchval("SELECT count(*) FROM audit_log")


async def test_a_form_that_fails_leaves_no_row(world: World, as_root, db):  # noqa: F811
    r = await as_root.post("/console/pools/alpha", {**SETTINGS_FORM, "qr_lifetime": "5"})
    assert r.status_code == 400
    r = await as_root.post("/console/pools/alpha/delete", {"confirm_slug": "alph"})
    assert r.status_code == 303
    r = await as_root.post(f"/console/pools/alpha/users/{world.a_user}/delete", {"confirm": "no"})
    assert r.status_code == 303
    r = await as_root.post(
        "/console/pools/alpha/retention", {"login_retention_days": "10", "ip_retention_days": "11"}
    )
    assert r.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0
    assert await db.fetchval("SELECT count(*) FROM pools WHERE slug = 'alpha'") == 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", world.a_user) == 1


async def test_trail_pages_filter_export_and_isolation(world: World, as_root, as_a, db):  # noqa: F811
    for _ in range(3):
        await as_root.post("/console/pools/alpha/keys/rotate")
    await as_root.post("/console/pools/bravo/keys/rotate")
    await as_a.post(f"/console/pools/alpha/users/{world.a_user}/block")

    page = await as_a.get("/console/pools/alpha/audit")
    assert page.status_code == 200 and "pool.key_rotate" in page.text and "user.block" in page.text
    assert page.text.count("<tr>") == 1 + 4  # the header and four rows of alpha only
    assert "bravo" not in page.text
    page = await as_a.get("/console/pools/alpha/audit", params={"action": "user.block"})
    assert page.text.count("<tr>") == 2 and "a@example.com" in page.text
    page = await as_a.get("/console/pools/alpha/audit", params={"actor": "root@"})
    assert page.text.count("<tr>") == 4
    page = await as_a.get("/console/pools/alpha/audit", params={"since": "2999-01-01"})
    assert page.text.count("<tr>") == 2 and "No entries match." in page.text
    page = await as_a.get("/console/pools/alpha/audit", params={"since": "not-a-day"})
    assert page.status_code == 200 and "were ignored" in page.text
    zh = await as_a.get("/console/pools/alpha/audit", headers={"accept-language": "zh-CN"})
    assert "审计日志" in zh.text and "操作者" in zh.text

    r = await as_a.get("/console/pools/alpha/audit.csv", params={"action": "pool"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert rows[0][:6] == ["time", "pool", "actor_type", "actor_id", "actor", "action"]
    assert [row[5] for row in rows[1:]] == ["pool.key_rotate"] * 3
    assert json.loads(rows[1][8])["kid"]
    bad = await as_a.get("/console/pools/alpha/audit.csv", params={"until": "x"})
    assert bad.status_code == 400

    # The platform's trail: superadmins only.
    assert (await as_a.get("/console/audit")).status_code == 403
    assert (await as_a.get("/console/audit.csv")).status_code == 403
    page = await as_root.get("/console/audit")
    assert page.status_code == 200 and "bravo" in page.text and "alpha" in page.text
    assert page.text.count("<tr>") == 1 + 5
    r = await as_root.get("/console/audit.csv")
    assert len(list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))) == 1 + 5


async def test_pages_of_the_trail(world: World, as_a, db):  # noqa: F811
    async with db.acquire() as conn:
        for i in range(audit.PAGE + 5):
            await audit.record(
                conn,
                pool_id=world.a.pool.id,
                actor=audit.Actor.cli(),
                action="pool.key_rotate",
                target=f"n{i}",
            )
    first = await as_a.get("/console/pools/alpha/audit")
    assert first.text.count("<tr>") == 1 + audit.PAGE and ">n54<" in first.text
    link = re.search(r'href="(\?[^"]*before=\d+[^"]*)"', first.text).group(1).replace("&amp;", "&")
    second = await as_a.get("/console/pools/alpha/audit" + link)
    assert (
        second.text.count("<tr>") == 1 + 5 and ">n0<" in second.text and ">n54<" not in second.text
    )


async def test_cli_writes_leave_rows_and_no_secret(portal_cli, db):
    run = portal_cli
    made = run("pool", "create", "delta", "--name", "Delta")
    assert made.returncode == 0, made.stderr
    pool_secret = json.loads(made.stdout)["default_client_secret"]
    r = run("pool", "set", "delta", "--qr-type", "wxacode", "--no-qr-fallback")
    assert r.returncode == 0, r.stderr
    r = run("client", "create", "delta", "--name", "Web", "--redirect-uri", "https://w.example/cb")
    assert r.returncode == 0, r.stderr
    client = json.loads(r.stdout)
    password = "operator password 1234"
    r = run("admin", "create", "ops@example.com", "--pool", "delta", "--password-stdin",
            stdin=password + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert run("keys", "rotate", "delta").returncode == 0
    r = run("pool", "retention", "delta", "--login-days", "60", "--ip-days", "3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["login_retention_days"] == 60
    r = run("pool", "retention", "delta", "--login-days", "2")
    assert r.returncode == 2 and "longer than" in r.stderr
    r = run("retention", "run")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pools"] == [
        {"slug": "delta", "events_deleted": 0, "events_blanked": 0}
    ]

    rows = [
        dict(r)
        for r in await db.fetch(
            "SELECT actor_type, actor_id, action, target, before, after, pool_slug, ip, user_agent "
            "FROM audit_log ORDER BY id"
        )
    ]
    assert [(r["action"], r["target"]) for r in rows] == [
        ("pool.create", "delta"),
        ("pool.update", "delta"),
        ("client.create", client["client_id"]),
        ("admin.create", "ops@example.com"),
        ("pool.key_rotate", "delta"),
        ("pool.update", "delta"),
    ]
    assert all(r["actor_type"] == "cli" and r["actor_id"] == "cli" for r in rows)
    assert all(r["ip"] is None and r["user_agent"] is None for r in rows)
    assert rows[1]["before"] == {"qr_type": "link", "qr_fallback": True}
    assert rows[1]["after"] == {"qr_type": "wxacode", "qr_fallback": False}
    assert rows[2]["after"][
        "client_secret" if "client_secret" in rows[2]["after"] else "secret"
    ] == (audit.REDACTED)
    assert rows[3]["pool_slug"] is None  # an admin account is the platform's
    assert rows[5]["after"] == {"login_retention_days": 60, "ip_retention_days": 3}
    text = await db.fetchval("SELECT string_agg(t::text, ' ') FROM audit_log t")
    for secret in (pool_secret, client["client_secret"], password):
        assert secret not in text
