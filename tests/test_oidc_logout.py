"""Logout that reaches every site (issue 18, item 4 of "what broke"): Back-Channel
Logout 1.0 tokens sent by the worker to each client of the pool the person was
logged in to, when they log out at one, when an admin blocks them and when a
rotated refresh token is reused; retried when a client is down; and
Front-Channel Logout 1.0 frames on the logout page."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal import worker
from portal.console import store
from portal.oidc.logout import EVENT
from portal.tenants import clients, pools
from tests.support import LoopbackTransport, free_socket, serve_asgi
from tests.test_oidc import auth_params, code_grant, scan_login

SITE_A = "https://a.example.com"
SITE_B = "https://b.example.com"


class Receiver:
    """The clients' back-channel logout endpoints: one local server, a path each."""

    def __init__(self) -> None:
        self.got: dict[str, list[str]] = {"a": [], "b": []}
        self.fail_next = 0
        self.hang = 0.0  # seconds each call waits before it answers (a slow client)
        self.calls = 0

    async def endpoint(self, request: Request) -> Response:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(self.hang)
        if self.fail_next:
            self.fail_next -= 1
            return Response(status_code=503)
        form = await request.form()
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        self.got[request.path_params["site"]].append(str(form["logout_token"]))
        return Response(status_code=200, headers={"cache-control": "no-store"})


@pytest.fixture
async def receiver():
    rec = Receiver()
    sock = free_socket()
    app = Starlette(routes=[Route("/{site}/backchannel", rec.endpoint, methods=["POST"])])
    async with serve_asgi(app, sock, name="the receiver", lifespan="off"):
        rec.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield rec


@pytest.fixture
async def setup(portal, db, box, receiver, settings_factory):
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        made = {}
        for name, site in (("a", SITE_A), ("b", SITE_B)):
            made[name] = await clients.create(
                conn, box, pool_id=acme.pool.id, name=name.upper(),
                redirect_uris=[f"{site}/callback"], post_logout_redirect_uris=[f"{site}/bye"],
                scopes=["openid", "profile", "offline_access"], allow_http=True,
                registration={"backchannel_logout_uri": f"{receiver.base}/{name}/backchannel",
                              "frontchannel_logout_uri": f"{site}/frontchannel"},
            )  # fmt: skip
    return {
        "issuer": f"http://acme.localhost:{portal.port}",
        "acme": acme,
        "clients": made,
        # The worker, as `portal worker` runs it; loopback allowed (dev) for the receiver.
        "worker_settings": settings_factory(env="dev", base_url=portal.settings.base_url),
    }


@pytest.fixture
async def browser(portal):
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


async def run_worker(setup) -> None:
    await worker.run_async(
        setup["worker_settings"], concurrency=2, install_signal_handlers=False, wait=False
    )


async def login(setup, browser, apex, name: str, *, scan: bool) -> dict:
    """Log in to client ``name`` (scanning, or by the pool's session) and get tokens."""
    client, secret = setup["clients"][name]
    site = SITE_A if name == "a" else SITE_B
    params, verifier = auth_params(client, redirect_uri=f"{site}/callback",
                                   scope="openid profile offline_access")  # fmt: skip
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    done = await scan_login(browser, apex, url) if scan else await browser.get(url)
    assert done.status_code == 303, done.text
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    form = {**code_grant(code, verifier), "redirect_uri": f"{site}/callback"}
    r = await browser.post(f"{setup['issuer']}/oidc/token", data=form,
                           auth=(client.client_id, secret))  # fmt: skip
    assert r.status_code == 200, r.text
    return {**r.json(), "replay": lambda: browser.post(f"{setup['issuer']}/oidc/token", data=form,
                                                       auth=(client.client_id, secret))}  # fmt: skip


async def keys(browser, setup) -> KeySet:
    return KeySet.import_key_set((await browser.get(f"{setup['issuer']}/oidc/jwks")).json())


