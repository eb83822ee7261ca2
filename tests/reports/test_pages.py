"""Report pages end to end: a phone signed in through the WeChat simulator, cards bound
through the real pages, reports read from the demo HIS through the real bridge client."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from frontdesk.core.clock import FrozenClock
from frontdesk.reports.models import CachedCardList, CachedLabItem, CachedReport
from tests.reports.helpers import (
    audit_rows,
    count,
    lab_item,
    phone_with_cards,
    put_lab_report,
    report_links,
    sim_patients,
    sim_report_ids,
)


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


async def test_list_shows_the_active_cards_reviewed_reports_newest_first(
    env: Any, his_sim: Any, sms_sim: Any
) -> None:
    first, second = await sim_patients(his_sim, count=2)
    phone, openid = await phone_with_cards(env, sms_sim, "张三", [first, second])
    page = await phone.get("/h5/reports")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    expected = await sim_report_ids(his_sim, first.card_no)
    assert len(expected) == 6
    assert report_links(page) == expected
    assert "共 6 份已审核报告" in page.text
    # Not the other card's reports, and the holder's name is masked.
    for other in await sim_report_ids(his_sim, second.card_no):
        assert other not in page.text
    assert first.name not in page.text
    # Filter by type.
    labs = await phone.get("/h5/reports", params={"kind": "lab"})
    assert report_links(labs) == await sim_report_ids(his_sim, first.card_no, kind="lab")
    exams = await phone.get("/h5/reports", params={"kind": "exam"})
    assert report_links(exams) == await sim_report_ids(his_sim, first.card_no, kind="exam")
    # Each list view is audited against the card.
    rows = await audit_rows(env, action="report.list")
    assert len(rows) == 3
    assert {r.actor for r in rows} == {f"patient:{openid}"}
    assert rows[0].detail["shown"] == 6


async def test_date_filter_is_inclusive_in_hospital_days(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    # 2026-11-20 23:30 in Shanghai is 15:30 UTC: it belongs to the 20th, not the 21st.
    late = clock.at_local(clock.today() - timedelta(days=7), __import__("datetime").time(23, 30))
    await put_lab_report(
        his_sim,
        report_id="RLATE",
        card_no=p.card_no,
        sampled_at=late - timedelta(hours=3),
        items=[lab_item("GLU", "葡萄糖", "5.1")],
    )
    day = (clock.today() - timedelta(days=7)).isoformat()
    next_day = (clock.today() - timedelta(days=6)).isoformat()
    same_day = await phone.get("/h5/reports", params={"start": day, "end": day})
    assert report_links(same_day) == ["RLATE"]
    after = await phone.get("/h5/reports", params={"start": next_day, "end": next_day})
    assert "RLATE" not in report_links(after)


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "xray"},
        {"start": "2026-13-01"},
        {"start": "2026-11-20", "end": "2026-11-01"},
        {"start": "'; DROP TABLE report_cache;--"},
        {"page": "-1"},
        {"page": "9" * 40},
        {"kind": "lab\x00"},
    ],
)
async def test_a_bad_filter_is_refused_and_reads_nothing(
    env: Any, his_sim: Any, sms_sim: Any, params: dict[str, str]
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    page = await phone.get("/h5/reports", params=params)
    assert page.status_code == 422
    assert "筛选条件有误" in page.text
    assert report_links(page) == []
    assert await audit_rows(env, action="report.list") == []
    assert await count(env, CachedCardList) == 0
    assert await count(env, CachedLabItem) == 0
    assert await count(env, CachedReport) == 0


async def test_lab_report_page_marks_flags_in_words_and_what_changed(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, openid = await phone_with_cards(env, sms_sim, "张三", [p])
    before = clock.now() - timedelta(days=90)
    await put_lab_report(
        his_sim,
        report_id="RPREV",
        card_no=p.card_no,
        sampled_at=before,
        items=[
            lab_item("GLU", "葡萄糖", "5.2"),
            lab_item("ALT", "丙氨酸氨基转移酶", "30", "U/L", "9-50"),
            lab_item("HBsAg", "乙肝表面抗原", "阴性", "", "阴性"),
            lab_item("K", "钾", "4.1", "mmol/L", "3.5-5.3"),
        ],
    )
    await put_lab_report(
        his_sim,
        report_id="RNOW",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(days=1),
        items=[
            lab_item("GLU", "血糖(葡萄糖)", "25.3", abnormal="high", critical=True),
            lab_item("ALT", "丙氨酸氨基转移酶", "30", "U/L", "9-50"),
            lab_item("HBsAg", "乙肝表面抗原", "阳性", "", "阴性", abnormal="abnormal"),
            lab_item("K", "钾", "3.1", "mmol/L", "", abnormal="low"),
            lab_item("CRP", "C反应蛋白", ">1000", "mg/L", "<10", abnormal="high"),
        ],
    )
    page = await phone.get("/h5/reports/RNOW")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    # Critical values: a notice to contact the hospital, and the mark in words.
    assert 'class="critical-notice" role="alert"' in text
    assert "请立即联系医院" in text
    rows = dict(re.findall(r'data-code="([^"]+)" data-mark="([a-z_]+)"', text))
    assert rows == {
        "GLU": "critical_high",
        "ALT": "none",
        "HBsAg": "abnormal",
        "K": "low",
        "CRP": "high",
    }
    assert "危急值·偏高" in text and "偏低" in text and "异常" in text
    # Malformed HIS data shown as printed: a missing range says so; text results stay text.
    assert "未提供" in text
    assert "&gt;1000" in text and "阳性" in text
    # Collection, receipt and report times (the demo LIS receives specimens 40 min later).
    received = (clock.now() - timedelta(days=1) + timedelta(minutes=40)).astimezone(clock.tz)
    assert "接收时间" in text
    assert received.strftime("%Y-%m-%d %H:%M") in text
    # Changed since last time, matched by code although the name changed.
    changes = dict(re.findall(r'data-change="([a-z_]+)">\s*([^<]*)', text))
    assert set(changes) == {"up", "same", "different", "down"}
    assert "上次 5.2 ↑" in changes["up"]
    assert "较上次有变化" in changes["up"]
    assert "上次 阴性" in changes["different"]
    assert "参考范围变更" in changes["down"]  # the range went missing
    assert "较上次有变化" not in changes["same"]
    # Facts of the report, and no full name.
    for fact in ("血清", "内分泌科", "2型糖尿病", "王检验", "李审核"):
        assert fact in text
    assert p.name not in text
    [view] = await audit_rows(env, action="report.view")
    assert (view.actor, view.record_type, view.record_id) == (f"patient:{openid}", "report", "RNOW")
    assert view.card_id is not None and view.detail["card_no"] == p.card_no


async def test_exam_report_page(env: Any, his_sim: Any, sms_sim: Any) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    [exam_id, *_] = await sim_report_ids(his_sim, p.card_no, kind="exam")
    exam = await env.container.services["his"].report(exam_id)
    page = await phone.get(f"/h5/reports/{exam_id}")
    assert page.status_code == 200
    for value in (
        exam.modality,
        exam.body_part,
        exam.method,
        exam.findings,
        exam.impression,
        exam.reporting_doctor,
        exam.reviewing_doctor,
    ):
        assert value in page.text
    assert "检查所见" in page.text and "诊断意见" in page.text


async def test_unreviewed_held_and_unknown_reports_are_not_found(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    await put_lab_report(
        his_sim,
        report_id="RDRAFT",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(hours=5),
        items=[lab_item("GLU", "葡萄糖", "5.0")],
        reviewed=False,
    )
    await put_lab_report(
        his_sim,
        report_id="RHELD",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(hours=4),
        items=[lab_item("GLU", "葡萄糖", "5.0")],
        reviewed_after=timedelta(hours=3),  # reviewed an hour ago
    )
    monkeypatch.setattr(env.container.settings, "reports_hold_hours", {"lab": 2, "exam": 0})
    for report_id in ("RDRAFT", "RHELD", "R999999999", "nope/../../x", "R" * 33):
        page = await phone.get(f"/h5/reports/{report_id}")
        assert page.status_code == 404, report_id
        assert "RHELD" not in page.text
    listing = await phone.get("/h5/reports")
    assert "RHELD" not in report_links(listing) and "RDRAFT" not in report_links(listing)
    assert await audit_rows(env, action="report.view") == []
    # Once the hold is over the report is there.
    clock.advance(hours=1, minutes=1)
    assert (await phone.get("/h5/reports/RHELD")).status_code == 200
    assert "RHELD" in report_links(await phone.get("/h5/reports"))


async def test_the_local_copy_is_used_only_while_fresh(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock, his_secret: str
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    expected = await sim_report_ids(his_sim, p.card_no)
    assert report_links(await phone.get("/h5/reports")) == expected
    assert (await phone.get(f"/h5/reports/{expected[0]}")).status_code == 200
    [lab_id, *_] = await sim_report_ids(his_sim, p.card_no, kind="lab")
    assert (await phone.get(f"/h5/reports/{lab_id}")).status_code == 200
    # The HIS goes away: the fresh copy still answers (the bridge is not asked).
    from frontdesk.his.bridge import HttpHisGateway

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("HIS down", request=request)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(refuse), base_url="http://his-sim"
    ) as down:
        env.container.services["his"] = HttpHisGateway(
            base_url="http://his-sim",
            key_id="test-key",
            secret=his_secret,
            backoff_seconds=0.0,
            attempts=1,
            client=down,
        )
        assert report_links(await phone.get("/h5/reports")) == expected
        assert (await phone.get(f"/h5/reports/{expected[0]}")).status_code == 200
        # Past the cache time the copy is not used: the page says the HIS is unreachable.
        clock.advance(seconds=env.container.settings.reports_cache_seconds + 1)
        stale = await phone.get("/h5/reports")
        assert stale.status_code == 503
        assert "医院系统暂时无法访问" in stale.text
        assert report_links(stale) == []
        assert (await phone.get(f"/h5/reports/{expected[0]}")).status_code == 503
    # And the purge job deletes the expired copies.
    from frontdesk.core import outbox
    from frontdesk.core.worker import Worker
    from frontdesk.reports import jobs as _jobs  # noqa: F401 - registers the jobs

    assert await count(env, CachedReport) == 6
    assert await count(env, CachedLabItem) > 0  # the opened lab report's items
    async with env.container.db.session() as s:
        await outbox.enqueue(s, "reports.purge_cache")
    await Worker(env.container).drain()
    assert await count(env, CachedReport) == 0
    assert await count(env, CachedCardList) == 0


def malformed_his(his_secret: str, item: dict[str, Any]) -> Any:
    """An HIS agent that answers every report request with this one lab item (as a broken
    agent would): no signature check needed, the bridge client only parses the answer."""
    from frontdesk.his.bridge import HttpHisGateway

    body = {
        "kind": "lab",
        "exam": None,
        "lab": {
            "report_id": "RBAD",
            "card_no": "6100000001",
            "title": "生化",
            "specimen": "血清",
            "requesting_department": "内分泌科",
            "clinical_diagnosis": "",
            "tester": "a",
            "reviewer": "b",
            "sampled_at": "2026-11-26T01:00:00+00:00",
            "reported_at": "2026-11-26T02:00:00+00:00",
            "reviewed_at": "2026-11-26T03:00:00+00:00",
            "items": [item],
        },
    }
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body)),
        base_url="http://broken-his",
    )
    return HttpHisGateway(
        base_url="http://broken-his", key_id="k", secret=his_secret, attempts=1, client=client
    )


async def test_a_report_the_bridge_cannot_read_is_refused_cleanly(
    env: Any, his_sim: Any, sms_sim: Any, his_secret: str
) -> None:
    """A field missing altogether (not just empty) or an unknown flag is a malformed HIS
    answer: the bridge refuses it, the page says the HIS could not be read, nothing is kept."""
    [p] = await sim_patients(his_sim, count=1)
    phone, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    no_range = lab_item("GLU", "葡萄糖", "5.0")
    del no_range["reference_range"]
    odd_flag = lab_item("ALT", "丙氨酸氨基转移酶", "88", "U/L", "9-50", abnormal="HH")
    for item in (no_range, odd_flag):
        env.container.services["his"] = malformed_his(his_secret, item)
        page = await phone.get("/h5/reports/RBAD")
        assert page.status_code == 503
        assert "医院系统暂时无法访问" in page.text
        assert "葡萄糖" not in page.text and "丙氨酸" not in page.text
    assert await audit_rows(env, action="report.view") == []
    assert await count(env, CachedReport) == 0
