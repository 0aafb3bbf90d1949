"""The files in deploy/: what can be checked without a Docker engine or systemd."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONF = DEPLOY / "gunicorn.conf.py"


def test_gunicorn_config(monkeypatch):
    monkeypatch.setenv("PORTAL_WORKERS", "3")
    monkeypatch.setenv("PORTAL_ACCESS_LOG", "1")
    conf = runpy.run_path(str(CONF))
    assert conf["worker_class"] == "portal.web.server.PortalWorker"
    assert conf["workers"] == 3
    assert conf["graceful_timeout"] > 0 and conf["forwarded_allow_ips"] == ""
    assert conf["logconfig_dict"]["handlers"]["default"]["formatter"] == "json"
    assert conf["logconfig_dict"]["loggers"]["uvicorn.access"]["handlers"] == ["default"]
    monkeypatch.delenv("PORTAL_WORKERS")
    assert 1 <= runpy.run_path(str(CONF))["workers"] <= (os.cpu_count() or 1)


def test_gunicorn_accepts_the_config():
    env = {**os.environ, "PORTAL_SECRET_KEY": "k" * 40, "PORTAL_ENV": "prod"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    r = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(CONF),
         "portal.asgi:from_env()"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_metrics_directory_is_made_emptied_and_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # on_starting sets these in os.environ itself: setenv first makes monkeypatch
    # remember their original state (unset), so that the later tests get it back.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PORTAL_METRICS_DIR_TEMPORARY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    orphan = tmp_path / "portal-metrics-999999999-abc"  # its master is gone
    orphan.mkdir()
    conf = runpy.run_path(str(CONF))
    conf["on_starting"](None)
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.parent == tmp_path and made.name.startswith(f"portal-metrics-{os.getpid()}-")
    assert not orphan.exists()
    conf["on_exit"](None)
    assert not made.exists()

    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"old run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    monkeypatch.delenv("PORTAL_METRICS_DIR_TEMPORARY")
    conf["on_starting"](None)
    assert given.exists() and not list(given.iterdir())  # emptied, kept
    conf["on_exit"](None)
    assert given.exists()


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
def test_nginx_accepts_the_site(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=login.example.com",
         "-addext", "subjectAltName=DNS:login.example.com,DNS:*.login.example.com",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    site = (DEPLOY / "nginx" / "portal.conf").read_text()
    for old, new in (
        ("/etc/letsencrypt/live/login.example.com/fullchain.pem", str(tmp_path / "cert.pem")),
        ("/etc/letsencrypt/live/login.example.com/privkey.pem", str(tmp_path / "key.pem")),
        ("/var/log/nginx/", f"{tmp_path}/"),
    ):
        assert old in site
        site = site.replace(old, new)
    (tmp_path / "portal.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ {temp} include {tmp_path}/portal.conf; }}\n"
    )
    r = subprocess.run(
        ["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path):
    venv_bin = Path(sys.executable).parent
    units = []
    for name in ("portal.service", "portal-migrate.service", "portal-worker.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        # Point the units at this checkout: verify checks that ExecStart exists.
        text = text.replace("/opt/portal/.venv/bin", str(venv_bin)).replace(
            "/opt/portal", str(DEPLOY.parent)
        )
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_compose_file_parses():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "portal", "worker"}
    assert services["worker"]["command"][:2] == ["portal", "worker"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["command"] == ["portal", "migrate"]
    assert services["portal"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["portal"]["build"]["dockerfile"] == "deploy/Dockerfile"
