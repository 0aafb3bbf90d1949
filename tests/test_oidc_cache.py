"""JWKS and discovery from each process's key cache (pre-encoded, ETag, a key
rotation seen by every process at once), and the refresh grant in one
database round trip (issue 23)."""

import asyncio

from starlette.responses import JSONResponse

from portal.oidc import tokens
from portal.tenants import keys, pools
from tests.support import run_portal
from tests.test_oidc import (  # noqa: F401  (setup and browser are fixtures)
    browser,
    code_for,
    code_grant,
    rp_auth,
    setup,
    token_request,
)


async def wait_for(predicate, timeout=2.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_key_rotation_on_one_process_reaches_anothers_jwks_at_once(
    db, redis_client, settings_factory, box
):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    pool_id = acme.pool.id
    settings = settings_factory()
    async with run_portal(settings) as a, run_portal(settings) as b:
        async with b.client("acme") as client:
            first = await client.get("/oidc/jwks")
            async with db.acquire() as conn:
                # The bytes the endpoint sent when it read the database on every GET.
                assert (
                    first.content
                    == JSONResponse({"keys": await keys.published(conn, pool_id)}).body
                )
            assert first.headers["content-type"] == "application/json"
            assert first.headers["cache-control"] == "public, max-age=300"
            loads = b.state["keys"].loads
            answers = await asyncio.gather(*(client.get("/oidc/jwks") for _ in range(20)))
            assert {r.content for r in answers} == {first.content}
            assert b.state["keys"].loads == loads  # no query per GET

            # A rotation on process A (as the console does it) ...
            async with db.acquire() as conn:
                new = await keys.rotate(conn, box, pool_id)
            await pools.announce_change(a.state["hub"], "acme")

            async def b_publishes_it() -> bool:
                r = await client.get("/oidc/jwks")
                return next(k["kid"] for k in r.json()["keys"]) == new.kid

            # ... is in B's JWKS at once, the retired key beside it.
            assert await b_publishes_it() or await wait_for(b_publishes_it, timeout=1.0)
            after = await client.get("/oidc/jwks")
            assert len(after.json()["keys"]) == 2 and after.headers["etag"] != first.headers["etag"]
            async with db.acquire() as conn:
                assert (
                    after.content
                    == JSONResponse({"keys": await keys.published(conn, pool_id)}).body
                )


async def test_jwks_and_discovery_answer_304_to_the_etag_they_sent(portal, db, box):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    async with portal.client("acme") as client:
        for path in ("/oidc/jwks", "/.well-known/openid-configuration"):
            r = await client.get(path)
            etag = r.headers["etag"]
            assert r.status_code == 200 and etag.startswith('"') and etag.endswith('"')
            for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                same = await client.get(path, headers={"if-none-match": sent})
                assert same.status_code == 304 and same.content == b""
                assert same.headers["etag"] == etag
                assert same.headers["cache-control"] == "public, max-age=300"
            other = await client.get(path, headers={"if-none-match": '"stale"'})
            assert other.status_code == 200 and other.content == r.content
        from portal.oidc.endpoints import _metadata

        r = await client.get("/.well-known/openid-configuration")
        # The document the endpoint built on every GET, byte for byte.
        issuer = portal.settings.pool_url("acme")
        assert r.content == JSONResponse(_metadata(issuer, acme.pool)).body
        assert r.json()["issuer"] == issuer


async def test_a_retired_key_leaves_the_cached_jwks_when_its_publication_ends(portal, db, box):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        await keys.rotate(conn, box, acme.pool.id)
        # The retired key's grace ends in a moment (no announcement is made).
        await conn.execute(
            "UPDATE signing_keys SET publish_until = now() + interval '0.5 s' WHERE NOT active"
        )
    async with portal.client("acme") as client:
        assert len((await client.get("/oidc/jwks")).json()["keys"]) == 2

        async def one_key() -> bool:
            return len((await client.get("/oidc/jwks")).json()["keys"]) == 1

        assert await wait_for(one_key, timeout=3.0)


class Queries:
    """Every statement the portal's database pool sends, from now on."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def watch(self, db) -> None:
        held = [await db.acquire() for _ in range(db.get_max_size())]
        for conn in held:
            conn.add_query_logger(lambda q: self.sent.append(q.query))
        for conn in held:
            await db.release(conn)
        self.sent.clear()


async def test_a_refresh_is_one_database_round_trip(setup, browser, apex, portal):  # noqa: F811
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid profile offline_access"
    )
    auth = rp_auth(setup)
    first = (await token_request(browser, setup, code_grant(code, verifier), auth)).json()
    queries = Queries()
    await queries.watch(portal.state["db"])
    r = await token_request(
        browser,
        setup,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth,
    )
    assert r.status_code == 200 and r.json()["refresh_token"], r.text
    assert r.json()["scope"] == "openid profile offline_access"
    # Spent, succeeded, user read: one statement, no BEGIN/COMMIT around it.
    assert len(queries.sent) == 1, queries.sent

    # A narrowed scope without offline_access: tokens, no successor, the token spent.
    queries.sent.clear()
    second = r.json()
    narrowed = await token_request(
        browser,
        setup,
        {
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "scope": "openid",
        },
        auth,
    )
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "openid"
    assert "refresh_token" not in narrowed.json() and len(queries.sent) == 1
    again = await token_request(
        browser,
        setup,
        {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        auth,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_a_refresh_for_a_blocked_user_is_refused_and_ends_the_token(
    setup,  # noqa: F811
    browser,  # noqa: F811
    apex,
    db,
):
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    first = (await token_request(browser, setup, code_grant(code, verifier), auth)).json()
    body = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    widened = await token_request(browser, setup, {**body, "scope": "openid phone"}, auth)
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
    await db.execute("UPDATE users SET blocked = true")
    r = await token_request(browser, setup, body, auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "no longer log in" in r.json()["error_description"]
    await db.execute("UPDATE users SET blocked = false")
    # The refused refresh spent the token (as before): it is a replay now.
    r = await token_request(browser, setup, body, auth)
    assert r.status_code == 400 and "already used" in r.json()["error_description"]


async def test_a_logout_while_a_refresh_holds_the_token_leaves_no_live_successor(
    setup,  # noqa: F811
    browser,  # noqa: F811
    apex,
    portal,
    db,
):
    """A login ended (logout, block, replay) while a refresh of its token is under
    way: the refresh holds the old token's lock and stores a successor the
    revocation's UPDATE cannot see. The family is marked first and the refresh
    checks the mark, so no refresh token of that login stays alive."""
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    first = (await token_request(browser, setup, code_grant(code, verifier), auth)).json()
    family = await db.fetchval("SELECT family_id FROM refresh_tokens")
    # The successor's INSERT takes half a second: the refresh holds the lock meanwhile.
    await db.execute(
        """CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
           CREATE TRIGGER slow BEFORE INSERT ON refresh_tokens
           FOR EACH ROW EXECUTE FUNCTION slow_insert();"""
    )
    try:
        body = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        refresh = asyncio.create_task(token_request(browser, setup, body, auth))
        await asyncio.sleep(0.2)
        async with db.acquire() as conn:
            await tokens.revoke_family(conn, portal.state["redis"], setup["acme"].pool, str(family))
        r = await refresh
    finally:
        await db.execute("DROP TRIGGER slow ON refresh_tokens; DROP FUNCTION slow_insert();")
    live = await db.fetchval(
        """SELECT count(*) FROM refresh_tokens
           WHERE family_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL""",
        family,
    )
    assert live == 0, r.text
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


async def test_a_verified_access_token_is_checked_once_and_forgotten_with_its_key(
    setup,  # noqa: F811
    browser,  # noqa: F811
    apex,
    portal,
    db,
    box,
    monkeypatch,
):
    """userinfo with the same token again does not verify its RS256 signature again;
    everything else is still checked each time: a revoked token is refused, and a
    key withdrawn at once (a compromise) takes its tokens along on every process."""
    code, verifier = await code_for(setup, browser, apex, setup["rp"], scope="openid profile")
    auth = rp_auth(setup)
    issued = (await token_request(browser, setup, code_grant(code, verifier), auth)).json()
    userinfo = f"{setup['issuer']}/oidc/userinfo"
    verifications = 0
    decode = tokens.jwt.decode

    def counted(*args, **kwargs):
        nonlocal verifications
        verifications += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(tokens.jwt, "decode", counted)

    async def ask(token: str) -> int:
        r = await browser.get(userinfo, headers={"authorization": f"Bearer {token}"})
        return r.status_code

    assert [await ask(issued["access_token"]) for _ in range(5)] == [200] * 5
    assert verifications == 1
    # A token changed by one character is verified (and refused), never taken from the cache.
    forged = issued["access_token"][:-2] + ("A" if issued["access_token"][-2] != "A" else "B")
    assert await ask(forged + issued["access_token"][-1]) == 401

    # Revoked: refused though its signature is remembered.
    r = await browser.post(
        f"{setup['issuer']}/oidc/revoke", data={"token": issued["access_token"]}, auth=auth
    )
    assert r.status_code == 200
    assert await ask(issued["access_token"]) == 401

    # Another token, then its key withdrawn at once (rotation, the old key no longer
    # published) and announced: refused at the next call.
    code, verifier = await code_for(setup, browser, apex, setup["rp"], scope="openid profile")
    second = (await token_request(browser, setup, code_grant(code, verifier), auth)).json()
    assert await ask(second["access_token"]) == 200
    async with db.acquire() as conn:
        await keys.rotate(conn, box, setup["acme"].pool.id)
        await conn.execute(
            "UPDATE signing_keys SET publish_until = now() WHERE pool_id = $1 AND NOT active",
            setup["acme"].pool.id,
        )
    await pools.announce_change(portal.state["hub"], "acme")

    async def refused() -> bool:
        return await ask(second["access_token"]) == 401

    assert await wait_for(refused)
