"""Personal data as PIPL requires (portal/privacy, issue 19 part 5), over real HTTP,
PostgreSQL, Redis and the fake WeChat: a user's deletion leaves nothing personal
anywhere in the database, their next scan registers a new user, the export holds
their data, retention deletes and blanks what is past its period, and a pool's
deletion takes everything in it."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from PIL import Image

from portal import audit, privacy
from portal.errors import NotFound
from portal.tenants import pools
from tests.phone import Phone

PHONE_NUMBER = "13812345678"
NICKNAME = "Pat 帕特 pipl"
OPEN_PLATFORM = "wxopen0000000001"


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)


@pytest.fixture
async def bound(fresh_fake):
    """The fake WeChat's mini programs bound to one Open Platform account: logins
    carry a unionid."""
    async with httpx.AsyncClient(base_url=fresh_fake.url) as control:
        for appid, secret in fresh_fake.apps.items():
            body = {"appid": appid, "secret": secret, "bound": OPEN_PLATFORM}
            (await control.post("/_fake/apps", json=body)).raise_for_status()
    yield fresh_fake
    async with httpx.AsyncClient(base_url=fresh_fake.url) as control:
        await control.post("/_fake/reset")


def png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 120), colour).save(out, "PNG")
    return out.getvalue()


async def login(pc, apex, user: str, **confirm) -> dict:
    """A full scan login; returns the QR API exchange's answer (tokens, user)."""
    t = (await pc.post("/api/qrcode", json={})).json()
    phone = Phone(apex, user)
    (await phone.login()).raise_for_status()
    if "avatar" in confirm:
        up = await apex.post(
            "/api/mp/avatar",
            files={"avatar": ("a.png", confirm.pop("avatar"), "image/png")},
            headers={"authorization": f"Bearer {phone.token}"},
        )
        assert up.status_code == 201, up.text
        confirm["avatar_url"] = up.json()["avatar_url"]
    r = await phone.scan_and_confirm(t["ticket"], **confirm)
    assert r.status_code == 200, r.text
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    return r.json()


async def tables_holding(db, *needles: str) -> dict[str, list[str]]:
    """Every table of the database (every schema but the catalogs) whose rows, as
    text (every column: text, json, arrays...), contain one of ``needles``."""
    tables = await db.fetch(
        """SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name
           FROM information_schema.tables
           WHERE table_type = 'BASE TABLE'
             AND table_schema NOT IN ('pg_catalog', 'information_schema')"""
    )
    found: dict[str, list[str]] = {}
    for table in tables:
        for needle in needles:
            hit = await db.fetchval(
                f"SELECT count(*) FROM {table['name']} t WHERE strpos(t::text, $1) > 0", needle
            )
            if hit:
                found.setdefault(table["name"], []).append(needle)
    return found


