"""The console dashboard's money tiles: payments paid and refunds that succeeded on
today's hospital date (Asia/Shanghai; T0 = 2026-11-27 09:00 there), counted and summed in
fen, edges of the day included and excluded exactly."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession
from tests.console.conftest import create_staff, sign_in

from frontdesk.billing import models as bm
from frontdesk.billing import service
from frontdesk.console import billing as _console_billing  # noqa: F401 - registers the tiles
from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock

DAY_START = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)  # 2026-11-27 00:00 in Shanghai
DAY_LAST = datetime(2026, 11, 27, 15, 59, 59, tzinfo=UTC)  # 23:59:59 there
YESTERDAY = datetime(2026, 11, 26, 15, 59, 59, tzinfo=UTC)
NOON = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


async def _payment(
    db: AsyncSession, n: int, fen: int, *, state: str = "paid", paid_at: datetime | None
) -> bm.BillingPayment:
    p = bm.BillingPayment(
        out_trade_no=f"FDT{n:08d}",
        channel="JSAPI",
        card_no="6100000009",
        description="门诊缴费",
        total_fen=fen,
        insurance_fen=0,
        amount_fen=fen,
        state=state,
        actor="patient:o-tiles",
        created_at=paid_at or NOON,
        expires_at=NOON,
        updated_at=NOON,
        paid_at=paid_at,
    )
    db.add(p)
    await db.flush()
    return p


async def _refund(
    db: AsyncSession, p: bm.BillingPayment, seq: int, fen: int, *, state: str, at: datetime | None
) -> None:
    db.add(
        bm.BillingRefund(
            payment_id=p.id,
            seq=seq,
            out_refund_no=f"{p.out_trade_no}R{seq}",
            amount_fen=fen,
            kind="staff",
            reason="staff",
            actor="finance1",
            state=state,
            created_at=at or NOON,
            updated_at=at or NOON,
            succeeded_at=at,
        )
    )
    await db.flush()


async def _day(db: AsyncSession) -> None:
    await _payment(db, 1, 1000, paid_at=DAY_START)  # first instant of the day: counts
    await _payment(db, 2, 2550, paid_at=DAY_LAST)  # last second: counts
    old = await _payment(db, 3, 7000, paid_at=YESTERDAY)  # yesterday: not today's
    await _payment(db, 4, 500, state="pending", paid_at=None)  # not paid
    await _payment(db, 5, 900, state="closed", paid_at=None)  # never paid
    partly = await _payment(db, 6, 3000, paid_at=NOON)  # paid, then partly refunded: counts
    await _refund(db, partly, 1, 1200, state="success", at=NOON)  # counts
    await _refund(db, partly, 2, 300, state="processing", at=None)  # not yet refunded
    await _refund(db, old, 1, 100, state="success", at=YESTERDAY)  # yesterday's
    await _refund(db, old, 2, 800, state="success", at=DAY_LAST)  # yesterday's payment, today
    await _refund(db, old, 3, 50, state="closed", at=None)  # failed refund


async def test_day_totals_count_and_sum_the_hospital_date(
    db: AsyncSession, clock: FrozenClock
) -> None:
    empty = await service.day_totals(db, day=clock.today())
    assert (empty.payments, empty.paid_fen, empty.refunds, empty.refunded_fen) == (0, 0, 0, 0)
    await _day(db)

    today = await service.day_totals(db, day=clock.today())
    yesterday = await service.day_totals(db, day=YESTERDAY.date())

    assert str(today.day) == "2026-11-27"
    assert (today.payments, today.paid_fen) == (3, 1000 + 2550 + 3000)
    assert (today.refunds, today.refunded_fen) == (2, 1200 + 800)
    assert (yesterday.payments, yesterday.paid_fen, yesterday.refunds) == (1, 7000, 1)


async def test_the_cashier_sees_todays_payments_and_refunds_on_the_dashboard(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    await _day(db)
    cashier = await create_staff(db, clock, username="tina", role=Role.cashier)
    await sign_in(client, clock, cashier)

    page = await client.get("/console/")

    assert page.status_code == 200
    tiles = dict(re.findall(r'data-tile="(\w+)">.*?tile-value">([^<]+)<', page.text, re.S))
    assert tiles == {"payments_today": "3 · ¥65.50", "refunds_today": "2 · ¥20.00"}
