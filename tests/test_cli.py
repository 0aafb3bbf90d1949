"""The ``portal`` command, run as a real subprocess against the test stores."""

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from portal.tenants import admins


@pytest.fixture
def run(portal_cli):
    return portal_cli


def test_pool_create_prints_one_json_object(run, db):
    r = run(
        "pool",
        "create",
        "acme",
        "--name",
        "Acme 公司",
        "--callback-url",
        "https://acme.example.com/after-login",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["slug"] == "acme" and out["name"] == "Acme 公司"
    assert out["url"] == out["issuer"] == "https://acme.login.example.com"
    assert out["mp_appid"] == "wx000000000000demo"
    assert out["default_client_id"]
    assert r.stdout.count("\n") == 1


async def test_pool_create_with_a_private_mini_program(run, db, fake_wechat):
    import httpx

    async with httpx.AsyncClient() as client:
        r = await client.post(f"{fake_wechat.url}/_fake/apps",
                              json={"appid": "wx1234567890abcdef",
                                    "secret": "0123456789abcdef0123456789abcdef"})  # fmt: skip
        r.raise_for_status()
    r = run("pool", "create", "priv", "--name", "Private", "--mp-appid", "wx1234567890abcdef",
            "--mp-secret-stdin", stdin="0123456789abcdef0123456789abcdef\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mp_appid"] == "wx1234567890abcdef"
    row = await db.fetchrow("SELECT mp_appid, mp_secret_enc FROM pools WHERE slug = 'priv'")
    assert row["mp_appid"] == "wx1234567890abcdef"
    assert b"0123456789abcdef" not in row["mp_secret_enc"]


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Acme", "not valid"),
        ("a" * 33, "not valid"),
        ("acme-", "not valid"),
        ("a.b", "not valid"),
        ("acme_1", "not valid"),
        ("www", "reserved"),
        ("console", "reserved"),
        ("api", "reserved"),
    ],
)
async def test_invalid_slugs_exit_2_with_a_clear_error(run, db, slug, message):
    r = run("pool", "create", slug, "--name", "X")
    assert r.returncode == 2
    assert r.stdout == ""
    assert "invalid_slug" in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr
    assert await db.fetchval("SELECT count(*) FROM pools") == 0


async def test_duplicate_slug_exits_2_and_changes_nothing(run, db):
    assert run("pool", "create", "acme", "--name", "First").returncode == 0
    r = run("pool", "create", "acme", "--name", "Second")
    assert r.returncode == 2
    assert "already exists" in r.stderr and "Traceback" not in r.stderr
    assert await db.fetchval("SELECT name FROM pools WHERE slug = 'acme'") == "First"
    assert await db.fetchval("SELECT count(*) FROM clients") == 1
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == 1


async def test_bad_callback_url_leaves_nothing_half_written(run, db):
    r = run(
        "pool", "create", "acme", "--name", "Acme", "--callback-url", "http://acme.example.com/cb"
    )
    assert r.returncode == 2 and "https" in r.stderr
    assert await db.fetchval("SELECT count(*) FROM pools") == 0


async def test_client_create(run, db):
    assert run("pool", "create", "acme", "--name", "Acme").returncode == 0
    r = run("client", "create", "acme", "--name", "Shop", "--redirect-uri", "https://shop.example.com/cb",
            "https://shop.example.com/cb2", "--origin", "https://shop.example.com")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["client_id"] and len(out["client_secret"]) >= 40
    assert out["redirect_uris"] == ["https://shop.example.com/cb", "https://shop.example.com/cb2"]
    assert out["web_origins"] == ["https://shop.example.com"]
    stored = await db.fetchval(
        "SELECT secret_hash FROM clients WHERE client_id = $1", out["client_id"]
    )
    assert stored and out["client_secret"] not in stored

    r = run(
        "client",
        "create",
        "acme",
        "--name",
        "SPA",
        "--redirect-uri",
        "https://spa.example.com/",
        "--public",
    )
    out = json.loads(r.stdout)
    assert "client_secret" not in out and out["public"] is True

    for bad in (
        "not a url",
        "https://x.example.com/cb#frag",
        "javascript:alert(1)",
        "http://x.example.com/",
    ):
        r = run("client", "create", "acme", "--name", "Bad", "--redirect-uri", bad)
        assert r.returncode == 2, bad
    r = run("client", "create", "nope", "--name", "X", "--redirect-uri", "https://x.example.com/")
    assert r.returncode == 2 and "no pool" in r.stderr
    assert await db.fetchval("SELECT count(*) FROM clients WHERE name IN ('Bad', 'X')") == 0


