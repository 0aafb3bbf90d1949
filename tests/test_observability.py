"""Structured logs with request ids, Prometheus /metrics, and graceful shutdown
of waiting browsers, over real HTTP against the running app."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import re
import time

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from portal.obs import logs
from portal.obs.logs import JsonFormatter, RedactFilter, RequestIdFilter, redact
from portal.obs.metrics import MetricsAccess, Tally
from portal.tenants import pools
from portal.web.server import PortalServer
from portal.wechat import fake
from tests.phone import Phone
from tests.support import free_socket, run_portal

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)


async def new_ticket(pc) -> dict:
    r = await pc.post("/api/qrcode", json={})
    assert r.status_code == 201, r.text
    return r.json()


Samples = dict[tuple[str, frozenset], float]


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient, **kwargs) -> Samples:
    r = await client.get("/metrics", **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse_metrics(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, site: str, route: str, method: str, status: int) -> float:
    return value(
        samples,
        "portal_http_request_duration_seconds_count",
        site=site,
        route=route,
        method=method,
        status=str(status),
    )


# --- redaction and formatting -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET /sns/jscode2session?appid=wx1&secret=s3cr3t&js_code=alice.1a2b&grant_type=x",
            "GET /sns/jscode2session?appid=wx1&secret=***&js_code=***&grant_type=x",
        ),
        ("authorization: Bearer abc.def", "authorization: *** ***"),
        ('{"session_token": "Zx9_k", "n": 1}', '{"session_token": "***", "n": 1}'),
        ("X-Ticket-Secret: hunter2", "X-Ticket-Secret: ***"),
        ("phone 13800138000, +86 13912345678", "phone 138****8000, +86 139****5678"),
        ("id eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln end", "id *** end"),
        ("key " + "aB3_" * 11, "key ***"),
        # Not credentials: error codes, status codes, timestamps, ticket ids (32).
        ("errcode=40029 status_code=200", "errcode=40029 status_code=200"),
        ("at 1764019634123 ms", "at 1764019634123 ms"),
        ("ticket " + "t" * 32, "ticket " + "t" * 32),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_the_filters_and_formatter_make_one_redacted_json_line_with_the_request_id():
    record = logging.LogRecord(
        "portal.test", logging.WARNING, __file__, 1, "user %s logged in with %s", None, None
    )
    record.args = ("13800138000", "refresh_token=abcdef")
    token = logs.request_id.set("req-12345678")
    try:
        assert RequestIdFilter().filter(record) and RedactFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    try:
        raise ValueError("secret=topsecret")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactFilter().filter(record)  # the traceback, attached after the first pass
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "user 138****8000 logged in with refresh_token=***"
    assert out["request_id"] == "req-12345678" and out["level"] == "WARNING"
    assert "topsecret" not in line and "13800138000" not in line


def test_log_config_from_env():
    config = logs.config_from_env({})
    assert config["handlers"]["default"]["formatter"] == "json"
    assert config["loggers"]["uvicorn.access"]["handlers"] == []
    config = logs.config_from_env({"PORTAL_LOG_FORMAT": "text", "PORTAL_ACCESS_LOG": "1"})
    assert config["handlers"]["default"]["formatter"] == "text"
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["default"]
    with pytest.raises(ValueError, match="PORTAL_LOG_FORMAT"):
        logs.config_from_env({"PORTAL_LOG_FORMAT": "xml"})


def test_metrics_access_settings():
    default = MetricsAccess.from_env({})
    assert default.allowed("127.0.0.1", None) and default.allowed("10.2.3.4", None)
    assert default.allowed("::1", None) and not default.allowed("203.0.113.9", None)
    token = "t" * 24
    only_token = MetricsAccess.from_env({"PORTAL_METRICS_ALLOW": "", "PORTAL_METRICS_TOKEN": token})
    assert not only_token.allowed("127.0.0.1", None)
    assert only_token.allowed("203.0.113.9", f"Bearer {token}")
    assert not only_token.allowed("203.0.113.9", "Bearer wrong")
    with pytest.raises(ValueError, match="PORTAL_METRICS_ALLOW"):
        MetricsAccess.from_env({"PORTAL_METRICS_ALLOW": "not-an-ip"})


# --- /metrics after a real flow -----------------------------------------------------


async def test_metrics_count_a_whole_login(pc, apex, portal):
    before = await scrape(apex)
    t = await new_ticket(pc)
    secret = {"x-ticket-secret": t["secret"]}

    # A stream open while we scrape: one waiter connected.
    async with pc.stream("GET", f"/api/qrcode/{t['ticket']}/events", headers=secret) as r:
        lines = r.aiter_lines()
        while not (await lines.__anext__()).startswith("data: "):
            pass
        during = await scrape(apex)
        assert (
            value(during, "portal_waiters_connected")
            == value(before, "portal_waiters_connected") + 1
        )
        await lines.aclose()

    r = await pc.get(f"/api/qrcode/{t['ticket']}/status", headers=secret)
    assert r.json()["status"] == "pending"
    refused = await apex.post(
        "/api/mp/session", json={"appid": fake.DEMO_APPID, "code": "invalid.1"}
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_code"
    alice = Phone(apex, "alice")
    assert (await alice.scan(t["ticket"])).status_code == 200
    assert (await alice.confirm(t["ticket"], phone="13800138000")).status_code == 200
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    t2 = await new_ticket(pc)
    assert (await alice.scan(t2["ticket"])).status_code == 200  # only the scanner cancels
    assert (await alice.cancel(t2["ticket"])).status_code == 200
    assert (await pc.get("/no/such/page")).status_code == 404
    assert (await pc.get("/healthz")).status_code == 200  # a route both sites share
    assert (await apex.get("/healthz")).status_code == 200

    after = await scrape(apex)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("portal_tickets_created_total") == 2
    assert delta("portal_tickets_final_total", status="confirmed") == 1
    assert delta("portal_tickets_final_total", status="cancelled") == 1
    assert delta("portal_tickets_exchanged_total") == 1
    assert delta("portal_logins_total", result="signup") == 1
    assert delta("portal_logins_total", result="success") == 0
    assert delta("portal_wechat_api_calls_total", api="/sns/jscode2session") == 2
    assert delta("portal_wechat_api_calls_total", api="/wxa/business/getuserphonenumber") == 1
    assert delta("portal_wechat_api_calls_total", api="/cgi-bin/stable_token") == 1
    assert delta("portal_wechat_api_errors_total", api="/sns/jscode2session", errcode="40029") == 1
    assert value(after, "portal_waiters_connected") == value(before, "portal_waiters_connected")

    # Requests by site, route template (never the raw path), method and status.
    def req_delta(site: str, route: str, method: str, status: int) -> float:
        return requests(after, site, route, method, status) - requests(
            before, site, route, method, status
        )

    assert req_delta("pool", "/api/qrcode", "POST", 201) == 2
    assert req_delta("pool", "/api/qrcode/{ticket}/events", "GET", 200) == 1
    assert req_delta("pool", "/api/qrcode/{ticket}/status", "GET", 200) == 1
    assert req_delta("pool", "/api/qrcode/{ticket}/exchange", "POST", 200) == 1
    assert req_delta("apex", "/api/mp/session", "POST", 400) == 1
    assert req_delta("apex", "/api/mp/tickets/{ticket}/scan", "POST", 200) == 2
    assert req_delta("apex", "/api/mp/tickets/{ticket}/confirm", "POST", 200) == 1
    assert req_delta("pool", "<not_found>", "GET", 404) == 1
    assert req_delta("pool", "/healthz", "GET", 200) == 1
    assert req_delta("apex", "/healthz", "GET", 200) == 1
    assert req_delta("apex", "/metrics", "GET", 200) == 2  # the scrapes before this one
    labels = {v for (_, ls) in after for _, v in ls}
    assert not any(t["ticket"] in v or t2["ticket"] in v for v in labels)
    # The latency histogram has its buckets and sum.
    bucket = value(
        after,
        "portal_http_request_duration_seconds_bucket",
        site="pool",
        route="/api/qrcode",
        method="POST",
        status="201",
        le="+Inf",
    )
    assert bucket == requests(after, "pool", "/api/qrcode", "POST", 201)
    assert (
        value(
            after,
            "portal_http_request_duration_seconds_sum",
            site="pool",
            route="/api/qrcode",
            method="POST",
            status="201",
        )
        > 0
    )


async def test_metrics_are_refused_outside_the_allowed_networks(
    db, redis_client, settings_factory, monkeypatch
):
    sock = free_socket()
    port = sock.getsockname()[1]
    # Behind a proxy on loopback: the client address is the X-Forwarded-For one.
    settings = settings_factory(base_url=f"http://localhost:{port}", trusted_proxies=LOOPBACK)
    async with run_portal(settings, sock=sock) as portal, portal.client() as apex:
        r = await apex.get("/metrics", headers={"x-forwarded-for": "203.0.113.9"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert "portal_" not in r.text
        r = await apex.get("/metrics", headers={"x-forwarded-for": "10.1.2.3"})
        assert r.status_code == 200 and "portal_tickets_created_total" in r.text
        assert (await apex.post("/metrics")).status_code == 405
        # Prometheus scrapes by address: an IP-literal Host is served like the apex.
        async with httpx.AsyncClient(base_url=portal.url) as by_ip:
            assert (await by_ip.get("/metrics")).status_code == 200
            samples = await scrape(by_ip)
        assert requests(samples, "host_error", "/metrics", "GET", 200) >= 1
        assert requests(samples, "apex", "/metrics", "GET", 403) >= 1

    token = "scrape-" + "x" * 20
    monkeypatch.setenv("PORTAL_METRICS_ALLOW", "")
    monkeypatch.setenv("PORTAL_METRICS_TOKEN", token)
    sock = free_socket()
    settings = settings_factory(base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as portal, portal.client() as apex:
        assert (await apex.get("/metrics")).status_code == 403  # even from loopback
        wrong = await apex.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 403
        r = await apex.get("/metrics", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_metrics_answer_only_on_the_apex_or_an_address(db, redis_client, settings_factory):
    """From an allowed address, /metrics is still only for the apex's name or an IP
    literal: a name that is not the portal's may be a DNS-rebinding page running in
    a browser inside the allowed networks."""
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(base_url=f"http://localhost:{port}")
    async with run_portal(settings, sock=sock) as portal:
        async with httpx.AsyncClient(base_url=portal.url) as client:
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}"):
                r = await client.get("/metrics", headers={"host": host})
                assert r.status_code == 200 and "portal_" in r.text, host
            for host in (f"rebind.example:{port}", "intranet.corp", f"x.localhost.example:{port}"):
                r = await client.get("/metrics", headers={"host": host})
                assert r.status_code == 404, host
                assert "portal_" not in r.text


async def test_metrics_are_not_a_pool_route(pc):
    assert (await pc.get("/metrics")).status_code == 404


# --- request ids and the log lines of a whole login ---------------------------------


async def test_request_id_from_a_trusted_proxy_only(db, redis_client, settings_factory):
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(base_url=f"http://localhost:{port}", trusted_proxies=LOOPBACK)
    async with run_portal(settings, sock=sock) as portal, portal.client() as apex:
        r = await apex.get("/healthz", headers={"x-request-id": "nginx-0123456789abcdef"})
        assert r.headers["x-request-id"] == "nginx-0123456789abcdef"
        r = await apex.get("/healthz", headers={"x-request-id": "bad id with spaces"})
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
    async with portal_without_proxies(settings_factory) as portal, portal.client() as apex:
        r = await apex.get("/healthz", headers={"x-request-id": "nginx-0123456789abcdef"})
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
        other = await apex.get("/healthz")
        assert other.headers["x-request-id"] != r.headers["x-request-id"]


def portal_without_proxies(settings_factory):
    sock = free_socket()
    return run_portal(
        settings_factory(base_url=f"http://localhost:{sock.getsockname()[1]}"), sock=sock
    )


class Capture:
    """Every log record of the process, as the production handler writes it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.handler.addFilter(RequestIdFilter())
        self.handler.addFilter(RedactFilter())
        self._saved: list[tuple[logging.Logger, int]] = []

    def __enter__(self) -> Capture:
        # The root (app, httpx, asyncpg...) and uvicorn's access log, which does not propagate.
        levels = {"": logging.INFO, "portal": logging.DEBUG, "uvicorn.access": logging.INFO}
        for name, level in levels.items():
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level))
            logger.setLevel(level)
        for name in ("", "uvicorn.access"):
            logging.getLogger(name).addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        for logger, level in self._saved:
            logger.removeHandler(self.handler)
            logger.setLevel(level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines()]


