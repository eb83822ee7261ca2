"""The chart's own rules, and the reports settings the hospital can change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from frontdesk.core.settings import Settings
from frontdesk.reports.chart import trend_svg
from frontdesk.reports.values import Mark, TrendPoint, read_range, read_result

T = datetime(2026, 1, 1, tzinfo=UTC)
TZ = ZoneInfo("Asia/Shanghai")


def point(n: int, result: str, ref: str = "3.9-6.1", mark: Mark = Mark.none) -> TrendPoint:
    return TrendPoint(
        report_id=f"R{n}",
        at=T + timedelta(days=30 * n),
        name="葡萄糖",
        result=read_result(result),
        unit="mmol/L",
        range=read_range(ref),
        mark=mark,
    )


def test_words_in_the_chart_are_escaped() -> None:
    svg = trend_svg(
        [point(0, "5.0"), point(1, "6.5", mark=Mark.high)],
        tz=TZ,
        labels={"title": '<script>alert("x")</script>', "desc": "a & b", "range_changed": "!"},
        point_label={"R0": "<b>5.0</b>"},
    )
    assert svg is not None
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<b>" not in svg and "a &amp; b" in svg


def test_no_numbers_no_chart_and_one_point_is_centred() -> None:
    labels = {"title": "t", "desc": "d", "range_changed": "r"}
    assert trend_svg([point(0, "阴性", "阴性")], tz=TZ, labels=labels, point_label={}) is None
    svg = trend_svg([point(0, "5.0")], tz=TZ, labels=labels, point_label={})
    assert svg is not None and "<polyline" not in svg  # nothing to join
    assert 'cx="216.0"' in svg  # the middle of the plot (46 + 340 / 2)


def test_open_ranges_draw_a_band_to_the_edge() -> None:
    labels = {"title": "t", "desc": "d", "range_changed": "r"}
    svg = trend_svg(
        [point(0, "4.0", "<5.2"), point(1, "6.0", "<5.2", Mark.high)],
        tz=TZ,
        labels=labels,
        point_label={},
    )
    assert svg is not None
    band = svg.split('class="band"', 1)[1].split("/>", 1)[0]
    height = float(band.split('height="', 1)[1].split('"', 1)[0])
    y = float(band.split('y="', 1)[1].split('"', 1)[0])
    assert y + height == pytest.approx(22 + 188)  # down to the bottom of the plot


def test_hold_hours_are_checked() -> None:
    base: dict[str, Any] = {"env": "test", "secret_key": "s" * 40, "_env_file": None}
    assert Settings(**base, reports_hold_hours={"exam": 24}).reports_hold_hours == {
        "lab": 0,
        "exam": 24,
    }
    for bad in ({"xray": 1}, {"lab": -1}, {"exam": 24 * 31}):
        with pytest.raises(ValidationError):
            Settings(**base, reports_hold_hours=bad)
