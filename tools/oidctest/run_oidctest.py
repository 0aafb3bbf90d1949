"""Run the OpenID Foundation's old OP test tool (rohe/oidctest) against a pool.

Not part of the test suite: see tools/oidctest/README.md for how to prepare the
tool (Python 3.8, the fetched repository) and how to run this. It is run with
pytest only to reuse the project's test fixtures (a fresh database, Redis, the
fake WeChat), as ``pytest -p tests.conftest tools/oidctest/run_oidctest.py``.

For each profile: a pool ``acme`` served over https with a local certificate,
one client registered statically (the tool's redirect, logout and back/front-
channel URIs), the tool started as the relying party with that registration,
and Chromium clicking through every test of the profile; a scripted phone scans
and confirms at the pool's hosted login page whenever a test needs a login.
The tool's own verdicts are read from its result page and written, with each
non-green test's details, to ``$OIDCTEST_OUT`` (a directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright

from portal import worker
from portal.app import create_app
from portal.tenants import clients, pools
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_spa_silent import local_certificate
from tests.phone import Phone
from tests.support import free_port, free_socket

TOOL_DIR = Path(os.environ.get("OIDCTEST_DIR", "/work/oidctest/inst/oidc_op"))
TOOL_PYTHON = os.environ.get("OIDCTEST_PYTHON", "/work/oidctest/venv/bin/python")
OUT = Path(os.environ.get("OIDCTEST_OUT", "/work/oidctest/results"))

# The tool's profile codes (otest.prof_util): response type . webfinger .
# discovery . registration . crypto . extras . form_post . logout. Static
# registration (F in the 4th place) and discovery (T) throughout; the
# Foundation's "Config" profile is the tool's "Dynamic discovery" group, which
# every one of these runs.
PROFILES = {
    "Basic": "C.F.T.F",
    "Implicit": "I.F.T.F",
    "Hybrid": "CI.F.T.F",
    "Basic-extras": "C.F.T.F..+",
    "FormPost-Basic": "C.F.T.F...T",
    "FormPost-Implicit": "I.F.T.F...T",
    "FormPost-Hybrid": "CI.F.T.F...T",
    "RPInitLogout": "C.F.T.F....r",
    "BackChannelLogout": "C.F.T.F....b",
    "FrontChannelLogout": "C.F.T.F....f",
}

SITECUSTOMIZE = """\
# *.localhost is loopback (glibc here does not resolve it; browsers do).
import socket

