"""The trend chart: an SVG drawn here, on the server, from one series of lab values.

No chart library and no script in the browser. The reference range is a band behind the
line (a step where the range changed, with a dashed marker); abnormal points differ in
shape as well as colour (triangle up for high, down for low, diamond for a qualitative
abnormal, a square with "!" for critical), and values beyond the analyser's range ("<20")
are hollow. Values spanning three or more orders of magnitude (viral loads) use a log axis.
Only presentation attributes are used (no ``style``), so the strict CSP of the pages holds.
Words come from the caller (``labels``), so this module has no user-facing text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from frontdesk.reports.values import Mark, TrendPoint

# A phone-sized canvas: drawn at about 350 px wide, text stays about 11 px high.
WIDTH, HEIGHT = 400, 250
LEFT, RIGHT, TOP, BOTTOM = 46, 14, 22, 40

LINE = "#576b95"
BAND = "#dff3e7"
BAND_EDGE = "#9ad5b0"
HIGH = "#d93025"
LOW = "#c25e00"
CRITICAL = "#8b0000"
ABNORMAL = "#b4009e"
GRID = "#e5e5e5"
TEXT = "#4c4c4c"


@dataclass(frozen=True)
class _Axis:
    low: float
    high: float
    log: bool

    def fraction(self, value: float) -> float:
        if self.log:
            value = math.log10(max(value, 10**self.low))
        return (value - self.low) / (self.high - self.low)

    def ticks(self) -> list[float]:
        if self.log:
            return [10.0**e for e in range(math.ceil(self.low), math.floor(self.high) + 1)]
        step = _nice_step((self.high - self.low) / 5)
        first = math.ceil(self.low / step) * step
        count = int((self.high - first) / step + 1e-9) + 1
        return [round(first + i * step, 10) for i in range(count)]


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw))
    base = raw / 10**exponent
    nice = 1 if base <= 1 else 2 if base <= 2 else 2.5 if base <= 2.5 else 5 if base <= 5 else 10
    return nice * 10.0**exponent


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{value:.6g}"


def _axis(points: Sequence[TrendPoint]) -> _Axis:
    values = [p.result.value for p in points if p.result.value is not None]
    bounds = [b for p in points for b in (p.range.low, p.range.high) if b is not None and b == b]
    every = values + bounds
    positive = [v for v in every if v > 0]
    if values and all(v > 0 for v in values) and max(values) / min(values) >= 1000:
        decade_low = math.floor(math.log10(min(positive)))
        decade_high = math.ceil(math.log10(max(positive)))
        return _Axis(float(decade_low), float(max(decade_high, decade_low + 1)), True)
    low, high = float(min(every)), float(max(every))
    if high == low:
        spread = abs(high) * 0.1 or 1.0
        low, high = low - spread, high + spread
    pad = (high - low) * 0.08
    low2 = low - pad
    if low >= 0 > low2:
        low2 = 0.0  # counts and concentrations are never negative: no axis below zero
    return _Axis(low2, high + pad, False)


def _marker(x: float, y: float, mark: Mark, hollow: bool) -> str:
    if mark in {Mark.critical, Mark.critical_high, Mark.critical_low}:
        fill = "#ffffff" if hollow else CRITICAL
        glyph = CRITICAL if hollow else "#ffffff"
        return (
            f'<rect x="{x - 7:.1f}" y="{y - 7:.1f}" width="14" height="14" fill="{fill}" '
            f'stroke="{CRITICAL}" stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{y + 4.5:.1f}" text-anchor="middle" font-size="12" '
            f'font-weight="700" fill="{glyph}">!</text>'
        )
    if mark is Mark.high:
        shape, colour = f"{x:.1f},{y - 7:.1f} {x + 7:.1f},{y + 5:.1f} {x - 7:.1f},{y + 5:.1f}", HIGH
    elif mark is Mark.low:
        shape, colour = f"{x - 7:.1f},{y - 5:.1f} {x + 7:.1f},{y - 5:.1f} {x:.1f},{y + 7:.1f}", LOW
    elif mark is Mark.abnormal:
        shape = f"{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}"
        colour = ABNORMAL
    else:
        fill = "#ffffff" if hollow else LINE
        return (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{fill}" stroke="{LINE}" '
            'stroke-width="2"/>'
        )
    fill = "#ffffff" if hollow else colour
    return f'<polygon points="{shape}" fill="{fill}" stroke="{colour}" stroke-width="2"/>'


def trend_svg(
    points: Sequence[TrendPoint],
    *,
    tz: ZoneInfo,
    labels: Mapping[str, str],
    point_label: Mapping[str, str],
    chart_id: str = "chart",
) -> str | None:
    """The chart of one series (one unit), or None when no result is a number.

    ``labels``: ``title``, ``desc`` and ``range_changed`` (words for the chart);
    ``point_label``: report id -> the words a screen reader says for that point.
    """
    numeric = [p for p in points if p.result.value is not None]
    if not numeric:
        return None
    axis = _axis(points)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    start, end = points[0].at, points[-1].at
    span = (end - start).total_seconds()

    def x_of(at: datetime) -> float:
        if span <= 0:
            return LEFT + plot_w / 2
        return LEFT + plot_w * (0.04 + 0.92 * (at - start).total_seconds() / span)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - min(max(axis.fraction(value), 0.0), 1.0))

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="trend-chart" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        'font-family="sans-serif">',
        f'<title id="{chart_id}-title">{escape(labels.get("title", ""))}</title>',
        f'<desc id="{chart_id}-desc">{escape(labels.get("desc", ""))}</desc>',
    ]
    # Reference bands, one per run of points with the same range text.
    runs: list[list[TrendPoint]] = []
    for p in points:
        if runs and runs[-1][-1].range.text == p.range.text:
            runs[-1].append(p)
        else:
            runs.append([p])
    for n, run in enumerate(runs):
        x0 = LEFT if n == 0 else (x_of(runs[n - 1][-1].at) + x_of(run[0].at)) / 2
        x1 = (
            LEFT + plot_w
            if n == len(runs) - 1
            else (x_of(run[-1].at) + x_of(runs[n + 1][0].at)) / 2
        )
        rng = run[0].range
        if rng.numeric:
            top = TOP if rng.high is None else y_of(rng.high)
            bottom = TOP + plot_h if rng.low is None else y_of(rng.low)
            out.append(
                f'<rect class="band" x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0, 0):.1f}" '
                f'height="{max(bottom - top, 0):.1f}" fill="{BAND}" stroke="{BAND_EDGE}" '
                'stroke-dasharray="2 3"/>'
            )
        if n > 0:
            out.append(
                f'<line class="range-change" x1="{x0:.1f}" y1="{TOP}" x2="{x0:.1f}" '
                f'y2="{TOP + plot_h}" stroke="{TEXT}" stroke-dasharray="5 4"/>'
                f'<text x="{x0 + 3:.1f}" y="{TOP - 6}" font-size="12.5" fill="{TEXT}">'
                f"{escape(labels.get('range_changed', ''))}</text>"
            )
    # Grid and axes.
    for tick in axis.ticks():
        y = y_of(tick)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text class="y-tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="12.5" fill="{TEXT}">{escape(_fmt(tick))}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        f'stroke="{TEXT}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" '
        f'stroke="{TEXT}"/>'
    )
    dates = [points[0].at] if span <= 0 else [start + (end - start) * (i / 2) for i in range(3)]
    for n, at in enumerate(dates):
        x = x_of(at)
        # The first and last labels grow inwards so they stay on the canvas.
        anchor = (
            "middle"
            if len(dates) == 1 or 0 < n < len(dates) - 1
            else ("start" if n == 0 else "end")
        )
        x = x if anchor == "middle" else (LEFT if n == 0 else LEFT + plot_w)
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="{anchor}" font-size="12.5" '
            f'fill="{TEXT}">{at.astimezone(tz):%Y-%m-%d}</text>'
        )
    # The line through the numbers, then the points on top.
    coords = [(x_of(p.at), y_of(p.result.value)) for p in numeric if p.result.value is not None]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for p, (x, y) in zip(numeric, coords, strict=True):
        hollow = bool(p.result.qualifier)
        out.append(
            f'<g class="point mark-{p.mark.value}{" censored" if hollow else ""}" '
            f'data-report="{escape(p.report_id)}">'
            f"<title>{escape(point_label.get(p.report_id, p.result.text))}</title>"
            f"{_marker(x, y, p.mark, hollow)}</g>"
        )
    out.append("</svg>")
    return "".join(out)