async def test_deleting_a_user_leaves_nothing_personal(pc, apex, db, portal, acme, bound):
    shared_avatar = png((10, 120, 200))
    pat = await login(
        pc, apex, "pipl_pat", phone=PHONE_NUMBER, nickname=NICKNAME, avatar=shared_avatar
    )
    await login(pc, apex, "pipl_pat")  # a second login, a second event
    other = await login(pc, apex, "pipl_other", nickname="Other", avatar=shared_avatar)
    user_id = uuid.UUID(pat["user"]["id"])
    identity = await db.fetchrow(
        "SELECT openid, unionid FROM wechat_identities WHERE user_id = $1", user_id
    )
    assert identity["unionid"], "the fake gives bound mini programs a unionid"
    personal = (PHONE_NUMBER, identity["openid"], identity["unionid"], NICKNAME)
    # Before: the person is in the database (so the scan below can see them).
    before = await tables_holding(db, *personal)
    assert set(before) >= {"public.users", "public.wechat_identities", "public.login_events"}
    assert pat["refresh_token"]
    started = "SELECT count(*) FROM login_events WHERE user_id = $1 AND started_from IS NOT NULL"
    assert await db.fetchval(started, user_id) == 2  # where each login was started (issue 20)
    # A refused attempt of theirs, with no user attached: erased too.
    await db.execute(
        """INSERT INTO login_events (pool_id, appid, openid, result, ip, user_agent)
           SELECT pool_id, appid, openid, 'user_blocked', '203.0.113.9', 'UA-pat'
           FROM wechat_identities WHERE user_id = $1""",
        user_id,
    )

    pool = await pools.get_by_slug(db, "acme")
    async with db.acquire() as conn:
        counts = await privacy.delete_user(
            conn, portal.state["redis"], pool, user_id, audit.Actor.cli()
        )
    assert counts["identities"] == 1 and counts["login_events_pseudonymized"] == 3
    assert counts["avatar_erased"] == 0  # "Other" has the same picture

    assert await tables_holding(db, *personal) == {}
    assert await tables_holding(db, "203.0.113.9", "UA-pat") == {}
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id) == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE user_id = $1", user_id) == 0
    events = await db.fetch(
        "SELECT user_id, pseudonym, openid, ip, user_agent, started_from FROM login_events "
        "WHERE pseudonym IS NOT NULL"
    )
    assert len(events) == 3 and len({e["pseudonym"] for e in events}) == 1
    assert all(e["user_id"] is None and e["openid"] is None and e["ip"] is None for e in events)
    assert all(e["user_agent"] is None and e["started_from"] is None for e in events)
    assert events[0]["pseudonym"] != user_id
    assert await db.fetchval("SELECT count(*) FROM avatars") == 1
    # Their tokens are dead.
    r = await pc.post(
        "/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": pat["refresh_token"]},
        auth=(acme.default_client.client_id, acme.default_client_secret),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await pc.get("/oidc/userinfo", headers={"authorization": f"Bearer {pat['access_token']}"})
    assert r.status_code == 401
    # The audit row names the user by id only.
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'user.delete'")
    assert row["target"] == str(user_id) and row["actor_type"] == "cli"

    # Their next scan registers a new user.
    again = await login(pc, apex, "pipl_pat")
    assert again["user"]["id"] != str(user_id)
    assert again["user"]["nickname"] is None and again["user"]["phone_number"] is None
    assert await db.fetchval("SELECT count(*) FROM users") == 2
    assert (
        await db.fetch(
            "SELECT result FROM login_events WHERE user_id = $1", uuid.UUID(again["user"]["id"])
        )
    )[0]["result"] == "signup"

    # The last user of the picture goes, and the picture with them.
    async with db.acquire() as conn:
        counts = await privacy.delete_user(
            conn, portal.state["redis"], pool, uuid.UUID(other["user"]["id"]), audit.Actor.cli()
        )
        assert counts["avatar_erased"] == 1
        with pytest.raises(NotFound):
            await privacy.delete_user(conn, portal.state["redis"], pool, user_id, audit.Actor.cli())
    assert await db.fetchval("SELECT count(*) FROM avatars") == 0


async def test_another_pools_user_cannot_be_deleted_or_exported(pc, apex, db, portal, acme, box):
    pat = await login(pc, apex, "pipl_iso", nickname="Iso")
    async with db.acquire() as conn:
        other = (await pools.create(conn, box, slug="other", name="Other")).pool
        user_id = uuid.UUID(pat["user"]["id"])
        with pytest.raises(NotFound):
            await privacy.delete_user(
                conn, portal.state["redis"], other, user_id, audit.Actor.cli()
            )
        with pytest.raises(NotFound):
            await privacy.export_user(conn, other, user_id, audit.Actor.cli())
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id) == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_export_holds_the_users_data(pc, apex, db, portal, acme, bound):
    pat = await login(pc, apex, "pipl_exp", phone=PHONE_NUMBER, nickname=NICKNAME)
    await login(pc, apex, "pipl_exp")
    user_id = uuid.UUID(pat["user"]["id"])
    pool = await pools.get_by_slug(db, "acme")
    async with db.acquire() as conn:
        data = await privacy.export_user(conn, pool, user_id, audit.Actor.cli())
    identity = await db.fetchrow(
        "SELECT openid, unionid FROM wechat_identities WHERE user_id = $1", user_id
    )
    assert data["pool"] == "acme" and data["user"]["id"] == str(user_id)
    assert data["user"]["nickname"] == NICKNAME and data["user"]["phone_number"] == PHONE_NUMBER
    assert [(i["openid"], i["unionid"]) for i in data["wechat_identities"]] == [
        (identity["openid"], identity["unionid"])
    ]
    assert [e["result"] for e in data["login_events"]] == ["success", "signup"]
    assert data["login_events"][0]["ip"] == "127.0.0.1"
    assert {g["client_id"] for g in data["active_logins"]} == {acme.default_client.client_id}
    assert "token_hash" not in str(data) and pat["refresh_token"] not in str(data)
    assert data["retention"] == {"login_events_days": 180, "ip_and_user_agent_days": 30}
    # JSON as it is.
    import json

    json.dumps(data)
    assert await db.fetchval("SELECT action FROM audit_log") == "user.export"


