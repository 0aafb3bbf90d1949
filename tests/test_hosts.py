import pytest

from portal.settings import parse_networks
from portal.tenants import pools
from portal.web.hosts import parse_host
from tests.support import run_portal


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost:8000", "localhost"),
        ("ACME.Localhost:8000", "acme.localhost"),
        ("acme.login.example.com", "acme.login.example.com"),
        ("[::1]:8000", "[::1]"),
        ("", None),
        ("bad host", None),
        ("a..b", None),
        ("-a.example.com", None),
        ("acme.localhost:99999", None),
        ("acme.localhost:80:80", None),
        ("acme.localhost/evil", None),
        ("x" * 300, None),
        ("évil.localhost", None),
        ("acme.localhost\r\nx: y", None),
    ],
)
def test_parse_host(header, expected):
    assert parse_host(header) == expected


@pytest.fixture
async def two_pools(db, box):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme 登录", allow_http=True)
        beta = await pools.create(conn, box, slug="beta", name="Beta Corp", allow_http=True)
    return acme.pool, beta.pool


async def test_apex_and_pool_hosts(portal, two_pools):
    async with portal.client() as apex:
        r = await apex.get("/")
        assert r.status_code == 200
        assert "Acme" not in r.text
    async with portal.client("acme") as acme:
        r = await acme.get("/", headers={"accept-language": "en"})
        assert r.status_code == 200
        assert "Acme 登录" in r.text and "Beta" not in r.text
    async with portal.client("beta") as beta:
        r = await beta.get("/")
        assert "Beta Corp" in r.text and "Acme" not in r.text


async def test_host_matching_ignores_case_and_port(portal, two_pools):
    async with portal.client() as client:
        for host in ("ACME.LOCALHOST", f"Acme.LocalHost:{portal.port}", "acme.localhost:1234"):
            r = await client.get("/", headers={"host": host})
            assert r.status_code == 200, host
            assert "Acme 登录" in r.text


async def test_unknown_pool_is_a_404_page_never_another_pool(portal, two_pools):
    async with portal.client("nope") as client:
        r = await client.get("/", headers={"accept-language": "en"})
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "There is no login portal at this address." in r.text
        assert "Acme" not in r.text and "Beta" not in r.text
        r = await client.get("/api/qrcode")
        assert r.status_code == 404
        assert r.json()["error"] == "pool_not_found"
    # A nested subdomain or a reserved-looking label is not a pool either.
    async with portal.client("x.acme") as client:
        assert (await client.get("/")).status_code == 404
    async with portal.client() as client:
        r = await client.get("/", headers={"host": "evil.example.com"})
        assert r.status_code == 404


@pytest.mark.parametrize("host", ["bad host", "a..b", "acme.localhost:99999", "x" * 300, "[zz]"])
async def test_garbage_host_is_a_400(portal, host):
    async with portal.client() as client:
        r = await client.get("/api/anything", headers={"host": host})
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid_host",
            "error_description": "The Host header is missing or malformed.",
        }
        r = await client.get("/", headers={"host": host, "accept": "text/html"})
        assert r.status_code == 400
        assert "<html" in r.text and "Traceback" not in r.text


async def test_health_answers_on_any_host(portal):
    async with portal.client() as client:
        for host in (portal.host(), "10.0.0.5:8000", "nope.localhost"):
            r = await client.get("/healthz", headers={"host": host})
            assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


async def test_forwarded_host_is_trusted_only_from_configured_proxies(
    db, redis_client, settings_factory, box
):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    # Not trusted: X-Forwarded-Host is ignored and the real Host decides.
    async with run_portal(settings_factory()) as running, running.client() as client:
        r = await client.get("/", headers={"x-forwarded-host": "acme.localhost"})
        assert "Acme" not in r.text
    # Trusted (the test connects from 127.0.0.1): the proxy's view of the host wins.
    trusted = settings_factory(trusted_proxies=parse_networks("127.0.0.1"))
    async with run_portal(trusted) as running, running.client() as client:
        r = await client.get(
            "/", headers={"x-forwarded-host": "acme.localhost", "x-forwarded-proto": "https"}
        )
        assert r.status_code == 200 and "Acme" in r.text
        r = await client.get("/", headers={"x-forwarded-host": "no such host!"})
        assert r.status_code == 400


async def test_pool_does_not_leak_between_requests(portal, two_pools):
    """The router writes the pool into a copy of the shared lifespan state."""
    async with portal.client("acme") as acme, portal.client() as apex:
        await acme.get("/")
        r = await apex.get("/")
        assert "Acme" not in r.text
    assert "pool" not in portal.state  # the shared lifespan state was never written to


async def test_language_switch(portal, two_pools):
    async with portal.client("acme") as client:
        r = await client.get("/", headers={"accept-language": "en-US,en;q=0.9"})
        assert (
            "Scan the QR code with WeChat to log in" in r.text
            and r.headers["content-language"] == "en"
        )
        r = await client.get("/", headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
        assert "请使用微信扫一扫登录" in r.text
        r = await client.get("/?lang=en", headers={"accept-language": "zh-CN"})
        assert "Scan the QR code with WeChat" in r.text
        assert r.cookies.get("lang") == "en"
        r = await client.get("/", headers={"accept-language": "zh-CN"})
        assert "Scan the QR code with WeChat" in r.text  # remembered by the cookie
