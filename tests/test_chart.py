"""The console's chart of logins per day (portal/console/chart.py): the y-axis has
whole-number ticks in 1-2-5 steps, and every line sits where its label says."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import pytest

from portal.console import chart


@pytest.mark.parametrize(
    ("peak", "step", "top"),
    [
        (0, 1, 1),
        (1, 1, 1),
        (3, 1, 3),
        (5, 1, 5),
        (6, 2, 6),
        (7, 2, 8),
        (11, 5, 15),
        (23, 5, 25),
        (26, 10, 30),
        (50, 10, 50),
        (51, 20, 60),
        (999, 200, 1000),
        (12_345, 5000, 15_000),
    ],
)
def test_the_axis_steps_are_1_2_5_and_whole(peak: int, step: int, top: int):
    assert chart.axis(peak) == (step, top)


def test_every_peak_fits_under_at_most_five_steps():
    for peak in range(2000):
        step, top = chart.axis(peak)
        assert top >= peak and top % step == 0 and 1 <= top // step <= 5, peak
        mantissa = step
        while mantissa % 10 == 0:
            mantissa //= 10
        assert mantissa in (1, 2, 5), peak


def days(counts: list[tuple[int, int]]) -> list[tuple[date, int, int]]:
    first = date(2026, 11, 1)
    return [(first + timedelta(days=i), ok, refused) for i, (ok, refused) in enumerate(counts)]


def test_a_day_with_one_login_reaches_the_line_labelled_1():
    # The finding: a top of 5 cut in quarters put "1" at 1.25, above a bar of 1.
    drawn = chart.build(days([(1, 0), (5, 0), (0, 0)]))
    line = {t.value: t.y for t in drawn.ticks}
    assert list(line) == [0, 1, 2, 3, 4, 5]
    assert drawn.bars[0].ok_y == line[1]
    assert drawn.bars[1].ok_y == line[5]
    assert line[0] == drawn.baseline


def test_stacked_bars_end_on_their_totals_line():
    drawn = chart.build(days([(4, 2), (1, 0)] + [(0, 0)] * 28))
    line = {t.value: t.y for t in drawn.ticks}
    assert list(line) == [0, 2, 4, 6]
    assert drawn.bars[0].ok_y == line[4] and drawn.bars[0].refused_y == line[6]
    # The lines are evenly spaced, the labels evenly valued.
    ys = list(line.values())
    gaps = [a - b for a, b in pairwise(ys)]
    assert max(gaps) - min(gaps) < 0.2  # one decimal kept in the SVG


def test_an_empty_month_has_an_axis_of_0_and_1():
    drawn = chart.build(days([(0, 0)] * 30))
    assert [t.value for t in drawn.ticks] == [0, 1]
    assert all(b.ok_h == 0 and b.refused_h == 0 for b in drawn.bars)
