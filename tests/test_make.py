"""``make test`` says what it installs as root, and SKIP_BROWSER_INSTALL=1 opts
out, the browser tests then skipped saying why (issue 21, item 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser import conftest as browser_conftest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def make_browser(tmp_path: Path, *variables: str, path: str | None = None):
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    env.pop("SKIP_BROWSER_INSTALL", None)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "browser",
         f"CHROMIUM={tmp_path / 'no-chromium'}", *variables],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_skip_browser_install_installs_nothing_and_says_so(tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    calls = tmp_path / "apt-calls"
    (stub / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (stub / "apt-get").chmod(0o755)
    r = make_browser(tmp_path, "SKIP_BROWSER_INSTALL=1", path=f"{stub}:{os.environ['PATH']}")
    assert r.returncode == 0, r.stderr
    assert "SKIP_BROWSER_INSTALL is set: not installing chromium fonts-noto-cjk" in r.stderr
    assert "the browser tests (tests/browser) are skipped" in r.stderr
    assert not calls.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the install runs only as root")
def test_as_root_it_says_what_it_installs_before_installing(tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "apt-get").write_text('#!/bin/sh\necho "APT-GET $*" >&2\n')
    (stub / "apt-get").chmod(0o755)
    r = make_browser(tmp_path, path=f"{stub}:{os.environ['PATH']}")
    assert r.returncode == 0, r.stderr
    notice = r.stderr.index(
        "make browser: installing them as root: apt-get update; "
        "apt-get install --no-install-recommends chromium fonts-noto-cjk"
    )
    assert "SKIP_BROWSER_INSTALL=1 installs nothing" in r.stderr
    install = r.stderr.index(
        "APT-GET install -y -qq --no-install-recommends chromium fonts-noto-cjk"
    )
    assert notice < install


def test_the_browser_tests_say_why_they_are_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(browser_conftest, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")  # even under CI: the opt-out was on purpose
    monkeypatch.setenv("SKIP_BROWSER_INSTALL", "1")
    with pytest.raises(pytest.skip.Exception, match=r"SKIP_BROWSER_INSTALL is set and .* missing"):
        browser_conftest._require_chromium()
    monkeypatch.delenv("SKIP_BROWSER_INSTALL")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI"):
        browser_conftest._require_chromium()  # CI without the opt-out still fails


def test_make_test_lists_skip_reasons():
    text = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python -m pytest -rs $(ARGS)" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "SKIP_BROWSER_INSTALL" not in (ROOT / ".ci" / "run").read_text()  # CI installs them