_orig = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _orig(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
"""

GROUPS = {"BackChannelLogout": "OP-BackChannel-", "FrontChannelLogout": "OP-FrontChannel-"}

COLOURS = {
    "Green": "OK",
    "Yellow": "WARNING",
    "Red": "FAILED",
    "QuestionMark": "INCOMPLETE",
    "Grey": "NOT_APPLICABLE",
    "Black": "NOT_RUN",
}
ROW = re.compile(r"<a href=[\"'][^\"']*[\"']><button[^>]*title=\"(\w+)\"[^(]*\((OP-[^)]+)\)")


@contextlib.asynccontextmanager
async def https_portal(db, settings_factory, tmp_path):
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(
        env="dev", base_url=f"https://localhost:{port}", webhooks_allow_loopback=True
    )
    cert, key = local_certificate(tmp_path)
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="warning",
        proxy_headers=False,
        ws="none",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    # The back-channel logout tokens go out from the worker.
    jobs = asyncio.create_task(
        worker.run_async(settings, concurrency=2, install_signal_handlers=False)
    )
    try:
        yield port, settings
    finally:
        jobs.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await jobs
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def logout_uris(code: str, tool: str) -> dict[str, str]:
    """The back- and front-channel logout URIs to register: only in the profile
    that tests them. The tool counts every logout request it receives (back-
    channel POST, front-channel frame, post-logout redirect) as the next step of
    the running test, so one it does not expect breaks that test."""
    logout = code.split(".")[7] if len(code.split(".")) > 7 else ""
    uris = {}
    if "b" in logout:
        uris["backchannel_logout_uri"] = f"{tool}backchannel_logout"
    if "f" in logout:
        uris["frontchannel_logout_uri"] = f"{tool}frontchannel_logout"
    return uris


def write_tool_config(issuer: str, profile: str, tool: str, client_id: str, secret: str) -> None:
    reg = {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [f"{tool}authz_cb", f"{tool}authz_post"],  # form_post: authz_post
        "post_logout_redirect_uris": [f"{tool}logout"],
        **logout_uris(profile, tool),
        "token_endpoint_auth_method": "client_secret_basic",
        "response_types": ["code", "id_token", "code id_token"],
        "grant_types": ["authorization_code", "implicit", "refresh_token"],
    }
    conf = {
        "tool": {
            "issuer": issuer,
            "tag": "default",
            "profile": profile,
            "insecure": True,
            "webfinger_email": "acct:sally@acme.localhost",
            "webfinger_url": f"{issuer}/sally",
            "login_hint": "sally",
            "acr_values": [],
        },
        "registration_response": reg,
        "client": {"registration_response": reg},
    }
    folder = TOOL_DIR / "entities" / quote_plus(issuer)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default").write_text(json.dumps(conf))
    OUT.mkdir(parents=True, exist_ok=True)
    site = TOOL_DIR / "sitecustom"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)


@contextlib.contextmanager
def tool_process(issuer: str, port: int, log: Path):
    env = dict(os.environ, PYTHONPATH=str(TOOL_DIR / "sitecustom"))
    env.pop("VIRTUAL_ENV", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (our own command line)
            [TOOL_PYTHON, "op_test_tool.py", "-k", "-i", issuer, "-t", "default",
             "-p", str(port), "-f", "flows", "-H", "html/tt", "tt_config"],
            cwd=TOOL_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_for(url: str, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"the tool exited ({proc.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(url)
                if r.status_code < 500:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the tool did not start")


def tool_log(port: int, code: str, test_id: str) -> str:
    """The tool's own log of one test: its result and the conditions that were not OK."""
    found = sorted(TOOL_DIR.glob(f"log/*{port}/default/{code}/{test_id}.txt"))
    if not found:
        return "(no log)"
    lines = found[0].read_text(errors="replace").splitlines()
    keep = [x for x in lines if "status=" in x and "status=OK" not in x and "condition" not in x]
    tail = lines[next((i for i, x in enumerate(lines) if x.startswith("RESULT")), len(lines)) :]
    return "\n".join(dict.fromkeys(keep + tail))


async def page_text(page) -> str:
    for _ in range(50):
        try:
            return await page.content()
        except Exception:  # navigating: wait for the next page
            await asyncio.sleep(0.2)
    return ""


async def drive(page, tool: str, test_id: str, apex: httpx.AsyncClient, log: list[str]) -> str:
    """Runs one test in the browser until the tool shows its list again."""
    await page.goto(f"{tool}{test_id}")
    for _step in range(40):
        await page.wait_for_load_state("load")
        url = page.url
        if url.startswith(f"{tool}display"):
            return "done"
        hosted = page.locator("#login[data-ticket]")
        if await hosted.count():
            ticket = await hosted.get_attribute("data-ticket")
            # Sally shares her phone number (the mini program's button) for the phone scope.
            r = await Phone(apex, "sally").scan_and_confirm(
                ticket, nickname="Sally", phone="13800138000"
            )
            log.append(f"{test_id}: phone scanned ticket -> {r.status_code}")
            with contextlib.suppress(Exception):
                await page.wait_for_url(lambda u, before=url: u != before, timeout=15_000)
            continue
        if url.startswith(tool):
            # The tool's own pages: a note with a "next" link; else a page of its
            # own that moves on by itself (authz_cb posts a fragment to authz_post).
            content = await page_text(page)
            nxt = page.locator("a:has-text('link')").first
            if "<h2>Note</h2>" in content and await nxt.count():
                note = await page.locator(".jumbotron").inner_text()
                log.append(f"{test_id}: note: {note}")
                if "remove any cookies" in note:  # a fresh login page: as a person would
                    await page.context.clear_cookies()
                if "max_age=1" in note:
                    await asyncio.sleep(1.5)
                # Some steps wait in the tool (OP-OAuth-2nd-30s: 30 s).
                await nxt.click(timeout=90_000, no_wait_after=True)
                with contextlib.suppress(Exception):
                    await page.wait_for_url(lambda u, before=url: u != before, timeout=90_000)
                continue
            with contextlib.suppress(Exception):
                await page.wait_for_url(lambda u, before=url: u != before, timeout=20_000)
            if page.url != url:
                continue
            text = html.unescape(await page_text(page))
            log.append(f"{test_id}: stopped at tool page {url[:120]}: {text[-600:]}")
            return "stuck"
        # The pool: a logout confirmation, or an error page.
        confirm = page.locator("#logout-confirm button[type=submit], form button[type=submit]")
        if await confirm.count():
            log.append(f"{test_id}: confirmed at {url.split('?')[0]}")
            await confirm.first.click()
            with contextlib.suppress(Exception):
                await page.wait_for_url(lambda u, before=url: u != before, timeout=15_000)
            continue
        # A page that moves on by itself (the logged-out page goes to the
        # post-logout redirect URI once its front-channel frames have loaded).
        with contextlib.suppress(Exception):
            await page.wait_for_url(lambda u, before=url: u != before, timeout=8_000)
        if page.url != url:
            continue
        body = await page.locator("body").inner_text()
        # What the person sees (the tool asks for a screenshot of such error pages).
        await page.screenshot(path=str(OUT / f"{test_id}.png"))
        log.append(f"{test_id}: stopped at {url[:200]}: {body[:300]!r}")
        return "stuck"
    return "looped"


async def run_profile(name: str, code: str, db, box, settings_factory, tmp_path) -> dict:
    await db.execute("TRUNCATE pools RESTART IDENTITY CASCADE")
    tool_port = free_port()
    tool = f"http://localhost:{tool_port}/"
    async with https_portal(db, settings_factory, tmp_path) as (port, _settings):
        issuer = f"https://acme.localhost:{port}"
        async with db.acquire() as conn:
            pool = await pools.create(conn, box, slug="acme", name="Acme")
            pool_id = pool.pool.id if hasattr(pool, "pool") else pool.id
            client, secret = await clients.create(
                conn, box, pool_id=pool_id, name="OIDF OP test tool",
                redirect_uris=[f"{tool}authz_cb", f"{tool}authz_post"], post_logout_redirect_uris=[f"{tool}logout"],
                allow_http=True, scopes=["openid", "profile", "phone", "offline_access"],
                registration={
                    "response_types": ["code", "id_token", "code id_token"],
                    **logout_uris(code, tool),
                },
            )  # fmt: skip
        write_tool_config(issuer, code, tool, client.client_id, secret)
        with tool_process(issuer, tool_port, OUT / f"{name}.tool.log") as proc:
            await wait_for(tool, proc)
            apex = httpx.AsyncClient(
                base_url=f"https://127.0.0.1:{port}",
                verify=False,  # noqa: S501
                timeout=10,
                headers={"host": f"localhost:{port}"},
            )
            steps: list[str] = []
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                )
                context = await browser.new_context(ignore_https_errors=True, locale="en")
                context.set_default_timeout(20_000)
                page = await context.new_page()
                await page.goto(tool)
                listing = await page.content()
                tests = list(dict.fromkeys(re.findall(r"\((OP-[^)]+)\)", listing)))
                # The back- and front-channel profiles: only their own group. The
                # rest of their list is Basic's and RP-Initiated Logout's, run on
                # their own; with a back-channel URI registered, each RP-initiated
                # logout (and each retry of a delivery the tool answered 500) is a
                # request the tool takes as the next step of whatever test runs.
                group = GROUPS.get(name)
                if group:
                    tests = [t for t in tests if t.startswith(group)]
                for test_id in tests:
                    try:
                        how = await drive(page, tool, test_id, apex, steps)
                    except Exception as exc:  # the next test still runs
                        how = f"error {type(exc).__name__}: {str(exc)[:200]}"
                    steps.append(f"{test_id}: {how}")
                await page.goto(f"{tool}display")
                listing = await page.content()
                (OUT / f"{name}.display.html").write_text(listing)
                verdicts = {
                    tid: COLOURS.get(c, c) for c, tid in ROW.findall(listing) if tid in tests
                }
                details = {
                    tid: tool_log(port, code, tid) for tid, v in verdicts.items() if v != "OK"
                }
                await browser.close()
            await apex.aclose()
    counts: dict[str, int] = {}
    for verdict in verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    result = {"profile": name, "code": code, "counts": counts, "verdicts": verdicts}
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    (OUT / f"{name}.steps.txt").write_text("\n".join(steps))
    (OUT / f"{name}.details.txt").write_text(
        "\n\n".join(f"==== {k}\n{v}" for k, v in details.items())
    )
    print(name, code, counts, file=sys.stderr)
    return result


@pytest.mark.parametrize(
    "name",
    [
        p
        for p in PROFILES
        if p in os.environ.get("OIDCTEST_PROFILES", ",".join(PROFILES)).split(",")
    ],
)
async def test_profile(name, db, box, settings_factory, tmp_path):
    await run_profile(name, PROFILES[name], db, box, settings_factory, tmp_path)