def check_logout_token(token: str, key_set: KeySet, setup, name: str) -> dict:
    decoded = jwt.decode(token, key_set)
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    assert claims["iss"] == setup["issuer"]
    assert claims["aud"] == setup["clients"][name][0].client_id
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims and claims["jti"] and claims["exp"] > claims["iat"]
    return claims


def claims_of(id_token: str, key_set: KeySet) -> dict:
    return jwt.decode(id_token, key_set).claims


async def refresh(browser, setup, name: str, token: str) -> httpx.Response:
    client, secret = setup["clients"][name]
    return await browser.post(
        f"{setup['issuer']}/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=(client.client_id, secret),
    )


async def test_logging_out_at_one_site_reaches_every_site_of_the_session(
    setup, browser, apex, receiver
):
    iss = setup["issuer"]
    at_a = await login(setup, browser, apex, "a", scan=True)
    at_b = await login(setup, browser, apex, "b", scan=False)  # single sign-on
    key_set = await keys(browser, setup)
    sid_a, sid_b = (
        claims_of(at_a["id_token"], key_set)["sid"],
        claims_of(at_b["id_token"], key_set)["sid"],
    )
    sub = claims_of(at_a["id_token"], key_set)["sub"]

    r = await browser.get(f"{iss}/oidc/logout", params={
        "id_token_hint": at_a["id_token"], "post_logout_redirect_uri": f"{SITE_A}/bye", "state": "s"})  # fmt: skip
    # Front-channel: a page that frames both sites' logout URIs with iss and sid,
    # then goes on to the post-logout redirect URI.
    assert r.status_code == 200, r.text
    frames = {parse_qs(urlsplit(u).query)["sid"][0]: u for u in
              map(html.unescape, re.findall(r'<iframe class="frontchannel" src="([^"]+)"', r.text))}  # fmt: skip
    assert set(frames) == {sid_a, sid_b}
    for url in frames.values():
        assert parse_qs(urlsplit(url).query)["iss"] == [iss]
    policy = r.headers["content-security-policy"]
    assert f"frame-src {SITE_A} {SITE_B}" in policy or f"frame-src {SITE_B} {SITE_A}" in policy
    assert f'data-next="{SITE_A}/bye?state=s"' in r.text
    # Nothing was sent during the request: the worker sends it.
    assert receiver.got == {"a": [], "b": []}
    await run_worker(setup)
    got_a = [check_logout_token(t, key_set, setup, "a") for t in receiver.got["a"]]
    got_b = [check_logout_token(t, key_set, setup, "b") for t in receiver.got["b"]]
    assert [(c["sid"], c["sub"]) for c in got_a] == [(sid_a, sub)]
    assert [(c["sid"], c["sub"]) for c in got_b] == [(sid_b, sub)]
    # And both logins are over at the pool too: no refresh, no SSO.
    for name, issued in (("a", at_a), ("b", at_b)):
        assert (await refresh(browser, setup, name, issued["refresh_token"])).status_code == 400
    params, _ = auth_params(setup["clients"]["b"][0], redirect_uri=f"{SITE_B}/callback")
    page = await browser.get(f"{iss}/oidc/auth", params=params)
    assert page.status_code == 200 and "data-ticket" in page.text


