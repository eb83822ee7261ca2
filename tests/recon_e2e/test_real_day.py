"""Billing and reconciliation together, end to end: a real day of JSAPI, Native and
payment-code payments and an item refund (HIS, then WeChat), the settlement saga in the
demo HIS, then the next morning the real ``reconciliation.daily`` job with the app's
container: no difference, the report's counts and fen sums are what was paid and refunded
by trade type, and the XLSX/CSV exports carry the same numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service as recon
from tests.billing.conftest import World
from tests.billing.helpers import drain
from tests.console.conftest import create_staff, sign_in
from tests.recon_e2e.helpers import (
    Paid,
    bill_time,
    diffs_of,
    pay_jsapi,
    pay_micropay,
    pay_native,
    refund_an_item,
    run_daily,
    run_of,
    unpaid_ids,
)


@pytest.fixture
async def console(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.env.front_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def make_day(world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock) -> Paid:
    paid = Paid()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    jsapi = await pay_jsapi(world, pay_sim, mine[:1])
    clock.advance(seconds=30)
    native = await pay_native(world, pay_sim, clock, world.mine.card_no, mine[1:])
    clock.advance(seconds=30)
    family = await unpaid_ids(his_sim, world.family.card_no)
    micro = await pay_micropay(world, pay_sim, clock, world.family.card_no, family[:1])
    await drain(world.env.container)  # the saga settles all three in the HIS
    for p in (jsapi, native, micro):
        paid.add("payment", p.channel, p.amount_fen)
        paid.numbers[p.channel] = p.out_trade_no
    clock.advance(seconds=60)
    refund = await refund_an_item(world, his_sim, pay_sim, clock, mine[0])
    paid.add("refund", "JSAPI", refund.amount_fen)
    return paid


async def test_a_real_day_reconciles_without_a_difference(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock, console: httpx.AsyncClient
) -> None:
    container = world.env.container
    day = clock.local_now().date()
    paid = await make_day(world, his_sim, pay_sim, clock)

    clock.set(bill_time(day))
    await run_daily(container, clock)

    run = await run_of(container, day)
    assert (run.state, run.error_code, run.differences) == ("reconciled", None, 0)
    assert run.bill_lines == run.ledger_entries == run.his_records == run.matched == 4
    assert await diffs_of(container) == []
    async with container.db.session() as s:
        report = await recon.day_report(s, day)
    by_type = {r.trade_type: r for r in report.rows}
    assert set(by_type) == {"JSAPI", "NATIVE", "MICROPAY"}
    for trade_type, row in by_type.items():
        pays = paid.payments[trade_type]
        refunds = paid.refunds.get(trade_type, [])
        assert (row.pay_count, row.pay_fen, row.refund_count, row.refund_fen) == (
            len(pays),
            sum(pays),
            len(refunds),
            sum(refunds),
        )
        assert row.unmatched_count == 0 and row.matched_count == len(pays) + len(refunds)
        # WeChat's fee: 0.60% of every fen, exact in milli-fen (refunds give it back).
        assert row.fee_milli_fen == (sum(pays) - sum(refunds)) * 6
    total_pay = sum(sum(v) for v in paid.payments.values())
    total_refund = sum(sum(v) for v in paid.refunds.values())
    assert (report.total.pay_fen, report.total.refund_fen) == (total_pay, total_refund)
    assert report.total.net_milli_fen == (total_pay - total_refund) * 1000 - (
        (total_pay - total_refund) * 6
    )

    # The exports carry the same numbers.
    async with container.db.session() as s:
        staff = await create_staff(s, clock, username="fin", role=Role.finance)
    await sign_in(console, clock, staff)
    base = f"/console/reconciliation/day/{day.isoformat()}"
    report_csv = await console.get(f"{base}/export.csv?part=report")
    assert report_csv.status_code == 200
    rows = list(csv.reader(io.StringIO(report_csv.content.decode("utf-8-sig"))))
    exported = {r[0]: r for r in rows[1:]}
    for trade_type, row in by_type.items():
        line = exported[trade_type]
        assert (int(line[1]), Decimal(line[2]), int(line[3]), Decimal(line[4])) == (
            row.pay_count,
            Decimal(row.pay_fen) / 100,
            row.refund_count,
            Decimal(row.refund_fen) / 100,
        )
    details = await console.get(f"{base}/export.csv?part=details")
    detail_rows = list(csv.reader(io.StringIO(details.content.decode("utf-8-sig"))))
    assert len(detail_rows) == 1 + 4
    diffs_csv = await console.get(f"{base}/export.csv?part=differences")
    assert len(list(csv.reader(io.StringIO(diffs_csv.content.decode("utf-8-sig"))))) == 1
    book = load_workbook(io.BytesIO((await console.get(f"{base}/export.xlsx")).content))
    sheet = [[c.value for c in r] for r in book["报表"].iter_rows()]
    last = sheet[-1]
    assert (last[1], Decimal(str(last[2])), last[3], Decimal(str(last[4]))) == (
        3,
        Decimal(total_pay) / 100,
        1,
        Decimal(total_refund) / 100,
    )
    assert book["明细"].max_row == 1 + 4 and book["差异"].max_row == 1
