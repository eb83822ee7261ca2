"""Every report endpoint against every kind of caller: only the card's own accounts get a
2xx, and a download link works only for the account it was made for, and only briefly."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pypdf import PdfReader

from frontdesk.core.clock import FrozenClock
from tests.reports.helpers import (
    audit_rows,
    csrf_of,
    lab_item,
    phone_with_cards,
    put_lab_report,
    sim_patients,
    sim_report_ids,
)


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


def pdf_link(page: httpx.Response) -> str:
    found = re.search(r'href="(/h5/reports/[^"]+/pdf\?[^"]+)"', page.text)
    assert found is not None, "no download link on the page"
    return found.group(1).replace("&amp;", "&")


def endpoints(report_id: str) -> list[str]:
    return [
        f"/h5/reports/{report_id}",
        f"/h5/reports/{report_id}/trend/GLU",
    ]


async def test_idor_matrix_over_every_report_endpoint(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    mine, family, stranger_card = await sim_patients(his_sim, count=3)
    for n, card in enumerate((mine, family)):
        await put_lab_report(
            his_sim,
            report_id=f"RGLU{n}",
            card_no=card.card_no,
            sampled_at=clock.now() - timedelta(days=3),
            items=[lab_item("GLU", "葡萄糖", "6.5", abnormal="high")],
        )
    owner, owner_openid = await phone_with_cards(env, sms_sim, "张三", [mine, family])
    other, _ = await phone_with_cards(env, sms_sim, "李四", [stranger_card])
    signed_out = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    )
    # The owner: every endpoint answers, for the active card and the other bound card.
    for report_id in ("RGLU0", "RGLU1"):
        for url in endpoints(report_id):
            assert (await owner.get(url)).status_code == 200, url
        link = pdf_link(await owner.get(f"/h5/reports/{report_id}"))
        got = await owner.get(link)
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/pdf"
    # Another account: not found, the same answer as for an id that does not exist.
    owner_link = pdf_link(await owner.get("/h5/reports/RGLU0"))
    for url in [*endpoints("RGLU0"), owner_link]:
        response = await other.get(url)
        assert response.status_code in {403, 404}, url
        assert b"%PDF" not in response.content
    assert (await other.get("/h5/reports/RGLU0")).text.count("没有找到这份报告") == 1
    # Signed out: sent to WeChat sign-in, nothing shown.
    for url in [*endpoints("RGLU0"), owner_link, "/h5/reports"]:
        response = await signed_out.get(url)
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/wechat/oauth/start?next=")
    await signed_out.aclose()
    # An unbound card: the family card's reports are gone with the binding.
    cards = await owner.get("/h5/cards")
    family_id = re.search(
        rf'data-card-no="{family.card_no}">.*?/h5/cards/(\d+)/unbind', cards.text, re.S
    )
    assert family_id is not None
    confirm = await owner.get(f"/h5/cards/{family_id.group(1)}/unbind")
    done = await owner.post(
        f"/h5/cards/{family_id.group(1)}/unbind", data={"csrf": csrf_of(confirm)}
    )
    assert done.status_code == 303
    for url in endpoints("RGLU1"):
        assert (await owner.get(url)).status_code == 404, url
    # Only the owner's successful reads were audited, each against its card.
    views = await audit_rows(env, action="report.view")
    assert {v.actor for v in views} == {f"patient:{owner_openid}"}
    downloads = await audit_rows(env, action="report.download")
    assert [d.record_id for d in downloads] == ["RGLU0", "RGLU1"]
    trends = await audit_rows(env, action="report.trend")
    assert [t.record_id for t in trends] == ["RGLU0", "RGLU1"]


async def test_download_links_are_bound_to_the_account_and_expire(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await put_lab_report(
        his_sim,
        report_id="RPDF",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(days=2),
        items=[lab_item("GLU", "葡萄糖", "25.3", abnormal="high", critical=True)],
    )
    owner, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    # The same card bound by a family member's account: their own links work, not ours.
    sms_sim.state.sim.per_minute = 5  # a second code to the same phone within the minute
    family, _ = await phone_with_cards(env, sms_sim, "张小三", [p])
    link = pdf_link(await owner.get("/h5/reports/RPDF"))
    query = parse_qs(urlsplit(link).query)
    expires, signature = query["expires"][0], query["signature"][0]
    base = urlsplit(link).path
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    refused = {
        "tampered signature": f"{base}?expires={expires}&signature={flipped}",
        "longer life": f"{base}?expires={int(expires) + 3600}&signature={signature}",
        "no signature": base,
        "junk": f"{base}?expires=abc&signature=%00%27",
        "other report": f"/h5/reports/RPDF2/pdf?expires={expires}&signature={signature}",
    }
    for what, url in refused.items():
        response = await owner.get(url)
        assert response.status_code == 403, what
        assert b"%PDF" not in response.content
    assert (await family.get(link)).status_code == 403
    family_link = pdf_link(await family.get("/h5/reports/RPDF"))
    assert (await family.get(family_link)).status_code == 200
    ok = await owner.get(link)
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    assert ok.headers["content-disposition"].startswith('attachment; filename="report-RPDF-')
    text = PdfReader(io.BytesIO(ok.content)).pages[0].extract_text()
    assert "葡萄糖" in text and "25.3" in text and "危急值" in text
    assert p.card_no in text and p.name not in text
    # Expired: refused, and no PDF.
    clock.advance(seconds=env.container.settings.reports_pdf_link_seconds + 1)
    late = await owner.get(link)
    assert late.status_code == 410
    assert "下载链接已过期" in late.text
    downloads = await audit_rows(env, action="report.download")
    assert len(downloads) == 2  # the family member's and the owner's successful ones


async def test_pdf_of_an_exam_report_reads_back(env: Any, his_sim: Any, sms_sim: Any) -> None:
    [p] = await sim_patients(his_sim, count=1)
    owner, _ = await phone_with_cards(env, sms_sim, "张三", [p])
    [exam_id, *_] = await sim_report_ids(his_sim, p.card_no, kind="exam")
    exam = await env.container.services["his"].report(exam_id)
    got = await owner.get(pdf_link(await owner.get(f"/h5/reports/{exam_id}")))
    assert got.status_code == 200
    reader = PdfReader(io.BytesIO(got.content))
    text = "".join(page.extract_text() for page in reader.pages)
    for value in ("检查报告", exam.body_part, exam.impression, exam.reviewing_doctor, exam_id):
        assert value in text.replace("\n", ""), value
    assert reader.metadata is not None and reader.metadata.title == exam.title
