"""A payment whose notify never reached us and whose routine query had not succeeded yet
when the day is reconciled (WeChat Pay's API answered 500 to the morning's query): the bill
has it, our ledger has it pending. The run classifies it as ``state``, asks WeChat again as
the system, and the recheck closes it automatically ("late notify confirmed by a query");
nothing else is flagged, and the day page lists it under the automatic resolutions."""

from __future__ import annotations

from typing import Any

from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service as recon
from tests.billing.conftest import World
from tests.billing.helpers import drain, pay_params, payment_row, start_payment
from tests.recon_e2e.helpers import (
    bill_time,
    diffs_of,
    pay_jsapi,
    pay_micropay,
    run_daily,
    run_of,
    unpaid_ids,
)


async def test_a_lost_notify_is_resolved_automatically_after_the_systems_query(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    settled = await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    clock.advance(minutes=5)
    # The patient pays; WeChat's notify never arrives (the simulator drops it).
    payment_id, page = await start_payment(world.alice, mine[1:])
    pay_sim.sim.faults.notify.append("drop")
    order = pay_sim.sim.confirm_jsapi(pay_params(page))
    pay_sim.sim.pay(order, openid=world.alice_openid)
    await pay_sim.sim.deliver_due()
    late = await payment_row(container, payment_id)
    assert late.state == "pending"

    # Next morning the routine query meets a WeChat Pay outage (one 500), then the run.
    clock.set(bill_time(day))
    pay_sim.sim.faults.api_500 = 1
    await run_daily(container, clock)

    run = await run_of(container, day)
    assert (run.state, run.bill_lines, run.matched, run.differences) == ("reconciled", 2, 1, 1)
    [diff] = await diffs_of(container)
    assert (diff.out_trade_no, diff.diff_class, diff.status) == (
        late.out_trade_no,
        "state",
        "auto_pending",
    )
    assert diff.bill_fen == late.amount_fen and settled.out_trade_no != diff.out_trade_no
    late = await payment_row(container, payment_id)
    assert late.state == "paid"  # the system's query confirmed it (and the saga settles it)

    clock.advance(minutes=container.settings.reconciliation_recheck_minutes + 1)
    await drain(container)
    [diff] = await diffs_of(container)
    assert (diff.status, diff.resolution, diff.resolved_by) == (
        "auto_resolved",
        "late_notify_confirmed",
        "system:reconciliation",
    )
    async with container.db.session() as s:
        alarms = await recon.alarms(s)
    assert alarms.unresolved == 0
    # A rerun of the day finds everything matched now.
    async with container.db.session() as s:
        await recon.queue_run(s, day=day, now=clock.now())
    clock.advance(seconds=1)
    await drain(container)
    run = await run_of(container, day)

    assert (run.matched, run.differences) == (2, 0)
    assert [d.status for d in await diffs_of(container)] == ["auto_resolved"]

    # The HIS settled it the next morning: the next day's run does not call that HIS
    # booking "in the HIS but not paid" (it belongs to the day before, matched there).
    next_day = clock.local_now().date()
    family = await unpaid_ids(his_sim, world.family.card_no)
    await pay_micropay(world, pay_sim, clock, world.family.card_no, family[:1])
    await drain(container)
    clock.set(bill_time(next_day))
    await run_daily(container, clock)
    run = await run_of(container, next_day)
    assert (run.state, run.bill_lines, run.his_records, run.matched, run.differences) == (
        "reconciled",
        1,
        1,
        1,
        0,
    )
    assert await diffs_of(container, next_day) == []
