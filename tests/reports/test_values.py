"""Reading results and ranges as analysers print them, and comparing with last time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from frontdesk.his.port import AbnormalFlag, LabItem, LabReport
from frontdesk.reports.service import history_start
from frontdesk.reports.values import (
    ChangeKind,
    Mark,
    changes_since_last_time,
    mark_of,
    read_range,
    read_result,
)

T = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "value", "qualifier"),
    [
        ("5.6", 5.6, ""),
        (" 120 ", 120.0, ""),
        ("<20", 20.0, "<"),
        ("＜２０", 20.0, "<"),  # full-width, as some LIS print it
        (">1000", 1000.0, ">"),
        ("≥ 7.5", 7.5, ">"),
        ("3.4E+05", 340000.0, ""),
        ("-2.5", -2.5, ""),
        ("阴性", None, ""),
        ("阳性(+)", None, ""),
        ("", None, ""),
        ("5.6.7", None, ""),
        ("1e999", None, ""),  # not finite: shown as text, never drawn
        ("NaN", None, ""),
    ],
)
def test_read_result(text: str, value: float | None, qualifier: str) -> None:
    result = read_result(text)
    assert (result.value, result.qualifier) == (value, qualifier)
    assert result.text == text.strip()


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("3.5-9.5", 3.5, 9.5),
        ("3.5~9.5", 3.5, 9.5),
        ("3.5 － 9.5", 3.5, 9.5),
        ("<5.2", None, 5.2),
        ("≤5.2", None, 5.2),
        (">1.04", 1.04, None),
        ("-3-3", -3.0, 3.0),
        ("9.5-3.5", None, None),  # backwards: not a range we can draw
        ("阴性", None, None),
        ("", None, None),
    ],
)
def test_read_range(text: str, low: float | None, high: float | None) -> None:
    found = read_range(text)
    assert (found.low, found.high) == (low, high)
    assert found.missing is (text == "")


def item(
    code: str,
    result: str,
    unit: str = "U/L",
    ref: str = "9-50",
    flag: AbnormalFlag = AbnormalFlag.normal,
    critical: bool = False,
) -> LabItem:
    return LabItem(
        code=code,
        name=code,
        result=result,
        unit=unit,
        reference_range=ref,
        abnormal=flag,
        critical=critical,
    )


def report(report_id: str, days_ago: int, *items: LabItem) -> LabReport:
    at = T - timedelta(days=days_ago)
    return LabReport(
        report_id=report_id,
        card_no="6100000001",
        title="t",
        specimen="血清",
        requesting_department="d",
        clinical_diagnosis="",
        tester="a",
        reviewer="b",
        sampled_at=at,
        reported_at=at,
        reviewed_at=at,
        items=tuple(items),
    )


def test_marks_say_critical_first() -> None:
    assert mark_of(item("A", "1", flag=AbnormalFlag.high, critical=True)) is Mark.critical_high
    assert mark_of(item("A", "1", flag=AbnormalFlag.low, critical=True)) is Mark.critical_low
    assert mark_of(item("A", "1", critical=True)) is Mark.critical
    assert mark_of(item("A", "阳性", flag=AbnormalFlag.abnormal)) is Mark.abnormal
    assert mark_of(item("A", "1")) is Mark.none


def test_changes_compare_with_the_latest_earlier_report_having_the_code() -> None:
    older = report("R1", 300, item("ALT", "20"), item("AST", "30"))
    old = report("R2", 100, item("ALT", "60", flag=AbnormalFlag.high))
    later = report("R4", 1, item("ALT", "10"))  # after the report: never "last time"
    now = report(
        "R3",
        10,
        item("ALT", "40"),
        item("AST", "30"),
        item("GGT", "20"),
        item("CK", "100", unit="IU/L"),
    )
    history = [later, now, old, older, report("R0", 400, item("CK", "5", unit="μkat/L"))]
    changes = changes_since_last_time(now, history)
    assert changes["ALT"].kind is ChangeKind.down
    assert (changes["ALT"].previous_result, changes["ALT"].previous_report_id) == ("60", "R2")
    assert changes["ALT"].flag_changed and changes["ALT"].changed
    assert changes["AST"].kind is ChangeKind.same and not changes["AST"].changed
    assert changes["GGT"].kind is ChangeKind.first
    assert changes["CK"].kind is ChangeKind.not_comparable


def test_history_start_is_three_years_back_even_from_29_february() -> None:
    assert history_start(date(2026, 11, 27), 3).isoformat() == "2023-11-27"
    assert history_start(date(2028, 2, 29), 3).isoformat() == "2025-02-28"


def test_the_local_copy_reads_back_equal() -> None:
    from frontdesk.his.port import ExamReport
    from frontdesk.reports.service import _dump, _load

    lab = report("R1", 3, item("ALT", "60", flag=AbnormalFlag.high, critical=True), item("X", ""))
    exam = ExamReport(
        report_id="R2",
        card_no="6100000001",
        title="胸部CT平扫",
        modality="CT",
        body_part="胸部",
        method="平扫",
        findings="未见异常。",
        impression="正常。",
        requesting_department="呼吸内科",
        reporting_doctor="甲",
        reviewing_doctor="乙",
        examined_at=T,
        reported_at=T,
        reviewed_at=T + timedelta(hours=1),
    )
    assert _load(_dump(lab)) == lab
    assert _load(_dump(exam)) == exam
