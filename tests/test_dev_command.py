"""``portal dev`` run as a command (issue 21): a taken port, Ctrl-C, the access
log, the demo pool's client secret and logo."""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import shlex
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from portal.dev import server as devserver
from portal.scan.qrimage import normalize_logo
from portal.tenants import pools
from tests.devcommand import DevCommand, dev_env, scratch_database
from tests.support import LoopbackTransport, free_socket, run_portal


@pytest.fixture
async def dev_db(stores):
    async with scratch_database(stores) as url:
        yield url


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("taken", ["--port", "--wechat-port"])
async def test_a_taken_port_is_named_with_the_way_out(tmp_path, stores, dev_db, taken):
    """A second ``portal dev`` used to die with a traceback from the fake WeChat's
    thread (RuntimeError) or uvicorn's bind error after starting everything."""
    env = dev_env(tmp_path / ".portal", DATABASE_URL=dev_db, REDIS_URL=stores.redis_url)
    dev = DevCommand(env, tmp_path / "dev.log")
    busy = dev.port if taken == "--port" else dev.wechat_port
    with listening(busy):
        # the ports were free when chosen; the command races nobody but this socket
        status = dev.wait()
    out = dev.output
    assert status == 2, out
    assert "Traceback" not in out
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"portal: error: port_in_use: 127.0.0.1:{busy} ("), line
    assert f"{taken}) is already in use" in line
    assert "--port " in line and "--wechat-port " in line  # what to run instead
    assert not (tmp_path / ".portal" / devserver.DEMO_SECRET_FILE).exists()  # nothing started


def _embedded_redis_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "redis" / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


async def test_ctrl_c_stops_everything_quietly(tmp_path, dev_db):
    """Ctrl-C reaches the whole foreground process group; the embedded Redis used
    to quit at once, and the stopping portal's event hub said twice that it had
    lost Redis. Embedded Redis (the README's set-up), the suite's PostgreSQL."""
    data_dir = tmp_path / ".portal"
    dev = DevCommand(dev_env(data_dir, DATABASE_URL=dev_db), tmp_path / "dev.log")
    try:
        await dev.ready()
        redis_pid = _embedded_redis_pid(data_dir)
        assert redis_pid is not None
        # A browser waiting on a ticket (an open SSE stream) while it stops: the
        # stream ends at once, not when the ticket expires.
        demo = f"http://demo.localhost:{dev.port}"
        async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
            r = await client.post(f"{demo}/api/qrcode", json={})
            assert r.status_code == 201, r.text
            events = f"{demo}/api/qrcode/{r.json()['ticket']}/events"
            params = {"secret": r.json()["secret"]}
            async with client.stream("GET", events, params=params) as stream:
                lines = stream.aiter_lines()
                assert await anext(lines)  # the stream is open
                started = time.monotonic()
                status = await asyncio.to_thread(dev.interrupt, 20)
                assert time.monotonic() - started < 15
    finally:
        dev.kill()
        pid = _embedded_redis_pid(data_dir)
        if pid is not None:  # started by this test's command; never left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    out = dev.output
    assert status == 0, out
    assert "event hub lost Redis" not in out, out
    assert "Traceback" not in out, out
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)  # stopped by portal dev, not left running


async def test_the_access_log_masks_codes_and_secrets(tmp_path, stores, dev_db, fake_wechat):
    """The dev access log printed ``?code=`` and ``?secret=`` values; with the fake
    WeChat elsewhere (WECHAT_API_BASE) nothing else masked them."""
    env = dev_env(
        tmp_path / ".portal",
        DATABASE_URL=dev_db,
        REDIS_URL=stores.redis_url,
        WECHAT_API_BASE=fake_wechat.url,
    )
    dev = DevCommand(env, tmp_path / "dev.log")
    secret, code = "tsec" + "S3cr3t" * 8, "code" + "C0de" * 6
    try:
        await dev.ready()
        apex, demo = f"http://localhost:{dev.port}", f"http://demo.localhost:{dev.port}"
        async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
            r = await client.post(f"{demo}/api/qrcode", json={})
            ticket = r.json()["ticket"]
            r = await client.get(f"{demo}/api/qrcode/{ticket}/status", params={"secret": secret})
            assert r.status_code == 403
            r = await client.get(f"{apex}/dev/callback", params={"code": code, "state": "s"})
            assert r.status_code == 200
    finally:
        dev.interrupt()
    out = dev.output
    assert secret not in out and code not in out, out
    assert f"/api/qrcode/{ticket}/status?secret=*** HTTP/1.1" in out, out
    assert "/dev/callback?code=***&state=s HTTP/1.1" in out, out


