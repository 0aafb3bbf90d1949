"""Percentiles and per-process CPU accounting for the benchmark report."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence

import psutil


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p90/p99/max and mean of seconds, in milliseconds."""
    v = sorted(values_s)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 2)

    return {
        "count": len(v),
        "p50_ms": ms(percentile(v, 50)),
        "p90_ms": ms(percentile(v, 90)),
        "p99_ms": ms(percentile(v, 99)),
        "max_ms": ms(v[-1] if v else None),
        "min_ms": ms(v[0] if v else None),
        "mean_ms": ms(sum(v) / len(v) if v else None),
    }


def _cpu(p: psutil.Process) -> float | None:
    with contextlib.suppress(psutil.Error):
        t = p.cpu_times()
        return t.user + t.system
    return None


def loadgen_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


class CpuMeter:
    """CPU used by each role between start() and stop(), in cores (CPU s / wall s).

    ``groups`` is called at both ends, so processes that appear meanwhile
    (new PostgreSQL backends) count from zero; processes that exit meanwhile
    are lost (none should, during a measurement).
    """

    def __init__(self, groups: Callable[[], dict[str, list[psutil.Process]]]) -> None:
        self._groups = groups
        self._t0 = 0.0
        self._start: dict[int, float] = {}

    def start(self) -> None:
        self._start = {}
        for procs in self._all().values():
            for p in procs:
                c = _cpu(p)
                if c is not None:
                    self._start[p.pid] = c
        self._machine0 = _machine_busy()
        self._t0 = time.monotonic()

    def _all(self) -> dict[str, list[psutil.Process]]:
        groups = self._groups()
        ours = {p.pid for procs in groups.values() for p in procs}
        groups["load generator"] = [p for p in loadgen_processes() if p.pid not in ours]
        return groups

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        out: dict[str, float] = {}
        for role, procs in self._all().items():
            used = 0.0
            for p in procs:
                c = _cpu(p)
                if c is not None:
                    used += c - self._start.get(p.pid, 0.0)
            out[role] = round(used / wall, 2)
        out["total"] = round(sum(out.values()), 2)
        busy = (_machine_busy() - self._machine0) / wall
        out["machine busy"] = round(busy, 2)
        # Everything else on the machine (other users of these cores) in the same window.
        out["other processes"] = round(max(0.0, busy - out["total"]), 2)
        workers = [v for k, v in out.items() if k.startswith("portal worker ")]
        if workers:
            out = {"portal workers": round(sum(workers), 2), **out}
        return out


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return (
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0)
        + getattr(t, "softirq", 0)
        + getattr(t, "steal", 0)
    )


def format_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.005 or k == "total")


def wait_quiet(
    groups: Callable[[], dict[str, list[psutil.Process]]],
    max_wait: float,
    threshold: float = 0.15,
    sample: float = 2.0,
) -> dict:
    """Wait (at most ``max_wait`` s) until processes other than ours use less than
    ``threshold`` cores over a ``sample``-second window. → what was seen."""
    t0 = time.monotonic()
    other = None
    while True:
        meter = CpuMeter(groups)
        meter.start()
        time.sleep(sample)
        other = meter.stop()["other processes"]
        waited = time.monotonic() - t0
        if other < threshold or waited >= max_wait:
            return {"other_cores": other, "waited_s": round(waited, 1), "quiet": other < threshold}
