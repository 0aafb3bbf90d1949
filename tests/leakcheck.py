"""Secrets in the logs of a whole test run (issue 8; docs/security.md).

A pytest plugin (loaded by tests/conftest.py). For the whole run it

- writes every log record of the test process the way production writes it:
  ``portal.obs.logs`` JSON lines through the request-id and redaction filters,
  at INFO (production's level), into one file; the ``portal serve`` processes
  the suite starts (``tests.support.ServeProcess``, with the access log on)
  write their own, which are read too;
- records every secret the product hands out or receives, by observing (not
  replacing) the places they pass through: whatever ``SecretBox`` hashes or
  encrypts (ticket secrets, codes, refresh tokens, session ids, client and
  mini-program secrets; hashed values only when shaped like a token, so a
  hostile test's junk is not taken for one), every ``secrets.token_urlsafe``
  value of 32+ characters, WeChat session keys and phone numbers as the WeChat client
  returns them, the suite's secret key and the fake WeChat's app secrets.

``test_no_secret_in_the_logs_of_the_whole_run`` (tests/test_zz_log_secrets.py)
is moved to the end of the run and fails naming each secret found in a log
line. The scan is by value, not by pattern: a secret the redaction's patterns
miss is still found.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import secrets
import tempfile
from pathlib import Path

import pytest

from portal.obs.logs import JsonFormatter, RedactFilter, RequestIdFilter
from portal.scan.tickets import Tickets
from portal.stores.crypto import SecretBox
from portal.wechat.client import WeChatClient

MIN_LEN = 16  # shorter values (short codes, ids) would match by chance
LOG_FILE = Path(tempfile.gettempdir()) / f"portal-test-logs-{__import__('os').getpid()}.jsonl"
SERVER_LOGS: list[Path] = []  # ServeProcess logs, added by tests.support

_secrets: set[str] = set()
_phones: set[str] = set()


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_+/=-]+$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,}$")
_B64_RUN = re.compile(r"[A-Za-z0-9_+/-]{40,}")
_odd: set[str] = set()  # secrets with other characters: searched for as plain text


def register(*values: object) -> None:
    """Remember ``values`` as secrets that must never appear in a log line."""
    for value in values:
        if not isinstance(value, str) or len(value) < MIN_LEN:
            continue
        if _TOKEN_CHARS.match(value):
            _secrets.add(value)
        elif len(value) <= 256:
            _odd.add(value)
        else:  # key material (PEM, JWK): its long base64 runs
            _secrets.update(_B64_RUN.findall(value))


def register_phone(number: str) -> None:
    if number and number.isdigit() and len(number) >= 11:
        _phones.add(number)


# Runs of characters a secret is made of: urlsafe base64 (tokens, secrets),
# standard base64 (WeChat session keys), hex (hashes), and digit runs (phones).
_RUNS = (
    re.compile(r"[A-Za-z0-9_-]{16,}"),
    re.compile(r"[A-Za-z0-9+/]{16,}={0,2}"),
    re.compile(r"[A-Za-z0-9_+/-]{40,}"),
)
_DIGITS = re.compile(r"\d{11,}")


def find_leaks(text: str) -> list[str]:
    """The registered secrets and phone numbers that appear in ``text``."""
    found: set[str] = set()
    for pattern in _RUNS:
        for run in pattern.findall(text):
            if run in _secrets:
                found.add(run)
    found.update(value for value in _odd if value in text)
    for digits in _DIGITS.findall(text):
        if digits[-11:] in _phones or digits in _phones:
            found.add(digits)
    return sorted(found)


def all_log_text() -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    parts = [LOG_FILE.read_text(encoding="utf-8", errors="replace")] if LOG_FILE.exists() else []
    parts += [p.read_text(encoding="utf-8", errors="replace") for p in SERVER_LOGS if p.exists()]
    return "\n".join(parts)


def _observe(owner: type, name: str, on_result=None, on_args=None) -> None:
    original = getattr(owner, name)
    if getattr(original, "_leakcheck", False):
        return

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def wrapper(*args, **kwargs):
            if on_args:
                on_args(*args, **kwargs)
            result = await original(*args, **kwargs)
            if on_result:
                on_result(result)
            return result
    else:

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if on_args:
                on_args(*args, **kwargs)
            result = original(*args, **kwargs)
            if on_result:
                on_result(result)
            return result

    wrapper._leakcheck = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)


def pytest_configure(config: pytest.Config) -> None:
    LOG_FILE.unlink(missing_ok=True)
    handler = logging.FileHandler(LOG_FILE, encoding="utf-8")
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter())
    handler._leakcheck = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)  # production's level (PORTAL_LOG_LEVEL's default)

    # 24 bytes and more: secrets. CSP nonces (16 bytes) are sent in every page's
    # headers, and a DEBUG log of an HTTP client may show them: not secrets.
    _observe(secrets, "token_urlsafe", on_result=lambda v: register(v) if len(v) >= 32 else None)
    # What is hashed at rest is a secret when it has a token's shape (a request's
    # wrong or hostile value is not; "purpose:value" inputs hold a token already
    # registered when it was made).
    _observe(
        SecretBox,
        "hash_secret",
        on_args=lambda self, secret: register(secret) if _TOKEN_RE.match(secret) else None,
    )
    _observe(
        SecretBox,
        "encrypt",
        on_args=lambda self, plaintext, context: register(
            plaintext.decode("utf-8", "replace") if isinstance(plaintext, bytes) else plaintext
        ),
    )
    _observe(Tickets, "create", on_result=lambda new: register(new.secret))
    _observe(WeChatClient, "code2session", on_result=lambda s: register(s.session_key))
    _observe(
        WeChatClient,
        "phone_number",
        on_result=lambda p: (register_phone(p.pure_phone_number), register_phone(p.phone_number)),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scan runs after every other test of the run."""
    last = [i for i in items if i.name == "test_no_secret_in_the_logs_of_the_whole_run"]
    items[:] = [i for i in items if i not in last] + last


def pytest_unconfigure(config: pytest.Config) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_leakcheck", False):
            root.removeHandler(handler)
            handler.close()
    LOG_FILE.unlink(missing_ok=True)
