"""Finance's reconciliation pages: the day's report and differences with their definitions,
maker-checker through the console (the proposer cannot approve), exports with the page's
numbers, the month summary, the alarms on the dashboard and the health page, and roles."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service
from frontdesk.reconciliation.errors import BillRejected
from frontdesk.reconciliation.models import ReconDifference, ReconProposal
from frontdesk.sims.recon_day import MCHID, generate_day
from tests.console.conftest import audit_rows, count_rows, create_staff, csrf_from, sign_in
from tests.reconciliation.helpers import SH, MemoryLedger, bill_text

DAY = date(2026, 11, 25)


@pytest.fixture
async def other_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def reconciled_day(db: AsyncSession, clock: FrozenClock, app: Any) -> MemoryLedger:
    g = generate_day(DAY, tz=SH, clean=40, each=2)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    app.state.container.services["ledger"] = ledger
    await service.reconcile(
        db,
        day=DAY,
        bill_lines=bill_text(g.bill).splitlines(),
        bill_sha1="a" * 40,
        his_records=g.his,
        ledger=ledger,
        mchid=MCHID,
        now=clock.now(),
        policy=service.Policy(),
    )
    return ledger


def cells(html: str, testid: str, row: str) -> list[str]:
    table = html[html.index(f'data-testid="{testid}"') :]
    found = re.search(rf'<tr data-trade-type="{row}">(.*?)</tr>', table, re.S)
    assert found is not None
    return [
        re.sub(r"<[^>]+>", "", c).strip()
        for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", found.group(1), re.S)
    ]


async def test_the_day_page_shows_the_report_differences_and_definitions(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    await reconciled_day(db, clock, app)
    await sign_in(client, clock, await create_staff(db, clock, username="fin", role=Role.finance))

    page = await client.get(f"/console/reconciliation/day/{DAY.isoformat()}")

    assert page.status_code == 200
    report = await service.day_report(db, DAY)
    total = cells(page.text, "recon-report", "total")
    assert total[1:4] == [
        str(report.total.pay_count),
        f"{report.total.pay_fen // 100}.{report.total.pay_fen % 100:02d}",
        str(report.total.refund_count),
    ]
    diffs = await service.differences(db, day=DAY)
    assert len(re.findall(r'<tr data-difference="\d+" data-class=', page.text)) == len(
        [d for d in diffs if d.resolved_by is None]
    )
    assert "长款：微信账单中有一笔支付或退款" in page.text  # the definitions are shown
    assert "跨日" in page.text
    days = await client.get("/console/reconciliation")
    assert f'data-day="{DAY.isoformat()}"' in days.text
    month = await client.get("/console/reconciliation/month/2026-11")
    assert cells(month.text, "recon-month", "total")[1] == str(report.total.pay_count)


async def test_maker_checker_in_the_console(
    client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    app: Any,
) -> None:
    ledger = await reconciled_day(db, clock, app)
    maker = await create_staff(db, clock, username="maker", role=Role.finance)
    checker = await create_staff(db, clock, username="checker", role=Role.finance)
    csrf_a = await sign_in(client, clock, maker)
    csrf_b = await sign_in(other_client, clock, checker)
    row = next(d for d in await service.differences(db, day=DAY) if d.diff_class == "unsettled")

    proposed = await client.post(
        f"/console/reconciliation/differences/{row.id}/propose",
        data={"csrf_token": csrf_a, "action": "settle", "reason": "HIS 当晚停机", "amount": ""},
    )
    [proposal] = (await db.execute(select(ReconProposal))).scalars().all()
    own = await client.post(
        f"/console/reconciliation/proposals/{proposal.id}/approve", data={"csrf_token": csrf_a}
    )
    own_page = await client.get(own.headers["location"])
    still = (
        await db.execute(select(ReconDifference.status).where(ReconDifference.id == row.id))
    ).scalar_one()
    approved = await other_client.post(
        f"/console/reconciliation/proposals/{proposal.id}/approve", data={"csrf_token": csrf_b}
    )

    assert proposed.status_code == 303
    assert own.status_code == 303 and "recon_own_proposal" in own.headers["location"]
    assert "须由另一人批准" in own_page.text
    assert still == "proposed"
    assert approved.status_code == 303
    await db.refresh(row)
    assert (row.status, row.resolution, row.resolution_note) == (
        "resolved",
        "settle",
        "HIS 当晚停机",
    )
    assert [a for a in ledger.actions if a[0] == "settle"] == [
        ("settle", row.out_trade_no, f"staff:{checker.id}", None)
    ]
    denied = [
        a for a in await audit_rows(db, action="reconciliation.approve") if a.outcome == "denied"
    ]
    assert [a.actor for a in denied] == [f"staff:{maker.id}"]


@pytest.mark.parametrize(
    "form",
    [
        {"action": "bogus", "reason": "because"},
        {"action": "refund", "reason": "too much", "amount": "99999.00"},
        {"action": "refund", "reason": "bad amount", "amount": "1.234"},
        {"action": "accept", "reason": "x"},
    ],
)
async def test_a_proposal_that_does_not_fit_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any, form: dict[str, str]
) -> None:
    await reconciled_day(db, clock, app)
    csrf = await sign_in(
        client, clock, await create_staff(db, clock, username="fin", role=Role.finance)
    )
    row = next(d for d in await service.differences(db, day=DAY) if d.diff_class == "duplicate")

    answer = await client.post(
        f"/console/reconciliation/differences/{row.id}/propose", data={"csrf_token": csrf, **form}
    )

    assert answer.status_code == 303 and "recon_action_invalid" in answer.headers["location"]
    assert await count_rows(db, ReconProposal) == 0
    await db.refresh(row)
    assert row.status == "open"


async def test_exports_have_the_pages_numbers(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    await reconciled_day(db, clock, app)
    await sign_in(client, clock, await create_staff(db, clock, username="fin", role=Role.finance))
    page = await client.get(f"/console/reconciliation/day/{DAY.isoformat()}")
    total = cells(page.text, "recon-report", "total")

    details_csv = await client.get(
        f"/console/reconciliation/day/{DAY.isoformat()}/export.csv?part=details"
    )
    report_csv = await client.get(
        f"/console/reconciliation/day/{DAY.isoformat()}/export.csv?part=report"
    )
    diffs_csv = await client.get(
        f"/console/reconciliation/day/{DAY.isoformat()}/export.csv?part=differences"
    )
    xlsx = await client.get(f"/console/reconciliation/day/{DAY.isoformat()}/export.xlsx")

    assert details_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(details_csv.content.decode("utf-8-sig"))))
    items = await service.items(db, DAY)
    assert len(rows) == 1 + len(items)
    bill_sum = sum(Decimal(r[5]) for r in rows[1:] if r[5] and r[0] == "支付")
    report_rows = list(csv.reader(io.StringIO(report_csv.content.decode("utf-8-sig"))))
    assert report_rows[-1] == total  # the report CSV's total row is the page's
    report = await service.day_report(db, DAY)
    assert bill_sum == Decimal(report.total.pay_fen) / 100
    diff_rows = list(csv.reader(io.StringIO(diffs_csv.content.decode("utf-8-sig"))))
    assert len(diff_rows) == 1 + len(await service.differences(db, day=DAY))
    book = load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames == ["报表", "明细", "差异"]
    last = [c.value for c in list(book["报表"].iter_rows())[-1]]
    # Spreadsheet numbers are doubles: read back, they print as the page's exact yuan.
    assert (last[1], Decimal(str(last[2]))) == (report.total.pay_count, Decimal(total[2]))
    assert Decimal(str(last[5])).quantize(Decimal("0.00001")) == Decimal(total[5])
    assert book["明细"].max_row == 1 + len(items)
    assert len(await audit_rows(db, action="reconciliation.export")) == 4


async def test_alarms_show_on_the_dashboard_and_the_health_page(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    await reconciled_day(db, clock, app)
    await service.record_failure(
        db,
        day=date(2026, 11, 26),
        error=BillRejected("summary", "summary 3 rows, details 2"),
        now=clock.now(),
    )
    await sign_in(client, clock, await create_staff(db, clock, username="root", role=Role.admin))
    unresolved, failed = (await service.alarms(db)).unresolved, 1

    dashboard = await client.get("/console/")
    health = await client.get("/console/health")

    tile = re.search(r'data-tile="reconciliation">.*?tile-value">([^<]*)<', dashboard.text, re.S)
    assert tile is not None and tile.group(1) == str(unresolved) and unresolved > 0
    assert "有账单无法获取或读取" in dashboard.text
    panel = health.text[health.text.index('data-panel="reconciliation"') :]
    assert "2026-11-26 · failed · summary: summary 3 rows, details 2" in panel
    assert f"<td>{failed}</td>" in panel


async def test_only_finance_and_admin_may_use_the_pages(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    await reconciled_day(db, clock, app)
    csrf = await sign_in(
        client, clock, await create_staff(db, clock, username="cash", role=Role.cashier)
    )

    page = await client.get("/console/reconciliation")
    export = await client.get(f"/console/reconciliation/day/{DAY.isoformat()}/export.csv")
    run = await client.post(
        "/console/reconciliation/run", data={"csrf_token": csrf, "day": "2026-11-20"}
    )

    assert (page.status_code, export.status_code, run.status_code) == (403, 403, 403)


async def test_staff_can_queue_a_past_day_and_not_a_future_one(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    csrf = await sign_in(
        client, clock, await create_staff(db, clock, username="fin", role=Role.finance)
    )
    from frontdesk.core.outbox import OutboxJob

    future = await client.post(
        "/console/reconciliation/run", data={"csrf_token": csrf, "day": "2026-11-27"}
    )
    assert future.status_code == 422
    assert await count_rows(db, OutboxJob) == 0
    queued = await client.post(
        "/console/reconciliation/run", data={"csrf_token": csrf, "day": "2026-11-20"}
    )
    assert queued.status_code == 303
    [job] = (await db.execute(select(OutboxJob))).scalars().all()
    assert (job.name, job.payload) == (service.RUN_JOB, {"day": "2026-11-20"})
    assert csrf_from((await client.get("/console/reconciliation?notice=queued")).text)


async def test_an_empty_day_and_a_missing_bill_with_payments_are_told_apart(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: Any
) -> None:
    await reconciled_day(db, clock, app)  # a day with a bill: its SHA-1 is shown
    empty, missing = date(2026, 11, 23), date(2026, 11, 24)
    await service.reconcile(
        db,
        day=empty,
        bill_lines=None,  # WeChat has no bill: no trades that day
        bill_sha1=None,
        his_records=[],
        ledger=MemoryLedger(),
        mchid=MCHID,
        now=clock.now(),
        policy=service.Policy(),
    )
    await service.record_failure(
        db,
        day=missing,
        error=BillRejected("no_statement_but_paid", "our ledger has 3 WeChat payment(s)"),
        now=clock.now(),
    )
    await sign_in(client, clock, await create_staff(db, clock, username="fin", role=Role.finance))

    empty_page = await client.get(f"/console/reconciliation/day/{empty.isoformat()}")
    billed_page = await client.get(f"/console/reconciliation/day/{DAY.isoformat()}")
    missing_page = await client.get(f"/console/reconciliation/day/{missing.isoformat()}")
    days = await client.get("/console/reconciliation")

    assert empty_page.status_code == 200
    assert '<span data-testid="empty-day">当日无微信支付交易（微信支付未生成账单）</span>' in (
        empty_page.text
    )
    assert "SHA-1" not in empty_page.text
    assert 'data-testid="empty-day"' not in billed_page.text
    assert f"SHA-1 <code>{'a' * 40}</code>" in billed_page.text
    assert (
        "微信支付当日无账单，但本方流水记有微信支付缴费或退费 — our ledger has 3 WeChat payment(s)"
        in missing_page.text
    )
    row = days.text[days.text.index(f'data-day="{empty.isoformat()}"') :]
    row = row[: row.index("</tr>")]
    assert "当日无微信支付交易" in row
    other = days.text[days.text.index(f'data-day="{DAY.isoformat()}"') :]
    assert "当日无微信支付交易" not in other[: other.index("</tr>")]