async def test_admin_create(run, db):
    assert run("pool", "create", "acme", "--name", "Acme").returncode == 0
    r = run(
        "admin",
        "create",
        "Ops@Example.com",
        "--password-stdin",
        "--pool",
        "acme",
        stdin="correct horse battery\n",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "id": 1,
        "email": "ops@example.com",
        "superadmin": False,
        "pools": ["acme"],
    }
    stored = await db.fetchval("SELECT password_hash FROM admins")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    r = run(
        "admin",
        "create",
        "ops@example.com",
        "--password-stdin",
        "--superadmin",
        stdin="another password\n",
    )
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run(
        "admin", "create", "root@example.com", "--password-stdin", "--superadmin", stdin="short\n"
    )
    assert r.returncode == 2 and "at least" in r.stderr
    r = run(
        "admin",
        "create",
        "x@example.com",
        "--password-stdin",
        "--pool",
        "nope",
        stdin="long enough pw\n",
    )
    assert r.returncode == 2
    assert await db.fetchval("SELECT count(*) FROM admins") == 1


async def test_keys_rotate_keeps_the_old_key_published(run, db):
    assert run("pool", "create", "acme", "--name", "Acme").returncode == 0
    old = await db.fetchval("SELECT kid FROM signing_keys WHERE active")
    r = run("keys", "rotate", "acme")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["kid"]
    assert new != old
    rows = await db.fetch(
        "SELECT kid, active, publish_until > now() AS published FROM signing_keys"
    )
    assert {(r["kid"], r["active"]) for r in rows} == {(old, False), (new, True)}
    assert all(r["published"] for r in rows if not r["active"])


