"""The trend page: one lab item across the card's history, matched by HIS item code,
drawn as an SVG on the server with the reference band, abnormal points and any change of
unit or range shown rather than mixed."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from defusedxml import ElementTree as SafeXml

from frontdesk.core.clock import FrozenClock
from tests.reports.helpers import (
    audit_rows,
    lab_item,
    phone_with_cards,
    put_lab_report,
    sim_patients,
)

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


def charts(html: str) -> list[ElementTree.Element]:
    return [SafeXml.fromstring(s) for s in re.findall(r"<svg .*?</svg>", html, re.S)]


def table_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="[^"]*" data-report-id="([^"]+)"', html)


async def test_trend_follows_the_item_code_and_marks_abnormal_points(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    days = [400, 300, 200, 100, 10]
    values = [
        ("5.2", "normal", False),
        ("7.9", "high", False),
        ("3.1", "low", False),
        ("25.0", "high", True),
        ("5.6", "normal", False),
    ]
    for n, (day, (value, flag, critical)) in enumerate(zip(days, values, strict=True)):
        # The analyser renamed the item; the code stayed.
        name = "葡萄糖" if n < 3 else "空腹血糖(GLU)"
        await put_lab_report(
            his_sim,
            report_id=f"RT{n}",
            card_no=p.card_no,
            sampled_at=clock.now() - timedelta(days=day),
            items=[lab_item("GLU", name, value, abnormal=flag, critical=critical)],
        )
    # Same name, another code: not part of this trend.
    await put_lab_report(
        his_sim,
        report_id="RTX",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(days=50),
        items=[lab_item("GLU-U", "葡萄糖", "阴性", "", "阴性")],
    )
    phone, openid = await phone_with_cards(env, sms_sim, "张三", [p])
    page = await phone.get("/h5/reports/RT4/trend/GLU")
    assert page.status_code == 200
    assert table_rows(page.text) == ["RT4", "RT3", "RT2", "RT1", "RT0"]
    assert "RTX" not in page.text
    [svg] = charts(page.text)
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title") is not None
    assert "空腹血糖(GLU)" in (svg.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
    bands = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "band"]
    assert len(bands) == 1  # one range throughout
    marks = [g.get("class") for g in svg.iter(f"{SVG}g")]
    assert marks == [
        "point mark-none",
        "point mark-high",
        "point mark-low",
        "point mark-critical_high",
        "point mark-none",
    ]
    # The line joins the five points, left to right in time.
    [line] = list(svg.iter(f"{SVG}polyline"))
    xs = [float(pt.split(",")[0]) for pt in (line.get("points") or "").split()]
    assert len(xs) == 5 and xs == sorted(xs)
    # No style attributes (the page's CSP forbids inline styles).
    assert "style=" not in page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
    [row] = await audit_rows(env, action="report.trend")
    assert (row.actor, row.record_id, row.detail["item_code"], row.detail["points"]) == (
        f"patient:{openid}",
        "RT4",
        "GLU",
        5,
    )


async def test_a_change_of_unit_or_range_is_shown_not_mixed(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    series = [
        (300, "85", "μmol/L", "57-111"),
        (200, "90", "μmol/L", "57-111"),
        (100, "88", "μmol/L", "45-104"),  # new analyser: new range
        (10, "1.1", "mg/dL", "0.6-1.3"),  # and then another unit
    ]
    for n, (day, value, unit, ref) in enumerate(series):
        await put_lab_report(
            his_sim,
            report_id=f"RC{n}",
            card_no=p.card_no,
            sampled_at=clock.now() - timedelta(days=day),
            items=[lab_item("SCR", "肌酐", value, unit, ref)],
        )
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    page = await phone.get("/h5/reports/RC3/trend/SCR")
    assert page.status_code == 200
    assert "单位曾经变更（μmol/L / mg/dL）" in page.text
    assert "参考范围曾经变更" in page.text
    umol, mgdl = charts(page.text)  # one chart per unit, never one axis
    assert "μmol/L" in (umol.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
    assert len(list(umol.iter(f"{SVG}g"))) == 3
    assert len(list(mgdl.iter(f"{SVG}g"))) == 1
    umol_bands = [r for r in umol.iter(f"{SVG}rect") if r.get("class") == "band"]
    assert len(umol_bands) == 2
    assert len([x for x in umol.iter(f"{SVG}line") if x.get("class") == "range-change"]) == 1
    # The table says where it changed (newest first: RC3 changed unit, RC2 changed range).
    assert page.text.count("自此单位或参考范围变更") == 2


async def test_text_results_and_censored_values(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    for n, (day, value, flag) in enumerate(
        [(300, "<20", "normal"), (200, "3.4E+05", "high"), (100, ">1.0E+08", "high")]
    ):
        await put_lab_report(
            his_sim,
            report_id=f"RH{n}",
            card_no=p.card_no,
            sampled_at=clock.now() - timedelta(days=day),
            items=[
                lab_item("HBV-DNA", "乙型肝炎病毒DNA定量", value, "IU/mL", "<20", abnormal=flag),
                lab_item(
                    "HBsAg",
                    "乙肝表面抗原",
                    "阳性" if n else "阴性",
                    "",
                    "阴性",
                    abnormal="abnormal" if n else "normal",
                ),
            ],
        )
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    viral = await phone.get("/h5/reports/RH2/trend/HBV-DNA")
    [svg] = charts(viral.text)
    censored = [g.get("class") for g in svg.iter(f"{SVG}g") if "censored" in (g.get("class") or "")]
    assert censored == ["point mark-none censored", "point mark-high censored"]
    # Eight orders of magnitude: a log axis with ticks at powers of ten.
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "y-tick"]
    assert ticks == ["10", "100", "1000", "10000", "1e5", "1e6", "1e7", "1e8"]
    qualitative = await phone.get("/h5/reports/RH2/trend/HBsAg")
    assert charts(qualitative.text) == []
    assert "这些结果不是数值，无法绘图" in qualitative.text
    assert table_rows(qualitative.text) == ["RH2", "RH1", "RH0"]
    # An item the report does not have, or a malformed code: not found, not audited twice.
    for url in ("/h5/reports/RH2/trend/ALT", "/h5/reports/RH2/trend/%3Cscript%3E"):
        assert (await phone.get(url)).status_code == 404
    assert len(await audit_rows(env, action="report.trend")) == 2
