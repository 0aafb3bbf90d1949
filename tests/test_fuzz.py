"""Property-based fuzzing of every documented operation with schemathesis.

schemathesis reads the portal's own ``/openapi.json`` and generates requests,
valid (positive) and invalid (negative) ones, which go over real HTTP to the
running portal (real PostgreSQL, Redis and fake WeChat). Every answer must:
not be a 5xx; have a documented status, content type and schema (so an error's
``error`` is one of the codes documented for that status); be rejected with a
4xx when the input broke the schema; and, when it is an error, have the
design's shape ``{"error": str, "error_description": str}``.

Random values alone would only ever meet "no such ticket" and "invalid
session", so each example may swap in real ones, drawn by hypothesis like the
rest: a fresh ticket in a chosen state (pending, scanned, confirmed) and its
secret, the phone's session token, the client's credentials, an access token.

Bounded for CI (2 cores): ``MAX_EXAMPLES`` per operation, derandomized so that a
run is reproducible, no example database, and a long poll never waits more than
a second. Set ``PORTAL_FUZZ_EXAMPLES`` to fuzz longer locally.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.settings import Limit
from portal.tenants import clients, pools
from tests.phone import Phone
from tests.support import free_socket, run_portal

MAX_EXAMPLES = int(os.environ.get("PORTAL_FUZZ_EXAMPLES", "40"))
REDIRECT = "https://rp.example.com/callback"
TICKET_STATES = ("generated", "pending", "scanned", "confirmed")
# A ticket still waiting would hold an event stream open until it expires.
STREAM_STATES = ("generated", "confirmed")
MP_OPERATIONS = ("mpScan", "mpConfirm", "mpCancel", "mpAvatar")
CLIENT_OPERATIONS = ("oidcToken", "oidcRevoke", "oidcIntrospect")


def error_shape(ctx, response, case) -> bool | None:
    """Every error of every JSON route is ``{"error": str, "error_description": str}``."""
    if response.status_code < 400:
        return None
    if (
        response.status_code == 401
        and case.operation.path == "/oidc/userinfo"
        and not response.json()
    ):
        # No token at all: no error code (RFC 6750 §3.1), only the Bearer challenge.
        assert "error" not in response.headers.get("www-authenticate", [""])[0]
        return True
    ctype = response.headers.get("content-type", [""])[0]
    assert ctype.startswith("application/json"), f"error as {ctype!r}: {response.text[:200]}"
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error_description"), str), body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class World:
    """Real values for the fuzzer to use, made over HTTP from its thread."""

    def __init__(self, url: str, pool_host: str, apex_host: str, token: str, rp, rp_secret):
        self.url = url
        self.pool_host = pool_host
        self.apex_host = apex_host
        self.session_token = token
        self.rp_id, self.rp_secret = rp.client_id, rp_secret
        self.http = httpx.Client(base_url=url, timeout=10)
        self.access_token = ""
        self.management_token = ""
        self.management: tuple[str, str] = ("", "")

    def ticket(self, state: str) -> tuple[str, str]:
        """A new ticket of the pool, brought to ``state``; (ticket, secret)."""
        r = self.http.post("/api/qrcode", headers={"host": self.pool_host})
        assert r.status_code == 201, r.text
        t = r.json()
        bearer = {"host": self.apex_host, "authorization": f"Bearer {self.session_token}"}
        if state in ("scanned", "confirmed"):
            r = self.http.post(f"/api/mp/tickets/{t['ticket']}/scan", headers=bearer)
            assert r.status_code == 200, r.text
        if state == "confirmed":
            r = self.http.post(f"/api/mp/tickets/{t['ticket']}/confirm", headers=bearer)
            assert r.status_code == 200, r.text
        return t["ticket"], t["secret"]

    def exchange_access_token(self) -> str:
        ticket, secret = self.ticket("confirmed")
        r = self.http.post(
            f"/api/qrcode/{ticket}/exchange",
            json={"secret": secret},
            headers={"host": self.pool_host},
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


def realistic(world: World, case, data) -> dict[str, str]:
    """Swap real values into ``case`` where hypothesis draws so; the extra headers."""
    op = case.operation.definition.raw.get("operationId", "")
    path = case.operation.path
    headers = {"host": world.apex_host if path == "/openapi.json" else world.pool_host}
    if "{ticket}" in path:
        states = STREAM_STATES if op == "qrcodeEvents" else TICKET_STATES
        state = data.draw(st.sampled_from(states), label="ticket")
        if state != "generated":
            ticket, secret = world.ticket(state)
            case.path_parameters = {**(case.path_parameters or {}), "ticket": ticket}
            if data.draw(st.booleans(), label="real secret"):
                headers["x-ticket-secret"] = secret
                if isinstance(case.body, dict) and "secret" in case.body:
                    case.body["secret"] = secret
            if op == "qrcodeStatus":  # a long poll that may return early, or wait 1 s
                known = data.draw(st.sampled_from(("pending", "scanned", "other")), label="known")
                case.query = {**(case.query or {}), "wait": 1, "known": known}
    if op in MP_OPERATIONS and data.draw(st.booleans(), label="mp session"):
        headers["authorization"] = f"Bearer {world.session_token}"
    if op in CLIENT_OPERATIONS and data.draw(st.booleans(), label="client auth"):
        pair = f"{world.rp_id}:{world.rp_secret}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
    if op.startswith("oidcUserinfo") and data.draw(st.booleans(), label="access token"):
        headers["authorization"] = f"Bearer {world.access_token}"
    if path.startswith("/api/v1/") and data.draw(st.booleans(), label="management token"):
        # A management client with every scope: the fuzzer reaches each route's own
        # validation, not only the 401 in front of it.
        headers["authorization"] = f"Bearer {world.management_token}"
    return headers


def fuzz(doc: dict, world: World) -> tuple[list[str], int, int]:
    """Fuzz every operation; (failures, operations, examples)."""
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    failures: list[str] = []
    operations = examples = 0
    world.access_token = world.exchange_access_token()
    r = world.http.post(
        "/oidc/token",
        data={"grant_type": "client_credentials"},
        auth=world.management,
        headers={"host": world.pool_host},
    )
    assert r.status_code == 200, r.text
    world.management_token = r.json()["access_token"]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        strategy = st.one_of(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, data=st.data())
        def one(case, data) -> None:
            nonlocal examples
            examples += 1
            headers = realistic(world, case, data)
            response = case.call(base_url=world.url, session=session, headers=headers, timeout=15)
            case.validate_response(
                response, checks=CHECKS, additional_checks=[error_shape], headers=headers
            )

        try:
            one()
        except (Exception, BaseExceptionGroup) as exc:  # report every operation's failure
            failures.append(f"{operation.label}: {str(exc)[:3000]}")
    world.http.close()
    return failures, operations, examples


@pytest.fixture
async def running(db, redis_client, settings_factory, box):
    """The portal with its QR rate limit off (the fuzzer creates many tickets), a
    pool with a confidential client, and a phone logged in."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        rp, rp_secret = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT]
        )
        mgmt, mgmt_secret = await clients.create_management(
            conn, box, pool_id=acme.pool.id, name="Back office", scopes=clients.MANAGEMENT_SCOPES
        )
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        rate_qr=Limit(0, 60),
        rate_mp_session=Limit(0, 60),
        rate_token=Limit(0, 60),
        rate_mgmt=Limit(0, 60),
    )
    async with run_portal(settings, sock=sock) as portal:
        async with portal.client() as apex:
            phone = Phone(apex, "fuzzer")
            assert (await phone.login()).status_code == 200
            doc = (await apex.get("/openapi.json")).json()
        world = World(portal.url, portal.host("acme"), portal.host(), phone.token, rp, rp_secret)
        world.management = (mgmt.client_id, mgmt_secret)
        yield doc, world


async def test_fuzz_every_operation(running):
    doc, world = running
    started = time.monotonic()
    # The fuzzer is synchronous (requests): it runs in a thread while this
    # event loop serves the portal.
    failures, operations, examples = await asyncio.to_thread(fuzz, doc, world)
    elapsed = time.monotonic() - started
    print(f"fuzz: {operations} operations, {examples} examples, {elapsed:.1f} s")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