@contextlib.asynccontextmanager
async def worker_running(setup):
    """``portal worker`` running beside the test, as in production."""
    task = asyncio.create_task(
        worker.run_async(setup["worker_settings"], concurrency=2, install_signal_handlers=False)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def logout_at_a(setup, browser, at_a) -> tuple[httpx.Response, float]:
    """RP-initiated logout from site A (with its hint and post-logout URI); the
    answer and how long it took."""
    began = time.monotonic()
    r = await browser.get(f"{setup['issuer']}/oidc/logout", params={
        "id_token_hint": at_a["id_token"], "post_logout_redirect_uri": f"{SITE_A}/bye"})  # fmt: skip
    return r, time.monotonic() - began


async def test_rp_initiated_logout_sends_the_person_on_after_the_back_channel(
    setup, browser, apex, receiver
):
    """With the worker running, each site's logout token has arrived by the time the
    logout page answers (and so before the browser reaches the post-logout URI):
    the order the OpenID Foundation's OP-BackChannel-RpInitLogout test expects."""
    at_a = await login(setup, browser, apex, "a", scan=True)
    await login(setup, browser, apex, "b", scan=False)
    key_set = await keys(browser, setup)
    async with worker_running(setup):
        r, took = await logout_at_a(setup, browser, at_a)
        assert r.status_code == 200 and f'data-next="{SITE_A}/bye"' in r.text
        # Already there when the page came back.
        assert [len(receiver.got[n]) for n in ("a", "b")] == [1, 1], took
    check_logout_token(receiver.got["a"][0], key_set, setup, "a")
    assert took < 5


async def test_a_slow_client_delays_the_logout_at_most_the_wait(
    setup, browser, apex, receiver, portal, db, monkeypatch
):
    """A client whose back channel hangs holds the person up at most
    PORTAL_BACKCHANNEL_LOGOUT_WAIT; its delivery goes on in the worker."""
    settings = portal.state["settings"]
    monkeypatch.setitem(portal.state, "settings", settings.replace(backchannel_logout_wait=0.6))
    at_a = await login(setup, browser, apex, "a", scan=True)
    receiver.hang = 3  # longer than the wait, shorter than the job's own timeout (5 s)
    async with worker_running(setup):
        r, took = await logout_at_a(setup, browser, at_a)
        assert r.status_code in (200, 303), r.text
        assert 0.6 <= took < 1.6, took
        assert receiver.calls == 1 and receiver.got["a"] == []  # still waiting on the client
        status = await db.fetchval(
            "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'oidc.backchannel_logout'"
        )
        assert status == "doing"  # the attempt goes on in the worker

    # Without a wait, the answer does not wait for the worker at all.
    monkeypatch.setitem(portal.state, "settings", settings.replace(backchannel_logout_wait=0))
    at_a = await login(setup, browser, apex, "a", scan=True)
    r, took = await logout_at_a(setup, browser, at_a)
    assert r.status_code in (200, 303) and took < 0.5, took


async def test_blocking_a_person_reaches_every_site(setup, browser, apex, receiver, portal):
    at_a = await login(setup, browser, apex, "a", scan=True)
    await login(setup, browser, apex, "b", scan=False)
    key_set = await keys(browser, setup)
    sub = claims_of(at_a["id_token"], key_set)["sub"]
    state = portal.state
    async with state["db"].acquire() as conn:
        await store.set_blocked(conn, state["redis"], setup["acme"].pool, uuid.UUID(sub), True)
    await run_worker(setup)
    for name in ("a", "b"):
        (token,) = receiver.got[name]
        claims = check_logout_token(token, key_set, setup, name)
        assert claims["sub"] == sub and "sid" not in claims  # every session of that person


async def test_refresh_token_reuse_tells_the_client_and_a_down_client_is_retried(
    setup, browser, apex, receiver, db
):
    at_a = await login(setup, browser, apex, "a", scan=True)
    key_set = await keys(browser, setup)
    sid = claims_of(at_a["id_token"], key_set)["sid"]
    assert (await refresh(browser, setup, "a", at_a["refresh_token"])).status_code == 200
    replay = await refresh(browser, setup, "a", at_a["refresh_token"])
    assert replay.status_code == 400
    receiver.fail_next = 1  # the client is down for the first attempt
    await run_worker(setup)
    assert receiver.got["a"] == []
    await db.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")
    await run_worker(setup)
    (token,) = receiver.got["a"]
    assert check_logout_token(token, key_set, setup, "a")["sid"] == sid
    assert receiver.got["b"] == []  # not logged in there


async def test_a_replayed_code_ends_its_login_at_the_client(setup, browser, apex, receiver):
    """A code redeemed twice was probably stolen: what its first use issued is
    revoked, and the client is told that login ended (sid alone)."""
    at_a = await login(setup, browser, apex, "a", scan=True)
    key_set = await keys(browser, setup)
    sid = claims_of(at_a["id_token"], key_set)["sid"]
    replay = await at_a["replay"]()
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    await run_worker(setup)
    (token,) = receiver.got["a"]
    claims = check_logout_token(token, key_set, setup, "a")
    assert claims["sid"] == sid and "sub" not in claims
    assert (await refresh(browser, setup, "a", at_a["refresh_token"])).status_code == 400


async def test_each_logout_token_names_the_person_of_its_login(setup, browser, apex, receiver):
    """A logout confirmed in Alice's browser with an id_token_hint of Bob's login
    (another browser): both logins end, each token with its own person."""
    at_alice = await login(setup, browser, apex, "a", scan=True)
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as other:
        client, secret = setup["clients"]["b"]
        params, verifier = auth_params(client, redirect_uri=f"{SITE_B}/callback")
        url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
        done = await scan_login(other, apex, url, user="bob")
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
        r = await other.post(f"{setup['issuer']}/oidc/token", auth=(client.client_id, secret),
                             data={**code_grant(code, verifier), "redirect_uri": f"{SITE_B}/callback"})  # fmt: skip
        bob_token = r.json()["id_token"]
    key_set = await keys(browser, setup)
    alice, bob = claims_of(at_alice["id_token"], key_set), claims_of(bob_token, key_set)
    assert alice["sub"] != bob["sub"]
    page = await browser.get(f"{setup['issuer']}/oidc/logout", params={"id_token_hint": bob_token})
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    assert fields["confirm"]  # the hint is not this browser's person: asked first
    r = await browser.post(f"{setup['issuer']}/oidc/logout", data=fields)
    assert r.status_code == 200
    await run_worker(setup)
    (to_a,) = receiver.got["a"]
    (to_b,) = receiver.got["b"]
    got_a = check_logout_token(to_a, key_set, setup, "a")
    got_b = check_logout_token(to_b, key_set, setup, "b")
    assert (got_a["sub"], got_a["sid"]) == (alice["sub"], alice["sid"])
    assert (got_b["sub"], got_b["sid"]) == (bob["sub"], bob["sid"])


async def test_a_logout_uri_on_a_private_address_is_not_called_outside_dev(
    setup, browser, apex, receiver, settings_factory
):
    """SSRF: outside dev the worker refuses the loopback receiver (and does not retry)."""
    await login(setup, browser, apex, "a", scan=True)
    r = await browser.get(f"{setup['issuer']}/oidc/logout")
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text))
    await browser.post(f"{setup['issuer']}/oidc/logout", data=fields)
    await worker.run_async(settings_factory(env="prod", base_url=setup["worker_settings"].base_url), concurrency=2,
                           install_signal_handlers=False, wait=False)  # fmt: skip
    assert receiver.got == {"a": [], "b": []}


async def test_discovery_advertises_both(setup, browser):
    meta = (await browser.get(f"{setup['issuer']}/.well-known/openid-configuration")).json()
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert meta["frontchannel_logout_supported"] is True
    assert meta["frontchannel_logout_session_supported"] is True


def test_the_backchannel_wait_setting():
    from portal.settings import ConfigError, Settings

    env = {"PORTAL_ENV": "dev", "PORTAL_SECRET_KEY": "x" * 40}
    assert Settings.from_env(env).backchannel_logout_wait == 1.5
    for text, value in (("0", 0.0), ("0.25", 0.25), ("10", 10.0)):
        wait = Settings.from_env({**env, "PORTAL_BACKCHANNEL_LOGOUT_WAIT": text})
        assert wait.backchannel_logout_wait == value
    for bad in ("-1", "abc", "11", "nan", "inf"):
        with pytest.raises(ConfigError, match="PORTAL_BACKCHANNEL_LOGOUT_WAIT"):
            Settings.from_env({**env, "PORTAL_BACKCHANNEL_LOGOUT_WAIT": bad})
