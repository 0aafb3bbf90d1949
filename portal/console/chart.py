"""Logins per day as an SVG bar chart, drawn on the server.

The SVG goes inline into the page: no script, no inline style (colours come
from classes in console.css), a <title>/<desc> for screen readers and a
<title> per bar so pointing at a bar shows its numbers. Every text in it is
escaped by Jinja's autoescape in the template (it is rendered from this data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH = 720
HEIGHT = 240
LEFT = 40  # room for the y-axis labels
RIGHT = 8
TOP = 12
BOTTOM = 28  # room for the date labels


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_h: float
    refused_y: float
    refused_h: float
    day: date
    ok: int
    refused: int


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[Label]
    baseline: float
    left: int
    right: int
    total_ok: int
    total_refused: int


def axis(peak: int, most: int = 5) -> tuple[int, int]:
    """The step and top of the y-axis for a tallest bar of ``peak``.

    The step is the smallest of 1, 2, 5 × 10^n that needs at most ``most``
    steps to reach ``peak``, and the top is the first multiple of it at or
    above ``peak``: every tick is a whole number and every line sits where its
    label says (the axis used to split a top of 5 in quarters: 1.25 labelled 1).
    """
    peak = max(peak, 1)
    scale = 1
    while True:
        for m in (1, 2, 5):
            step = m * scale
            count = -(-peak // step)
            if count <= most:
                return step, step * count
        scale *= 10


def build(days: list[tuple[date, int, int]]) -> Chart:
    """Stacked bars: successful logins below, refused attempts on top."""
    step, top_value = axis(max((ok + refused for _, ok, refused in days), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_h
    slot = plot_w / max(1, len(days))
    bar_w = max(2.0, slot * 0.7)
    bars, labels = [], []
    for i, (day, ok, refused) in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        ok_h = plot_h * ok / top_value
        refused_h = plot_h * refused / top_value
        bars.append(
            Bar(
                x=round(x, 1),
                width=round(bar_w, 1),
                ok_y=round(baseline - ok_h, 1),
                ok_h=round(ok_h, 1),
                refused_y=round(baseline - ok_h - refused_h, 1),
                refused_h=round(refused_h, 1),
                day=day,
                ok=ok,
                refused=refused,
            )
        )
        if i % 5 == 0 or i == len(days) - 1:
            labels.append(Label(round(x + bar_w / 2, 1), day.strftime("%m-%d")))
    ticks = [
        Tick(round(baseline - plot_h * value / top_value, 1), value)
        for value in range(0, top_value + 1, step)
    ]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        ticks=ticks,
        labels=labels,
        baseline=baseline,
        left=LEFT,
        right=WIDTH - RIGHT,
        total_ok=sum(ok for _, ok, _ in days),
        total_refused=sum(refused for _, _, refused in days),
    )
