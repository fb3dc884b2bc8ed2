"""The console's charts, laid out on the server and drawn as inline SVG by ``admin/charts.html``.

SVG from the server rather than a vendored JavaScript library: the charts then show with
JavaScript off like the rest of the console, the pages keep a Content-Security-Policy without
any script, there is no vendored file to refresh, and each point carries its figures
(``data-date``, ``data-value``, a ``<title>``) for assistive technology and for tests. The same
figures are in an HTML table beside each chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

# Okabe-Ito colours: told apart with the common colour-vision deficiencies.
FUNNEL = (
    ("anonymous_created", "Guests created", "#0072b2"),
    ("conversions_started", "Conversions started", "#e69f00"),
    ("converted", "Converted", "#009e73"),
    ("merged", "Merged", "#cc79a7"),
    ("culled", "Culled", "#d55e00"),
)
GUEST_COLOR, REGISTERED_COLOR = "#56b4e9", "#0072b2"

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 14, 30
TICKS = 4


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    day: str
    value: int


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    color: str
    points: list[Point]

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Tick:
    at: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    radius: float


def _step(largest: int) -> int:
    """The smallest of 1, 2 and 5 times a power of ten that covers ``largest`` in ``TICKS``
    steps."""
    needed = max(1, math.ceil(largest / TICKS))
    magnitude: int = 10 ** (len(str(needed)) - 1)
    return next(f * magnitude for f in (1, 2, 5, 10) if f * magnitude >= needed)


def funnel_chart(daily: list[dict[str, Any]]) -> LineChart:
    """The daily funnel (``collect_stats``' ``daily``, oldest first) as one line per figure."""
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    step = _step(max((day[key] for day in daily for key, _, _ in FUNNEL), default=0))
    top_value = step * TICKS
    span = max(len(daily) - 1, 1)

    def x(i: int) -> float:
        return LEFT + (right - LEFT) * i / span

    def y(value: int) -> float:
        return bottom - (bottom - TOP) * value / top_value

    series = [
        Series(
            key,
            label,
            color,
            [Point(x(i), y(day[key]), day["date"], day[key]) for i, day in enumerate(daily)],
        )
        for key, label, color in FUNNEL
    ]
    y_ticks = [Tick(y(step * i), f"{step * i:,}") for i in range(TICKS + 1)]
    every = max(1, round(len(daily) / 6))
    shown = sorted({*range(0, len(daily), every), len(daily) - 1})
    if len(shown) > 1 and shown[-1] - shown[-2] < every / 2:
        shown.pop(-2)  # keep the last day's label clear of its neighbour
    last = len(daily) - 1
    x_ticks = [
        # The last label ends at the last point, so it stays inside the chart.
        Tick(
            x(i),
            date.fromisoformat(daily[i]["date"]).strftime("%b %d"),
            "end" if i == last else "middle",
        )
        for i in shown
    ]
    radius = 2.5 if len(daily) <= 45 else 1.5
    return LineChart(WIDTH, HEIGHT, LEFT, right, TOP, bottom, series, y_ticks, x_ticks, radius)


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    color: str
    x: float
    width: float


def mau_bar(guests: int, registered: int, width: int = WIDTH) -> list[Bar]:
    """This month's active accounts as one bar split into guests and registered ones."""
    total = guests + registered
    guest_width = width * guests / total if total else 0.0
    registered_width = width * registered / total if total else 0.0
    return [
        Bar("Guests", guests, GUEST_COLOR, 0.0, guest_width),
        Bar("Registered", registered, REGISTERED_COLOR, guest_width, registered_width),
    ]
