"""The README's quick start, as written, on a fresh clone (issue 21).

The test reads the README's "The two commands" section and follows it: the
command of its first block (``make dev``, i.e. the Makefile's ``portal dev``)
runs from a ``git clone`` of this repository in a temporary directory (with
this venv's Python and the clone on ``PYTHONPATH``, instead of a fresh
install, to stay quick; the suite's PostgreSQL and Redis); the login page at
the URL it names; the phone simulator as the user it names (its page's
script calls the mini-program API: the test makes the same calls); the
callback page, whose exchange command must have the README's shape and is
run as shown, with curl, to get the tokens the README shows. Change the
README's steps and this test follows them or fails.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.devcommand import DevCommand, dev_env, scratch_database
from tests.phone import Phone
from tests.support import LoopbackTransport

ROOT = Path(__file__).resolve().parents[1]
README_PORT = 8000


def quick_start() -> tuple[str, list[tuple[str, str]]]:
    """The section's text and its fenced blocks ``(language, body)``, list
    items' indentation removed."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## The two commands\n")
    end = readme.index("\n## ", start + 1)
    section = readme[start:end]
    blocks = [
        (lang, textwrap.dedent(body).strip())
        for _indent, lang, body in re.findall(r"^( *)```(\w*)\n(.*?)^ *```$", section, re.M | re.S)
    ]
    return section, blocks


def shape(readme_command: str, port: int) -> re.Pattern[str]:
    """The README's command as a pattern: ``c…`` a client id, ``/…/`` a
    directory, ``code=…`` a code; the README's port is this run's."""
    text = readme_command.replace(str(README_PORT), str(port))
    pattern = re.escape(text)
    pattern = pattern.replace(re.escape("c…"), "c[0-9a-f]{24}")
    pattern = pattern.replace(re.escape("/…/"), "/.+/")
    pattern = pattern.replace(re.escape("code=…"), r"code=[\w-]+")
    return re.compile(pattern)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def fresh_clone(clone: Path, env: dict[str, str]) -> None:
    """``git clone`` of this repository (what is committed); the portal that the
    clone's directory then imports is the clone's own."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    where = subprocess.run(
        [sys.executable, "-c", "import portal; print(portal.__file__)"],
        cwd=clone, env=env, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert where.stdout.strip() == str(clone / "portal" / "__init__.py")


@pytest.fixture
async def dev_db(stores):
    async with scratch_database(stores, prefix="portal_readme") as url:
        yield url


@pytest.mark.skipif(
    not (shutil.which("git") and shutil.which("curl") and (ROOT / ".git").exists()),
    reason="needs git, curl (as the README does) and a git checkout to clone",
)
async def test_the_readme_quick_start_works_as_written(tmp_path, stores, dev_db):
    section, blocks = quick_start()
    assert blocks[0] == ("sh", "make dev"), blocks[0]
    dev_recipe = re.search(r"^dev:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    assert dev_recipe == "$(BIN)/portal dev $(ARGS)"  # what `make dev` runs, after installing
    [curl_block] = [body for lang, body in blocks if lang == "sh" and body.startswith("curl ")]
    [tokens_block] = [body for lang, body in blocks if lang == "json"]
    page_url = re.search(r"Open the demo pool's login page, \*\*(\S+)\*\*", section)[1]
    user = re.search(r"Keep the WeChat user `(\w+)`", section)[1]
    assert page_url == f"http://demo.localhost:{README_PORT}/"

    clone = tmp_path / "clone"
    env = dev_env(None, DATABASE_URL=dev_db, REDIS_URL=stores.redis_url, PYTHONPATH=str(clone))
    fresh_clone(clone, env)

    dev = DevCommand(env, tmp_path / "dev.log", cwd=clone)
    try:
        await dev.ready()
        port = dev.port
        demo = page_url.replace(str(README_PORT), str(port)).rstrip("/")
        apex = f"http://localhost:{port}"
        assert dev.banner("demo pool") == demo + "/"
        assert dev.banner("phone simulator") == f"{apex}/dev/phone"
        assert dev.banner("data dir") == str(clone / ".portal")

        transport = LoopbackTransport()
        async with (
            httpx.AsyncClient(transport=transport, timeout=15) as browser,
            httpx.AsyncClient(transport=transport, timeout=15, base_url=apex) as phone_http,
        ):
            # 1. The demo pool's login page: a QR code with the pool's logo.
            r = await browser.get(demo + "/", params={"lang": "en"})
            assert r.status_code == 200, r.text
            page = r.text
            ticket = html.unescape(re.search(r'name="ticket" value="([^"]+)"', page)[1])
            secret = html.unescape(re.search(r'name="secret" value="([^"]+)"', page)[1])
            assert re.search(r'<img class="qr" id="qr" src="[^"]+"', page)
            logo = await browser.get(demo + "/logo")
            assert logo.headers["content-type"] == "image/png"  # the demo pool has a logo

            # 2. The phone simulator, opened from the page's link when it has one.
            link = re.search(r'id="dev-phone"><a href="([^"]+)"', page)
            if link:
                assert "open in the phone simulator" in page
                simulator_url = html.unescape(link[1])
            else:  # "… or open /dev/phone and paste the QR code's content"
                simulator_url = f"{apex}/dev/phone?url={apex}/q/{ticket}"
            r = await phone_http.get(simulator_url)
            assert r.status_code == 200
            prefilled = html.unescape(
                re.search(r'id="phone-url"[^>]*?\svalue="([^"]*)"', r.text)[1]
            )
            assert ticket in prefilled
            appid = html.unescape(re.search(r'data-default-appid="([^"]+)"', r.text)[1])
            # What the simulator's script does on Scan and Confirm, as `user`.
            alice = Phone(phone_http, user, appid=appid)
            assert (await alice.scan(ticket)).status_code == 200
            assert (await alice.confirm(ticket)).status_code == 200

            # 3. The login page sees it (its script follows the ticket) and goes on.
            r = await browser.get(
                f"{demo}/api/qrcode/{ticket}/status",
                headers={"x-ticket-secret": secret},
                params={"wait": 10, "known": "scanned"},
            )
            assert r.json()["status"] == "confirmed", r.text
            form = re.search(r'<form id="complete" method="post" action="([^"]+)"', page)[1]
            r = await browser.post(demo + form, data={"ticket": ticket, "secret": secret})
            assert r.status_code == 303, r.text
            callback = r.headers["location"]
            assert callback.startswith(f"{apex}/dev/callback?code=")
            r = await browser.get(callback)
            assert r.status_code == 200
            command = html.unescape(
                re.search(r'<pre class="snippet" id="exchange"><code>(.*?)</code>', r.text, re.S)[1]
            )
            assert shape(curl_block, port).fullmatch(command), (curl_block, command)
            code = parse_qs(urlsplit(callback).query)["code"][0]
            assert f"-d code={code} " in command

            # Run it as shown, in a terminal in the clone (the secret file is there).
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command, cwd=clone,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err
            tokens = json.loads(out)
    finally:
        status = dev.interrupt()
    assert status == 0, dev.output

    assert set(json.loads(tokens_block.replace("…", ""))) <= set(tokens), tokens
    expected = json.loads(tokens_block.replace("…", ""))
    for name in ("token_type", "expires_in", "scope"):
        assert tokens[name] == expected[name], name
    claims = jwt_claims(tokens["id_token"])
    assert claims["iss"] == demo
    assert claims["aud"] == dev.banner("demo client_id")
    assert claims["amr"] == ["wechat_qr"] and claims["sub"]
