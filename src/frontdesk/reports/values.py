"""Reading lab results and reference ranges as analysers print them, without guessing.

The HIS sends results as text ("5.6", "阴性", "<20", ">1000", "3.4E+05") and ranges as text
("3.5-9.5", "<5.2", "阴性", or nothing). Numbers are read only when the text is a number,
possibly with a comparison sign; everything else stays text and is shown as printed. The
abnormal flag is the HIS's (the laboratory decides), never recomputed here.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from frontdesk.his.port import AbnormalFlag, LabItem, LabReport

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_RESULT = re.compile(rf"^(?P<op><=|>=|<|>|≤|≥)?\s*(?P<num>{_NUMBER})$")
_BETWEEN = re.compile(rf"^(?P<low>{_NUMBER})\s*(?:-|~|～|—|–|－|至|to)\s*(?P<high>{_NUMBER})$")
_BOUND = re.compile(rf"^(?P<op><=|>=|<|>|≤|≥)\s*(?P<num>{_NUMBER})$")


def _normal_text(text: str) -> str:
    # Full-width digits and signs ("＜２０") are common in Chinese LIS output.
    return unicodedata.normalize("NFKC", text or "").strip()


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Result:
    """A result as printed, and its number when it is one. ``qualifier`` is "<" or ">"
    for a result beyond the analyser's range ("<20": below 20, value 20)."""

    text: str
    value: float | None
    qualifier: str = ""

    @property
    def numeric(self) -> bool:
        return self.value is not None

    @property
    def exact(self) -> bool:
        return self.value is not None and not self.qualifier


def read_result(text: str) -> Result:
    clean = _normal_text(text)
    found = _RESULT.match(clean)
    if found is None:
        return Result(text=text.strip(), value=None)
    value = _finite(found.group("num"))
    if value is None:
        return Result(text=text.strip(), value=None)
    op = {"≤": "<", "<=": "<", "≥": ">", ">=": ">"}.get(found.group("op") or "", found.group("op"))
    return Result(text=text.strip(), value=value, qualifier=op or "")


@dataclass(frozen=True)
class Range:
    """A reference range. ``low``/``high`` are None when open or not numeric; ``numeric``
    says whether it can be drawn as a band."""

    text: str
    low: float | None
    high: float | None

    @property
    def numeric(self) -> bool:
        return self.low is not None or self.high is not None

    @property
    def missing(self) -> bool:
        return not self.text


def read_range(text: str) -> Range:
    clean = _normal_text(text)
    between = _BETWEEN.match(clean)
    if between:
        low, high = _finite(between.group("low")), _finite(between.group("high"))
        if low is not None and high is not None and low <= high:
            return Range(text=text.strip(), low=low, high=high)
    bound = _BOUND.match(clean)
    if bound:
        value = _finite(bound.group("num"))
        if value is not None:
            if bound.group("op") in {"<", "<=", "≤"}:
                return Range(text=text.strip(), low=None, high=value)
            return Range(text=text.strip(), low=value, high=None)
    return Range(text=(text or "").strip(), low=None, high=None)


# --------------------------------------------------------------------------- marks


class Mark(StrEnum):
    """What the page shows beside a result (in words and a symbol, never colour alone)."""

    none = "none"
    high = "high"
    low = "low"
    abnormal = "abnormal"  # qualitative result outside the reference (e.g. positive)
    critical_high = "critical_high"
    critical_low = "critical_low"
    critical = "critical"


def mark_of(item: LabItem) -> Mark:
    if item.critical:
        if item.abnormal is AbnormalFlag.high:
            return Mark.critical_high
        if item.abnormal is AbnormalFlag.low:
            return Mark.critical_low
        return Mark.critical
    return {
        AbnormalFlag.high: Mark.high,
        AbnormalFlag.low: Mark.low,
        AbnormalFlag.abnormal: Mark.abnormal,
    }.get(item.abnormal, Mark.none)


def is_flagged(item: LabItem) -> bool:
    return item.critical or item.abnormal is not AbnormalFlag.normal


# --------------------------------------------------------------------------- "since last time"


class ChangeKind(StrEnum):
    first = "first"  # no earlier result of this item for the card
    up = "up"
    down = "down"
    same = "same"
    different = "different"  # text results that differ (阴性 → 阳性)
    not_comparable = "not_comparable"  # the unit changed: numbers are not compared


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    previous_result: str = ""
    previous_unit: str = ""
    previous_at: datetime | None = None
    previous_report_id: str = ""
    flag_changed: bool = False  # became abnormal, or back to normal
    range_changed: bool = False

    @property
    def changed(self) -> bool:
        return self.kind in {ChangeKind.up, ChangeKind.down, ChangeKind.different} or (
            self.flag_changed
        )


