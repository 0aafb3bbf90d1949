"""No secret, token, session key or full phone number in the logs of a whole
test run (issue 8). The plugin tests/leakcheck.py collects the logs and the
secrets; this test runs last (the plugin moves it there) and scans."""

import logging

from tests import leakcheck


def test_the_scan_finds_a_registered_secret_in_a_log_line():
    """The scan itself works: a secret logged on purpose is found by value,
    also where the redaction's patterns do not recognise it."""
    canary = "Canary" + "x7Rq" * 8  # 38 characters: below the redactor's opaque length
    leakcheck.register(canary)
    leakcheck.register_phone("13912345678")
    text = f'{{"msg": "weird {canary}!"}}\n{{"msg": "call +86 13912345678"}}'
    assert leakcheck.find_leaks(text) == ["13912345678", canary]
    assert leakcheck.find_leaks('{"msg": "139****5678 and ***"}') == []


def test_no_secret_in_the_logs_of_the_whole_run():
    logging.getLogger("portal.test").info("log scan: end of the run")  # the file exists
    text = leakcheck.all_log_text()
    assert "log scan: end of the run" in text
    leaks = leakcheck.find_leaks(text)
    lines = [line for line in text.splitlines() if any(leak in line for leak in leaks)]
    assert not leaks, "secrets in the logs:\n" + "\n".join(lines[:20])