async def _event(db, pool_id: int, days_ago: float, tag: str) -> None:
    await db.execute(
        """INSERT INTO login_events (pool_id, client_id, appid, openid, result, ip, user_agent,
                                     started_from, created_at)
           VALUES ($1, 'c', 'wx', $2, 'success', '198.51.100.7', $2, $2, $3)""",
        pool_id,
        tag,
        datetime.now(UTC) - timedelta(days=days_ago),
    )


async def test_retention(db, box, acme):
    async with db.acquire() as conn:
        short = (await pools.create(conn, box, slug="short", name="Short")).pool
        await privacy.set_retention(conn, short, 10, 2, audit.Actor.cli())
        with pytest.raises(Exception, match="longer than"):
            await privacy.set_retention(conn, short, 10, 11, audit.Actor.cli())
        with pytest.raises(Exception, match="retention period"):
            await privacy.set_retention(conn, short, 0, 0, audit.Actor.cli())
    a = acme.pool.id
    for days, tag in (
        (0.5, "a-new"),
        (29, "a-29"),
        (31, "a-31"),
        (179, "a-179"),
        (181, "a-181"),
        (400, "a-400"),
    ):
        await _event(db, a, days, tag)
    for days, tag in ((1, "s-1"), (3, "s-3"), (11, "s-11")):
        await _event(db, short.id, days, tag)

    results = await privacy.apply_retention(db)
    by_slug = {r.slug: r for r in results}
    assert (by_slug["acme"].events_deleted, by_slug["acme"].events_blanked) == (2, 2)
    assert (by_slug["short"].events_deleted, by_slug["short"].events_blanked) == (1, 1)
    rows = await db.fetch(
        "SELECT openid, host(ip) AS ip, user_agent, started_from FROM login_events ORDER BY openid"
    )
    kept = {r["openid"]: (r["ip"], r["user_agent"], r["started_from"]) for r in rows}
    assert kept == {
        "a-new": ("198.51.100.7", "a-new", "a-new"),
        "a-29": ("198.51.100.7", "a-29", "a-29"),
        "a-31": (None, None, None),
        "a-179": (None, None, None),
        "s-1": ("198.51.100.7", "s-1", "s-1"),
        "s-3": (None, None, None),
    }
    trail = await db.fetch(
        "SELECT pool_slug, actor_type, actor_id, after FROM audit_log WHERE action = 'logins.retention' ORDER BY pool_slug"
    )
    assert [(t["pool_slug"], t["actor_type"], t["actor_id"]) for t in trail] == [
        ("acme", "system", "retention"),
        ("short", "system", "retention"),
    ]
    assert trail[0]["after"]["events_deleted"] == 2
    # Run again: nothing left to do, nothing recorded.
    again = await privacy.apply_retention(db)
    assert all(r.events_deleted == 0 and r.events_blanked == 0 for r in again)
    assert (
        await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'logins.retention'") == 2
    )


async def test_deleting_a_pool_takes_everything_in_it(pc, apex, db, portal, acme, box):
    await login(pc, apex, "pipl_pool", nickname="Pooled", avatar=png((1, 2, 3)))
    async with db.acquire() as conn:
        keep = (await pools.create(conn, box, slug="keep", name="Keep")).pool
    pool = await pools.get_by_slug(db, "acme")
    actor = audit.Actor.cli()
    async with db.acquire() as conn:
        with pytest.raises(privacy.ConfirmationMismatch):
            await privacy.delete_pool(conn, pool, "acm", actor)
        assert await db.fetchval("SELECT count(*) FROM pools WHERE slug = 'acme'") == 1
        summary = await privacy.delete_pool(conn, pool, "acme", actor)
    assert summary["users"] == 1 and summary["avatars_erased"] == 1
    for table in (
        "users",
        "wechat_identities",
        "clients",
        "signing_keys",
        "login_events",
        "refresh_tokens",
        "avatars",
    ):
        assert (
            await db.fetchval(
                f"SELECT count(*) FROM {table} WHERE {'true' if table == 'avatars' else 'pool_id = $1'}",
                *([] if table == "avatars" else [pool.id]),
            )
            == 0
        ), table
    assert await db.fetchval("SELECT count(*) FROM pools WHERE id = $1", keep.id) == 1
    assert await tables_holding(db, "Pooled") == {}
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'pool.delete'")
    assert row["pool_slug"] == "acme" and row["before"]["users"] == 1
    # The portal forgets it once told.
    await pools.announce_change(portal.state["hub"], "acme")
    for _ in range(100):
        r = await pc.post("/api/qrcode", json={})
        if r.status_code == 404:
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert r.status_code == 404


