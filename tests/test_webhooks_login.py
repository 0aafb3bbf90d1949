"""The scan login's webhook events (issue 19, part 3), end to end over HTTP: the
login path writes them in its own statement or transaction, and a worker
delivers them, signed, to the pool's endpoint."""

from __future__ import annotations

import contextlib

import pytest
from standardwebhooks import Webhook

from portal import worker
from portal.stores.crypto import SecretBox
from portal.tenants import pools
from portal.webhooks import store
from tests.phone import Phone
from tests.test_webhooks import running_receiver

EVENTS = [
    "user.created",
    "login.succeeded",
    "login.failed",
    "login.cancelled",
]


@pytest.fixture
async def acme(db, box):
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)


async def new_ticket(pc) -> str:
    r = await pc.post("/api/qrcode", json={})
    assert r.status_code == 201, r.text
    return r.json()["ticket"]


async def test_logins_reach_the_pools_endpoint(
    portal,
    pc,
    apex,
    db,
    acme,
    settings_factory,
):
    settings = settings_factory(webhooks_allow_loopback=True)
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(running_receiver())
        await run_logins(settings, pc, apex, db, acme, receiver)


async def run_logins(settings, pc, apex, db, acme, receiver) -> None:
    async with db.acquire() as conn:
        _, secret = await store.create_endpoint(
            conn,
            settings,
            SecretBox(settings.secret_key),
            acme.pool.id,
            url=receiver.url,
            events=EVENTS,
        )
    alice, bob = Phone(apex, "alice"), Phone(apex, "bob")
    r = await alice.scan_and_confirm(await new_ticket(pc))  # sign-up
    assert r.status_code == 200, r.text
    r = await alice.scan_and_confirm(await new_ticket(pc))  # returning
    assert r.status_code == 200, r.text
    ticket = await new_ticket(pc)
    assert (await bob.scan(ticket)).status_code == 200
    assert (await bob.cancel(ticket)).status_code == 200
    await db.execute("UPDATE users SET blocked = true")
    assert (await alice.scan_and_confirm(await new_ticket(pc))).status_code == 403

    await worker.run_async(settings, concurrency=4, install_signal_handlers=False, wait=False)
    got = [Webhook(secret).verify(body, headers) for headers, body in receiver.received]
    user_id = await db.fetchval("SELECT id::text FROM users")
    by_type: dict[str, list[dict]] = {}
    for p in got:
        by_type.setdefault(p["type"], []).append(p["data"])
    assert by_type["user.created"] == [{"user_id": user_id}]
    assert sorted(d["signup"] for d in by_type["login.succeeded"]) == [False, True]
    assert {d["user_id"] for d in by_type["login.succeeded"]} == {user_id}
    assert [d["reason"] for d in by_type["login.failed"]] == ["user_blocked"]
    assert [d["reason"] for d in by_type["login.cancelled"]] == ["cancelled"]
    assert len(got) == 5
    # Identifiers only: nothing personal leaves in a payload.
    bodies = b"".join(body for _, body in receiver.received)
    assert b"alice" not in bodies and b"openid" not in bodies