async def test_log_lines_are_json_with_the_request_id_and_no_secrets(pc, apex, portal, acme):
    with Capture() as capture:
        t = await new_ticket(pc)
        created_id = (await pc.get("/healthz")).headers["x-request-id"]
        alice = Phone(apex, "alice")
        login = await alice.login()
        assert login.status_code == 200
        assert (await alice.scan(t["ticket"])).status_code == 200
        confirm = await alice.confirm(t["ticket"], phone="13912345678")
        assert confirm.status_code == 200
        r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 200
        exchanged = r.json()
        refresh = await pc.post(
            "/oidc/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": exchanged["refresh_token"],
                "client_id": acme.default_client.client_id,
                "client_secret": acme.default_client_secret,
            },
        )
        # Outside any request: no id, and still redacted.
        logging.getLogger("portal.test").warning(
            "outside any request: secret=%s", portal.settings.secret_key
        )
        await asyncio.sleep(0.1)

    lines = capture.lines()
    assert lines, "nothing was logged"
    assert all({"ts", "level", "logger", "msg", "request_id"} <= set(line) for line in lines)
    by_id: dict[str, list[dict]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)

    # uvicorn's access line of each request carries that request's id, as its response did.
    for response, path in (
        (login, "/api/mp/session"),
        (confirm, f"/api/mp/tickets/{t['ticket']}/confirm"),
        (r, f"/api/qrcode/{t['ticket']}/exchange"),
    ):
        rid = response.headers["x-request-id"]
        assert any(
            line["logger"] == "uvicorn.access" and path in line["msg"] for line in by_id[rid]
        ), (path, by_id.get(rid))
    assert any(line["logger"] == "uvicorn.access" for line in by_id[created_id])
    # The WeChat calls made while serving /api/mp/session are logged under its id (the
    # client's own redacted DEBUG line: it calls WeChat through aiohttp, issue 23).
    assert any(
        line["logger"] == "portal.wechat.client" and line["msg"].startswith("HTTP Request:")
        for line in by_id[login.headers["x-request-id"]]
    ), by_id[login.headers["x-request-id"]]
    assert by_id[None][-1]["msg"] == "outside any request: secret=***"

    # No credential of the flow, and no full phone number, in any line.
    text = capture.text
    secrets_of_the_flow = [
        t["secret"],
        login.json()["session_token"],
        exchanged["id_token"],
        exchanged["access_token"],
        exchanged["refresh_token"],
        portal.settings.secret_key,
        fake.DEMO_SECRET,
        acme.default_client_secret,
        "13912345678",
    ]
    if refresh.status_code == 200:
        secrets_of_the_flow += [refresh.json()["access_token"], refresh.json()["refresh_token"]]
    for secret in secrets_of_the_flow:
        assert secret and secret not in text, secret


