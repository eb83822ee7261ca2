"""A payment at 23:59:58 hospital time that WeChat's clearing books 3 s later, on the next
day's bill (the Pay simulator's ``bill_lag_seconds``): the day's run files it as
``cross_day`` waiting for the other day, with no alarm; once the next day runs, the two
halves match and both close automatically. Nothing else is flagged on either day."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service as recon
from frontdesk.sims.his_sim import models as hm
from tests.billing.conftest import World
from tests.billing.helpers import drain, his_rows
from tests.recon_e2e.helpers import bill_time, diffs_of, pay_jsapi, run_daily, run_of, unpaid_ids
from tests.reconciliation.helpers import SH


async def test_a_payment_at_midnight_billed_the_next_day_is_no_alarm(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    pay_sim.sim.config.bill_lag_seconds = 3
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    early = await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    clock.set(datetime.combine(day, time(23, 59, 58), tzinfo=SH))
    late = await pay_jsapi(world, pay_sim, mine[1:])
    await drain(container)  # settled in the HIS at once, still on the day
    assert late.paid_at is not None and late.paid_at.astimezone(SH).date() == day
    [settled] = await his_rows(his_sim, hm.settlement, payment_ref=late.out_trade_no)
    assert settled.self_pay_fen == late.amount_fen
    # WeChat's bills: the day's has the early payment only, the next day's the late one.
    assert [x.out_trade_no for x in pay_sim.sim.bill_lines(day)] == [early.out_trade_no]
    [billed] = pay_sim.sim.bill_lines(day + timedelta(days=1))
    assert billed.out_trade_no == late.out_trade_no
    assert billed.at == late.paid_at + timedelta(seconds=3)

    clock.set(bill_time(day))
    await run_daily(container, clock)
    run = await run_of(container, day)
    assert (run.state, run.bill_lines, run.matched, run.differences) == ("reconciled", 1, 1, 1)
    [half] = await diffs_of(container)
    assert (half.out_trade_no, half.diff_class, half.reason, half.status) == (
        late.out_trade_no,
        "cross_day",
        "short",
        "pending_other_day",
    )
    async with container.db.session() as s:
        assert (await recon.alarms(s)).unresolved == 0  # waiting is no alarm

    clock.set(bill_time(day + timedelta(days=1)))
    await run_daily(container, clock)
    run = await run_of(container, day + timedelta(days=1))
    assert (run.state, run.bill_lines, run.ledger_entries, run.his_records) == (
        "reconciled",
        1,
        0,
        0,
    )
    diffs = await diffs_of(container)
    assert [(d.day_on, d.out_trade_no, d.diff_class, d.status, d.resolution) for d in diffs] == [
        (day, late.out_trade_no, "cross_day", "auto_resolved", "matched_across_days"),
        (
            day + timedelta(days=1),
            late.out_trade_no,
            "cross_day",
            "auto_resolved",
            "matched_across_days",
        ),
    ]
    async with container.db.session() as s:
        assert (await recon.alarms(s)).unresolved == 0
