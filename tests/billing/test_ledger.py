"""The ledger contract with reconciliation (docs/billing.md, "The ledger contract"): entries
of a window, one entry by number, and the three resolution actions (each recorded, each
safe twice)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.billing.conftest import World
from tests.billing.helpers import (
    count,
    drain,
    his_unpaid,
    pay_params,
    payment_row,
    phone_pays,
    start_payment,
)

from frontdesk.billing import errors, service
from frontdesk.billing import models as bm
from frontdesk.billing.schemas import LedgerEntry
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock


async def test_ledger_entries_and_actions(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    start = clock.now()
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    paid_id, page = await start_payment(world.alice, ids[:1])
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    pending_id, _ = await start_payment(world.alice, ids[1:])
    paid = await payment_row(container, paid_id)
    pending = await payment_row(container, pending_id)
    async with container.db.session() as s:
        refund_id = await service.refund_payment(
            s, out_trade_no=paid.out_trade_no, amount_fen=100, reason="对账差错", actor="finance1"
        )
    await drain(container)
    async with container.db.session() as s:
        entries = await service.ledger_entries(
            s, start_at=start - timedelta(minutes=1), end_at=start + timedelta(hours=1)
        )
    by = {(e.kind, e.ledger_id): e for e in entries}
    assert by[("payment", paid_id)] == LedgerEntry(
        kind="payment",
        out_trade_no=paid.out_trade_no,
        out_refund_no=None,
        transaction_id=paid.transaction_id,
        refund_id=None,
        trade_type="JSAPI",
        amount_fen=paid.amount_fen,
        state="paid",
        at=paid.paid_at,
        card_no=world.mine.card_no,
        his_ref=paid.out_trade_no,
        his_state="settled",
        ledger_id=paid_id,
    )
    assert by[("payment", pending_id)].state == "pending" and by[("payment", pending_id)].at is None
    refund = by[("refund", refund_id)]
    assert (refund.out_refund_no, refund.amount_fen, refund.state, refund.his_ref) == (
        f"{paid.out_trade_no}R01",
        100,
        "processing",
        f"{paid.out_trade_no}R01",
    )
    # Money only, of a payment the HIS settled: the HIS still has to book it.
    assert refund.his_state == "pending" and refund.at is None
    # The order: by (at, kind, ledger id), entries without a time first.
    floor = start - timedelta(days=1)
    keys = [((e.at or floor), e.kind, e.ledger_id) for e in entries]
    assert keys == sorted(keys)
    async with container.db.session() as s:
        assert (
            await service.find_ledger_entry(s, out_trade_no=pending.out_trade_no)
            == by[("payment", pending_id)]
        )
        assert (
            await service.find_ledger_entry(
                s, out_trade_no=paid.out_trade_no, out_refund_no=f"{paid.out_trade_no}R01"
            )
            == refund
        )
        assert await service.find_ledger_entry(s, out_trade_no="PNOSUCH0000000") is None
    # Refund success moves it into the success time's window.
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    async with container.db.session() as s:
        done = await service.find_ledger_entry(
            s, out_trade_no=paid.out_trade_no, out_refund_no=f"{paid.out_trade_no}R01"
        )
        after = await service.find_ledger_entry(s, out_trade_no=paid.out_trade_no)
    assert done is not None and done.state == "success" and done.at is not None
    assert after is not None and after.state == "partially_refunded"

    # Actions: each enqueues work and records the history; each safe to call twice.
    for _ in range(2):
        async with container.db.session() as s:
            await service.requery_payment(s, out_trade_no=pending.out_trade_no, actor="finance1")
            await service.retry_settlement(s, out_trade_no=paid.out_trade_no, actor="finance1")
        clock.advance(seconds=1)
    assert (
        await count(container, bm.BillingEvent, payment_id=pending_id, kind="payment.requery") == 2
    )
    assert (
        await count(container, bm.BillingEvent, payment_id=paid_id, kind="settle.retry_requested")
        == 2
    )
    await drain(container)
    async with container.db.session() as s:
        jobs = list(
            await s.scalars(select(outbox.OutboxJob).where(outbox.OutboxJob.status == "dead"))
        )
    assert [(j.name, j.last_error) for j in jobs] == []
    assert len(await his_settlements(his_sim, paid.out_trade_no)) == 1
    with pytest.raises(errors.PaymentNotPaid):
        async with container.db.session() as s:
            await service.retry_settlement(s, out_trade_no=pending.out_trade_no, actor="finance1")
    with pytest.raises(errors.PaymentNotFound):
        async with container.db.session() as s:
            await service.requery_payment(s, out_trade_no="PNOSUCH0000000", actor="finance1")


async def his_settlements(his_sim: Any, ref: str) -> list[Any]:
    from tests.billing.helpers import his_rows

    from frontdesk.sims.his_sim import models as hm

    return await his_rows(his_sim, hm.settlement, payment_ref=ref)


async def test_concurrent_refunds_never_exceed_the_payment(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    row = await payment_row(container, payment_id)
    share = row.amount_fen // 3 + 1  # three of these do not fit; two do

    async def one() -> int | None:
        try:
            async with container.db.session() as s:
                return await service.refund_payment(
                    s,
                    out_trade_no=row.out_trade_no,
                    amount_fen=share,
                    reason="并发",
                    actor="finance1",
                )
        except errors.RefundExceedsPayment:
            return None

    results = await asyncio.gather(*(one() for _ in range(6)))
    assert sum(r is not None for r in results) == 2
    async with container.db.session() as s:
        refunds = list(await s.scalars(select(bm.BillingRefund)))
    assert sum(r.amount_fen for r in refunds) == 2 * share <= row.amount_fen
    assert len({r.out_refund_no for r in refunds}) == len(refunds) == 2
    assert (await payment_row(container, payment_id)).refunded_fen == 2 * share
