"""Prometheus metrics (docs/design.md §6: ``/metrics`` on the apex host).

Under gunicorn several worker processes serve; ``portal serve`` (and
``deploy/gunicorn.conf.py``) set ``PROMETHEUS_MULTIPROC_DIR`` before any
worker starts, so every process writes its values to files there and
``/metrics`` answers the sum over the live workers (counters keep what
finished workers counted; gauges count live workers only: gunicorn's
``child_exit`` hook calls ``mark_process_dead``). Without it (``portal dev``,
tests) the ordinary in-process registry is used.

A counter named ``portal_logins`` is exposed as ``portal_logins_total``.
"""

from __future__ import annotations

import asyncio
import glob
import hmac
import ipaddress
import os
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# ``*_created`` timestamps double the series and mean nothing summed over workers.
prometheus_client.disable_created_metrics()

REQUEST_DURATION = Histogram(
    "portal_http_request_duration_seconds",
    "HTTP requests by site, route template, method and status: their count, and"
    " how long they took to answer (for SSE streams: how long they stayed open).",
    ("site", "route", "method", "status"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TICKETS_CREATED = Counter("portal_tickets_created", "QR login tickets created.")
TICKETS_FINAL = Counter(
    "portal_tickets_final",
    "Tickets that reached a final status through a user's action"
    " (expired ones are created - confirmed - cancelled, once their lifetime is over).",
    ("status",),
)
TICKETS_EXCHANGED = Counter(
    "portal_tickets_exchanged", "Confirmed tickets exchanged for the user and tokens."
)
LOGINS = Counter(
    "portal_logins",
    "Login attempts by result (success, signup, or the refusal's error code).",
    ("result",),
)
WECHAT_CALLS = Counter(
    "portal_wechat_api_calls", "HTTP calls to the WeChat API (retries included).", ("api",)
)
WECHAT_ERRORS = Counter(
    "portal_wechat_api_errors",
    "Failed WeChat API calls, by WeChat errcode (or network, http_5xx, bad_response).",
    ("api", "errcode"),
)
WAITERS = Gauge(
    "portal_waiters_connected",
    "Browsers waiting on a ticket (SSE streams and long polls) right now.",
    multiprocess_mode="livesum",
)

for _status in ("confirmed", "cancelled"):
    TICKETS_FINAL.labels(_status)
for _result in ("success", "signup"):
    LOGINS.labels(_result)


class Tally:
    """Counts and observations of the hot path, added up in the process and
    written to the metric values at most every ``interval`` seconds.

    In multiprocess mode every ``inc`` and ``observe`` of prometheus_client
    takes a lock and writes to a memory-mapped file; a histogram observation
    also walks its buckets in Python. For the QR API, whose whole request costs
    a few hundred microseconds, that was 8-10 % of a worker's time. Here a
    request costs a dict lookup and a bisect; the values reach the metric
    (and so ``/metrics``, which flushes its own process first) within
    ``interval`` seconds, by a timer armed only while something is pending,
    and at shutdown (``flush``).

    It writes histogram children through ``_sum`` and ``_buckets``, which are
    prometheus_client's internals (pinned ``<1``); tests/test_observability.py
    checks that a flushed tally exposes exactly what direct observations do.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._counts: dict[object, float] = {}
        self._hists: dict[object, list] = {}  # child -> [bucket counts, sum]
        self._timer: asyncio.TimerHandle | None = None

    def inc(self, child: object, amount: float = 1.0) -> None:
        self._counts[child] = self._counts.get(child, 0.0) + amount
        if self._timer is None:
            self._arm()

    def observe(self, child: object, amount: float) -> None:
        entry = self._hists.get(child)
        if entry is None:
            bounds = child._upper_bounds  # type: ignore[attr-defined]
            entry = self._hists[child] = [[0] * len(bounds), 0.0, bounds]
        entry[0][bisect_left(entry[2], amount)] += 1
        entry[1] += amount
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a thread): write at once
            self.flush()
            return
        self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, hists = self._counts, self._hists
        self._counts, self._hists = {}, {}
        for child, amount in counts.items():
            child.inc(amount)  # type: ignore[attr-defined]
        for child, (buckets, total, _) in hists.items():
            child._sum.inc(total)  # type: ignore[attr-defined]
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)  # type: ignore[attr-defined]


TALLY = Tally()  # the process's: the request middleware and the ticket store share it


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def _collect() -> bytes:
    if not multiprocess():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _WorkerFiles(registry)
    return generate_latest(registry)


class _WorkerFiles(MultiProcessCollector):
    """prometheus_client's collector, minus the files a worker has just created
    and not yet sized: reading one fails (``struct.error``), and right after a
    reload, as new workers start, a scrape could answer 500."""

    def collect(self):  # type: ignore[override]
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) >= 8:  # the header: how much of the file is used
                    files.append(path)
            except OSError:  # gone meanwhile (a dead worker's gauges)
                pass
        return self.merge(files, accumulate=True)


async def exposition() -> tuple[bytes, str]:
    """The text exposition and its content type."""
    TALLY.flush()  # this process's pending values; the others' are at most 0.5 s behind
    if multiprocess():  # reads one file per worker (live or gone): off the event loop
        return await asyncio.to_thread(_collect), CONTENT_TYPE_LATEST
    return _collect(), CONTENT_TYPE_LATEST


# --- who may read /metrics ----------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_ALLOW = "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7"


@dataclass(frozen=True)
class MetricsAccess:
    """``PORTAL_METRICS_ALLOW``: comma-separated IPs/CIDRs that may read /metrics
    (default: loopback and private networks; empty: nobody by address), and
    ``PORTAL_METRICS_TOKEN``: a bearer token that may read it from anywhere."""

    allow: tuple[IPNetwork, ...]
    token: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetricsAccess:
        env = os.environ if environ is None else environ
        allow = []
        for item in env.get("PORTAL_METRICS_ALLOW", DEFAULT_ALLOW).split(","):
            if item := item.strip():
                try:
                    allow.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(
                        f"PORTAL_METRICS_ALLOW: {item!r} is not an IP address or network"
                    ) from None
        token = env.get("PORTAL_METRICS_TOKEN", "").strip()
        if token and len(token) < 16:
            raise ValueError("PORTAL_METRICS_TOKEN must be at least 16 characters")
        return cls(tuple(allow), token)

    def allowed(self, client_ip: str | None, authorization: str | None) -> bool:
        if self.token and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self.token.encode()
            ):
                return True
        if not client_ip:
            return False
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)