async def test_the_worker_applies_retention(db, acme, settings_factory):
    """The periodic task (portal/privacy/tasks.py) as a worker runs it."""
    from portal import jobs, worker
    from portal.privacy import tasks as privacy_tasks

    assert privacy_tasks.tasks in worker.task_sets()  # `portal worker` runs it

    await db.execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
    await _event(db, acme.pool.id, 200, "old")
    await _event(db, acme.pool.id, 40, "middle")
    settings = settings_factory()
    async with db.acquire() as conn:
        await jobs.defer(conn, "privacy.retention", queue="periodic", timestamp=0)
    app = jobs.create_app(settings, privacy_tasks.tasks, pool_size=2)
    jobs.set_resources(jobs.Resources(settings=settings, db=db))
    try:
        async with app.open_async():
            await app.run_worker_async(
                wait=False, install_signal_handlers=False, listen_notify=False, queues=["periodic"]
            )
    finally:
        jobs.set_resources(None)
    rows = await db.fetch("SELECT openid, ip FROM login_events")
    assert [(r["openid"], r["ip"]) for r in rows] == [("middle", None)]
    status = await db.fetchval(
        "SELECT status FROM procrastinate_jobs WHERE task_name = 'privacy.retention'"
    )
    assert status == "succeeded"


async def test_a_deletion_emits_its_webhook_event_with_the_id_only(db, portal, acme, box):
    """user.deleted goes to the outbox in the deletion's transaction (sql/0007, 0008):
    an endpoint subscribed to it gets one delivery, whose event names the user's id."""
    endpoint = await db.fetchval(
        """INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc)
           VALUES ($1, 'https://hooks.example/x', '{user.deleted}', '\\x00') RETURNING id""",
        acme.pool.id,
    )
    user_id = await db.fetchval(
        "INSERT INTO users (pool_id, nickname) VALUES ($1, 'Gone Soon') RETURNING id", acme.pool.id
    )
    pool = await pools.get_by_slug(db, "acme")
    async with db.acquire() as conn:
        await privacy.delete_user(conn, portal.state["redis"], pool, user_id, audit.Actor.cli())
    rows = await db.fetch(
        """SELECT e.type, e.data FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
           WHERE d.endpoint_id = $1""",
        endpoint,
    )
    assert [(r["type"], r["data"]) for r in rows] == [("user.deleted", {"user_id": str(user_id)})]
    assert await tables_holding(db, "Gone Soon") == {}


async def test_two_deletions_at_once_delete_once(db, portal, acme):
    """Two admins (or an admin and the API) deleting one user at the same moment:
    one deletion, one NotFound, one audit row, one pseudonym."""
    import asyncio

    user_id = await db.fetchval(
        "INSERT INTO users (pool_id, nickname) VALUES ($1, 'Twice') RETURNING id", acme.pool.id
    )
    for _ in range(3):
        await _event(db, acme.pool.id, 1, "twice")
    await db.execute("UPDATE login_events SET user_id = $1", user_id)
    pool = await pools.get_by_slug(db, "acme")

    async def delete() -> str:
        async with db.acquire() as conn:
            try:
                await privacy.delete_user(
                    conn, portal.state["redis"], pool, user_id, audit.Actor.cli()
                )
                return "deleted"
            except NotFound:
                return "not found"

    outcomes = await asyncio.gather(*(delete() for _ in range(4)))
    assert sorted(outcomes) == ["deleted", "not found", "not found", "not found"]
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'user.delete'") == 1
    assert await db.fetchval("SELECT count(DISTINCT pseudonym) FROM login_events") == 1