# --- graceful shutdown --------------------------------------------------------------


async def test_a_stopping_server_ends_its_streams_and_long_polls_at_once(
    db, redis_client, settings_factory, acme, monkeypatch
):
    # The server class gunicorn's PortalWorker runs, inside the test's loop.
    monkeypatch.setattr(uvicorn, "Server", PortalServer)
    sock = free_socket()
    settings = settings_factory(base_url=f"http://localhost:{sock.getsockname()[1]}")
    stopped_at = None
    async with run_portal(settings, sock=sock) as portal:
        async with portal.client("acme") as pc:
            t = await new_ticket(pc)
            secret = {"x-ticket-secret": t["secret"]}
            first = asyncio.Event()
            seen: list[str] = []

            async def stream() -> None:
                url = f"/api/qrcode/{t['ticket']}/events"
                async with pc.stream("GET", url, headers=secret) as r:
                    assert r.status_code == 200
                    # Raises RemoteProtocolError if the body is cut before its last chunk.
                    async for line in r.aiter_lines():
                        seen.append(line)
                        if line.startswith("data: "):
                            first.set()

            streaming = asyncio.create_task(stream())
            await asyncio.wait_for(first.wait(), 5)
            poll = asyncio.create_task(
                pc.get(
                    f"/api/qrcode/{t['ticket']}/status",
                    params={"wait": 30, "known": "pending"},
                    headers=secret,
                )
            )
            waiters = portal.state["waiters"]
            for _ in range(100):
                if len(waiters) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(waiters) == 2

            started = time.monotonic()
            portal.server.should_exit = True  # what SIGTERM does in the worker
            await asyncio.wait_for(streaming, 3)  # ended, cleanly
            answer = await asyncio.wait_for(poll, 3)
            stopped_at = time.monotonic() - started
            assert answer.status_code == 200 and answer.json()["status"] == "pending"
            assert "retry: 2000" in seen and any('"status":"pending"' in s for s in seen)
            assert len(waiters) == 0
    total = time.monotonic() - started
    assert stopped_at is not None and stopped_at < 2, stopped_at
    assert total < 4, total  # the server itself did not wait for the stream's keepalive