def compare(
    current: LabItem, previous: LabItem | None, previous_report: LabReport | None
) -> Change:
    """How ``current`` differs from the same item (same HIS code) in the report before."""
    if previous is None or previous_report is None:
        return Change(ChangeKind.first)
    base = Change(
        ChangeKind.same,
        previous_result=previous.result,
        previous_unit=previous.unit,
        previous_at=previous_report.sampled_at,
        previous_report_id=previous_report.report_id,
        flag_changed=is_flagged(current) != is_flagged(previous),
        range_changed=_normal_text(current.reference_range)
        != _normal_text(previous.reference_range),
    )
    if _normal_text(current.unit) != _normal_text(previous.unit):
        return replace(base, kind=ChangeKind.not_comparable)
    now, before = read_result(current.result), read_result(previous.result)
    if now.value is not None and before.value is not None and now.exact and before.exact:
        if now.value > before.value:
            return replace(base, kind=ChangeKind.up)
        if now.value < before.value:
            return replace(base, kind=ChangeKind.down)
        return base
    if _normal_text(current.result) == _normal_text(previous.result):
        return base
    return replace(base, kind=ChangeKind.different)


def changes_since_last_time(report: LabReport, history: Sequence[LabReport]) -> dict[str, Change]:
    """For each item code of ``report``, the change from the latest earlier report of the
    card that has the same code (``history``: the card's lab reports, any order)."""
    earlier = sorted(
        (r for r in history if _before(r, report)),
        key=lambda r: (r.sampled_at, r.reviewed_at, r.report_id),
        reverse=True,
    )
    out: dict[str, Change] = {}
    for item in report.items:
        found: tuple[LabItem, LabReport] | None = None
        for candidate in earlier:
            match = next((i for i in candidate.items if i.code == item.code), None)
            if match is not None:
                found = (match, candidate)
                break
        out[item.code] = compare(item, *(found or (None, None)))
    return out


def _before(other: LabReport, report: LabReport) -> bool:
    if other.report_id == report.report_id:
        return False
    return (other.sampled_at, other.reviewed_at) < (report.sampled_at, report.reviewed_at)


# --------------------------------------------------------------------------- trends


@dataclass(frozen=True)
class TrendPoint:
    report_id: str
    at: datetime  # when the sample was taken
    name: str
    result: Result
    unit: str
    range: Range
    mark: Mark


@dataclass(frozen=True)
class Trend:
    """One lab item (by HIS code) across a card's reports, oldest first, split into series
    by unit: values in different units are never drawn on one axis."""

    code: str
    name: str  # as the latest report names it
    points: tuple[TrendPoint, ...]

    @property
    def units(self) -> list[str]:
        seen: list[str] = []
        for p in self.points:
            if p.unit not in seen:
                seen.append(p.unit)
        return seen

    def series(self) -> list[tuple[str, tuple[TrendPoint, ...]]]:
        """(unit, points) per unit, in order of first appearance."""
        return [(u, tuple(p for p in self.points if p.unit == u)) for u in self.units]

    @property
    def range_changes(self) -> list[TrendPoint]:
        """Points whose unit or reference range differs from the point before."""
        return [
            p
            for before, p in zip(self.points, self.points[1:], strict=False)
            if p.unit != before.unit
            or _normal_text(p.range.text) != _normal_text(before.range.text)
        ]


def point_of(report_id: str, at: datetime, item: LabItem) -> TrendPoint:
    return TrendPoint(
        report_id=report_id,
        at=at,
        name=item.name,
        result=read_result(item.result),
        unit=item.unit.strip(),
        range=read_range(item.reference_range),
        mark=mark_of(item),
    )


def trend_from(code: str, points: Iterable[TrendPoint]) -> Trend | None:
    """The trend of these points (any order; one per report)."""
    unique = {p.report_id: p for p in points}
    if not unique:
        return None
    ordered = sorted(unique.values(), key=lambda p: (p.at, p.report_id))
    return Trend(code=code, name=ordered[-1].name, points=tuple(ordered))


def trend_of(code: str, history: Iterable[LabReport]) -> Trend | None:
    return trend_from(
        code,
        (
            point_of(report.report_id, report.sampled_at, item)
            for report in history
            for item in report.items
            if item.code == code
        ),
    )
