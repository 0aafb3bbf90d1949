"""What a ticket tells its holder before confirmation, and who may cancel it
(issue 16, finding 10), over real HTTP with the mini program's API."""

from __future__ import annotations

import asyncio
import json

import pytest

from portal.tenants import pools
from tests.phone import Phone
from tests.test_wxacode import change_pool


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme")


async def _ticket(pc) -> dict:
    r = await pc.post("/api/qrcode", json={})
    assert r.status_code == 201, r.text
    return r.json()


async def _status(pc, t: dict) -> dict:
    r = await pc.get(f"/api/qrcode/{t['ticket']}/status", params={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    return r.json()


async def _events(pc, t: dict, until: str) -> list[dict]:
    seen: list[dict] = []
    url = f"/api/qrcode/{t['ticket']}/events"
    async with pc.stream("GET", url, params={"secret": t["secret"]}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["status"] == until:
                    return seen
    return seen


async def _returning_user(pc, apex, name: str, **profile) -> None:
    """``name`` has logged in to acme once, with this profile."""
    t = await _ticket(pc)
    phone = Phone(apex, name)
    assert (await phone.scan_and_confirm(t["ticket"], **profile)).status_code == 200


async def test_a_returning_user_who_only_scans_gives_nothing_away(pc, apex):
    await _returning_user(pc, apex, "alice", nickname="Alice", avatar_url="https://img.example/a")
    t = await _ticket(pc)
    stream = asyncio.create_task(_events(pc, t, "confirmed"))
    await asyncio.sleep(0.1)
    alice = Phone(apex, "alice")
    assert (await alice.scan(t["ticket"])).status_code == 200
    assert await _status(pc, t) == {"status": "scanned", "expires_in": 120, "scanned_by": None}
    # She confirms after all: now the page may greet her.
    assert (await alice.confirm(t["ticket"])).status_code == 200
    seen = await asyncio.wait_for(stream, 5)
    assert [s["scanned_by"] for s in seen] == [
        None,
        None,
        {"nickname": "Alice", "avatar_url": "https://img.example/a"},
    ]


@pytest.mark.parametrize(
    ("reveal", "shown"),
    [
        ("avatar", {"nickname": None, "avatar_url": "https://img.example/b"}),
        ("profile", {"nickname": "Bob", "avatar_url": "https://img.example/b"}),
    ],
)
async def test_a_pool_may_show_more_at_scan(pc, apex, db, portal, reveal, shown):
    await _returning_user(pc, apex, "bob", nickname="Bob", avatar_url="https://img.example/b")
    await change_pool(db, portal, "scan_reveal = $1", reveal)
    t = await _ticket(pc)
    assert (await Phone(apex, "bob").scan(t["ticket"])).status_code == 200
    assert (await _status(pc, t))["scanned_by"] == shown


async def test_only_the_scanner_may_cancel(pc, apex):
    t = await _ticket(pc)
    # Any number of mini-program sessions, at once, cannot end a login nobody scanned.
    strangers = [Phone(apex, f"stranger{i}") for i in range(10)]
    for s in strangers:
        assert (await s.login()).status_code == 200
    answers = await asyncio.gather(*(s.cancel(t["ticket"]) for s in strangers))
    assert {(r.status_code, r.json()["error"]) for r in answers} == {(403, "not_scanner")}
    assert (await _status(pc, t))["status"] == "pending"
    # Once carol has scanned, only carol can cancel.
    carol = Phone(apex, "carol")
    assert (await carol.scan(t["ticket"])).status_code == 200
    answers = await asyncio.gather(*(s.cancel(t["ticket"]) for s in strangers))
    assert {r.status_code for r in answers} == {403}
    assert (await _status(pc, t))["status"] == "scanned"
    r = await carol.cancel(t["ticket"])
    assert r.status_code == 200 and r.json() == {"status": "cancelled"}
    assert (await _status(pc, t))["status"] == "cancelled"