async def test_an_unhandled_error_is_answered_and_logged_under_the_request_id():
    """An error no handler takes is answered by the request middleware (not by
    Starlette's outermost one, outside it): the 500 carries the request id and
    the headers every response has, its body says nothing internal, and its
    log line has the same id, redacted."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from portal.obs.middleware import Observability
    from portal.settings import Settings

    async def boom(request):
        raise RuntimeError("token=abcdef went wrong")

    app = Starlette(
        routes=[Route("/boom", boom), Route("/ok", lambda r: PlainTextResponse("ok"))],
        middleware=[
            Middleware(
                Observability, settings=Settings(secret_key="k" * 40), access=MetricsAccess(())
            )
        ],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with Capture() as capture:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.get("/ok")
            failed = await client.get("/boom", headers={"accept": "application/json"})
    assert failed.status_code == 500
    assert failed.json()["error"] == "server_error" and "abcdef" not in failed.text
    assert failed.headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"[0-9a-f]{16}", ok.headers["x-request-id"])
    rid = failed.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid) and rid != ok.headers["x-request-id"]
    [line] = [line for line in capture.lines() if line["msg"].startswith("unhandled error")]
    assert line["request_id"] == rid
    assert "RuntimeError: token=*** went wrong" in line["exc"]
    logs.request_id.set(None)  # ASGITransport ran the app in this task


async def test_a_flushed_tally_exposes_what_direct_observations_do():
    """The hot path counts in process (metrics.Tally) and writes to the metric
    values later, through prometheus_client's internals: the exposition must be
    the same as if each request had been observed directly, bucket by bucket."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    def pair(registry: CollectorRegistry, name: str) -> tuple[Histogram, Counter]:
        hist = Histogram(f"{name}_seconds", "h", ("route",), registry=registry,
                         buckets=(0.001, 0.01, 0.1, 1))  # fmt: skip
        return hist, Counter(f"{name}_things", "c", registry=registry)

    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct_hist, direct_count = pair(direct_registry, "t")
    tallied_hist, tallied_count = pair(tallied_registry, "t")
    tally = Tally(interval=0.05)
    # Bounds themselves, values between, above the last bound, and zero.
    samples = [0, 0.001, 0.0005, 0.01, 0.02, 0.1, 0.5, 1, 7.5, 0.001, 30]
    for i, value in enumerate(samples):
        route = "/a" if i % 3 else "/b"
        direct_hist.labels(route).observe(value)
        tally.observe(tallied_hist.labels(route), value)
        direct_count.inc()
        tally.inc(tallied_count)
    assert generate_latest(tallied_registry) != generate_latest(direct_registry)  # pending
    await asyncio.sleep(0.2)  # the timer armed by the first value writes them all
    assert generate_latest(tallied_registry) == generate_latest(direct_registry)
    tally.observe(tallied_hist.labels("/a"), 0.2)
    direct_hist.labels("/a").observe(0.2)
    tally.flush()  # at shutdown, or before /metrics answers
    assert generate_latest(tallied_registry) == generate_latest(direct_registry)


async def test_a_scrape_ignores_a_worker_file_not_yet_sized(tmp_path, monkeypatch):
    """Right after a reload a new worker's metrics file can exist with nothing in
    it yet; prometheus_client's reader fails on it, and the scrape used to be a 500."""
    from portal.obs import metrics as m

    (tmp_path / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv(m.MULTIPROC_ENV, str(tmp_path))
    body, _ = await m.exposition()
    assert isinstance(body, bytes)