def test_serve_refuses_to_start_without_a_secret_key(run):
    env_free = subprocess.run(
        [sys.executable, "-m", "portal", "serve"],
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PORTAL_", "DATABASE_URL", "REDIS_URL"))
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert env_free.returncode == 2
    assert "PORTAL_SECRET_KEY" in env_free.stderr


def test_commands_start_embedded_stores_in_a_relative_data_dir(tmp_path):
    """What `make dev` does on a fresh clone: no DATABASE_URL / REDIS_URL, PORTAL_DATA_DIR=.portal."""
    work = tmp_path / "clone"
    work.mkdir()
    work.chmod(0o755)
    tmp_path.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PORTAL_SECRET_KEY")
    }
    env.update(PORTAL_DATA_DIR=".portal", PORTAL_ENV="dev")
    r = subprocess.run(
        [sys.executable, "-m", "portal", "pool", "create", "rel", "--name", "Relative"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["slug"] == "rel"
    assert (work / ".portal" / "secret_key").exists()
    assert not (work / ".portal" / "redis" / "redis.sock").exists()  # stopped again


@pytest.mark.parametrize("quiet", [False, True], ids=["access log", "--quiet"])
def test_fake_wechat_runs_alone_and_quiet_drops_its_access_log(quiet):
    """``portal fake-wechat`` serves the fake WeChat API; each call is a line of
    its log (with the request's query: a secret and a code, fake ones) unless
    ``--quiet`` (the benchmarks run it so)."""
    import socket
    import time

    import httpx

    from portal.wechat.fake import DEMO_APPID, DEMO_SECRET, openid_for

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["fake-wechat", "--port", str(port)] + (["--quiet"] if quiet else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "portal", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/sns/jscode2session",
                    params={"appid": DEMO_APPID, "secret": DEMO_SECRET, "js_code": "alice.1",
                            "grant_type": "authorization_code"},
                    timeout=2,
                )  # fmt: skip
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "it did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["openid"] == openid_for(DEMO_APPID, "alice")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "fake WeChat API on http://127.0.0.1:" in out
    assert ("/sns/jscode2session" in out) is not quiet
    assert DEMO_SECRET not in out and "alice.1" not in out  # secret=*** (issue 16)


async def test_admin_create_refuses_an_admin_who_could_reach_nothing(run, db):
    """Neither --pool nor --superadmin used to make an admin with no pool at all."""
    r = run("admin", "create", "lost@example.com", "--password-stdin", stdin="long enough pw\n")
    assert r.returncode == 2
    assert r.stderr.startswith("portal: error: invalid_arguments: an admin needs --pool SLUG")
    assert "--superadmin" in r.stderr
    assert await db.fetchval("SELECT count(*) FROM admins") == 0


ERROR_LINE = re.compile(r"^portal: error: [a-z][a-z_]+: \S.*$")


async def test_every_error_is_one_line_code_colon_message(run, db):
    """One form, as the JSON APIs' error and error_description; it used to be
    ``no pool with slug 'nosuch'`` here and ``pool_not_found: no pool…`` there."""
    nosuch = "no pool with slug 'nosuch'"
    cases = [
        (("client", "create", "nosuch", "--name", "X", "--redirect-uri", "https://x.example/"),
         f"pool_not_found: {nosuch}"),
        (("keys", "rotate", "nosuch"), f"pool_not_found: {nosuch}"),
        (("pool", "set", "nosuch", "--qr-type", "link"), f"pool_not_found: {nosuch}"),
        (("admin", "create", "a@example.com", "--password-stdin", "--pool", "nosuch"),
         f"pool_not_found: {nosuch}"),
        (("admin", "create", "a@example.com"), "invalid_arguments: the password is read"),
        (("pool", "create", "Bad Slug", "--name", "X"), "invalid_slug: "),
        (("pool", "create", "acme", "--name", "X", "--mp-secret-stdin"),
         "invalid_arguments: --mp-secret-stdin needs --mp-appid"),
    ]  # fmt: skip
    for args, expected in cases:
        r = run(*args, stdin="long enough pw\n")
        assert r.returncode == 2, (args, r.stderr)
        assert ERROR_LINE.match(r.stderr.strip()), (args, r.stderr)
        assert r.stderr.startswith(f"portal: error: {expected}"), (args, r.stderr)
    env = {k: v for k, v in run.env.items() if k != "PORTAL_SECRET_KEY"}
    r = subprocess.run(  # noqa: ASYNC221 (as the `run` fixture does)
        [sys.executable, "-m", "portal", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("portal: error: invalid_config: "), r.stderr


def _talk(env: dict[str, str], args: list[str], answers: list[bytes]) -> tuple[int, str]:
    """Run ``portal ARGS`` on a pseudo-terminal, as a person in a terminal would:
    wait for each prompt, type the answer. Returns the status and all the
    terminal showed (what was typed shows only if the terminal echoed it)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "portal", *args], stdin=slave, stdout=slave, stderr=slave,
        env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the command has exited and closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and shown.rstrip().endswith(b":"):
                os.write(master, pending.pop(0))
                shown += b"\n<typed>\n"  # only a marker in this transcript, never sent
            if proc.poll() is not None and not ready:
                break
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return status, shown.decode(errors="replace")


async def test_admin_password_in_a_terminal_is_asked_twice_without_echo(run, db):
    """``--password-stdin`` in a terminal showed no prompt and echoed the password."""
    assert run("pool", "create", "acme", "--name", "Acme").returncode == 0
    password = "tty pass phrase 123"
    args = ["admin", "create", "tty@example.com", "--password-stdin", "--pool", "acme"]
    status, shown = _talk(run.env, args, [f"{password}\n".encode()] * 2)
    assert status == 0, shown
    assert "Password: " in shown and "Password (again): " in shown, shown
    assert password not in shown, shown  # not echoed
    assert '"email": "tty@example.com"' in shown
    stored = await db.fetchval("SELECT password_hash FROM admins WHERE email = 'tty@example.com'")
    assert await admins.verify_password(stored, password)

    status, shown = _talk(
        run.env,
        ["admin", "create", "typo@example.com", "--password-stdin", "--superadmin"],
        [b"first try 12345\n", b"first try 12346\n"],
    )
    assert status == 2, shown
    assert "portal: error: password_mismatch: the two passwords differ" in shown
    assert await db.fetchval("SELECT count(*) FROM admins WHERE email = 'typo@example.com'") == 0