async def test_the_demo_secret_is_shown_kept_and_works(tmp_path, stores, dev_db):
    """The banner names the demo pool's default client (the one its own page, and
    so /dev/callback, uses) and its secret, which the token endpoint accepts; a
    second start shows the same; a lost secret file gets a new secret."""
    data_dir = tmp_path / ".portal"
    env = dev_env(data_dir, DATABASE_URL=dev_db, REDIS_URL=stores.redis_url)
    secrets_seen = []
    for run in range(3):
        dev = DevCommand(env, tmp_path / f"dev{run}.log")
        try:
            await dev.ready()
            client_id = dev.banner("demo client_id")
            secret = dev.banner("demo client_secret")
            kept = data_dir.resolve() / devserver.DEMO_SECRET_FILE
            assert f"(dev only; kept in {kept})" in dev.output
            assert kept.read_text().strip() == secret
            assert kept.stat().st_mode & 0o777 == 0o600
            demo = f"http://demo.localhost:{dev.port}"
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
                token = f"{demo}/oidc/token"
                body = {"grant_type": "authorization_code", "code": "nosuchcode",
                        "redirect_uri": f"http://localhost:{dev.port}/dev/callback"}  # fmt: skip
                r = await client.post(token, data=body, auth=(client_id, secret))
                assert r.json()["error"] == "invalid_grant", r.text  # the client is authenticated
                r = await client.post(token, data=body, auth=(client_id, secret + "x"))
                assert r.json()["error"] == "invalid_client", r.text
                if run == 0:  # the QR shows a logo at once (issue 21, item 12)
                    r = await client.get(f"{demo}/logo")
                    assert r.headers["content-type"] == "image/png"
                    assert r.content == normalize_logo(devserver.DEMO_LOGO.read_bytes())
                if run == 2:  # the old secret, lost with its file, no longer works
                    r = await client.post(token, data=body, auth=(client_id, secrets_seen[0]))
                    assert r.json()["error"] == "invalid_client", r.text
        finally:
            dev.interrupt()
        secrets_seen.append(secret)
        if run == 1:
            kept.unlink()
    assert secrets_seen[0] == secrets_seen[1] != secrets_seen[2]


def test_the_demo_logo_is_a_valid_pool_logo():
    data = devserver.DEMO_LOGO.read_bytes()
    assert normalize_logo(data) == data  # already what an upload becomes


def exchange_command(page: str) -> str:
    match = re.search(r'<pre class="snippet" id="exchange"><code>(.*?)</code></pre>', page, re.S)
    assert match, "no exchange command on the page"
    return html.unescape(match[1])


async def test_the_callback_command_names_the_pool_and_quotes_the_url(
    db, redis_client, box, settings_factory, tmp_path
):
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(
        env="dev", base_url=f"http://localhost:{port}", data_dir=tmp_path / "data"
    )
    async with db.acquire() as conn:
        demo = await pools.create(conn, box, slug="demo", name="Demo", allow_http=True)
        other = await pools.create(conn, box, slug="other", name="Other", allow_http=True)
    hostile = "$(touch /tmp/pwned)`id`'\""
    async with run_portal(settings, sock=sock) as running, running.client() as apex:
        pages = {}
        for slug in ("demo", "other", None):
            params = {"code": hostile, "state": "s"}
            if slug:
                params["iss"] = settings.pool_url(slug)
            r = await apex.get("/dev/callback", params=params)
            assert r.status_code == 200
            pages[slug] = exchange_command(r.text)
    secret_file = (tmp_path / "data").resolve() / devserver.DEMO_SECRET_FILE
    for slug, client_id, secret in (
        ("demo", demo.default_client.client_id, f"$(cat {secret_file})"),
        ("other", other.default_client.client_id, "CLIENT_SECRET"),
        (None, "CLIENT_ID", "CLIENT_SECRET"),
    ):
        command = pages[slug]
        assert command.startswith(f'curl -s -u "{client_id}:{secret}" \\\n'), command
        # The shell sees the received code as one literal word: nothing runs.
        words = shlex.split(command.split("\n", 1)[1].replace("\\\n", " "))
        endpoint = f"{settings.pool_url(slug)}/oidc/token" if slug else "POOL_URL/oidc/token"
        assert words == [
            "-d", "grant_type=authorization_code",
            "-d", f"code={hostile}",
            "-d", f"redirect_uri=http://localhost:{port}/dev/callback",
            endpoint,
        ]  # fmt: skip
