"""WeChat answers NO_STATEMENT_EXIST both before the bill is published and for a day without
a single trade. Through billing's ledger, the worker, the Pay simulator and the demo HIS:

- a day nobody paid through us waits at the 10:30 run (not yet surely published) and from
  noon is reconciled against an empty bill: clean with an empty HIS; a WeChat-channel
  settlement the HIS booked on its own is a ``his_unpaid`` difference;
- a day our ledger has a real WeChat payment on, for which WeChat still says there is no
  bill, is not an empty day: it waits, and after the give-up time fails with
  ``no_statement_but_paid``."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service as recon
from tests.billing.conftest import World
from tests.billing.helpers import drain
from tests.recon_e2e.helpers import bill_time, diffs_of, pay_jsapi, run_daily, run_of, unpaid_ids
from tests.reconciliation.helpers import SH


def _after_noon(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(12, 31), tzinfo=SH)


async def test_days_without_a_wechat_trade_are_reconciled_from_noon(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    day = clock.local_now().date()  # a holiday: nobody pays

    clock.set(bill_time(day))
    await run_daily(container, clock)
    run = await run_of(container, day)
    assert (run.state, run.error_code) == ("waiting", "no_statement")
    assert "NO_STATEMENT_EXIST" in (run.error_detail or "")

    clock.set(_after_noon(day))
    await drain(container)  # the retry queued at 10:31
    run = await run_of(container, day)
    assert (run.state, run.empty_day, run.bill_sha1, run.bill_lines) == (
        "reconciled",
        True,
        None,
        0,
    )
    assert (run.ledger_entries, run.his_records, run.differences) == (0, 0, 0)

    # The next day the HIS books a WeChat payment at its own window; nothing reaches us.
    next_day = day + timedelta(days=1)
    clock.set(datetime.combine(next_day, time(15, 0), tzinfo=SH))
    his = container.services["his"]
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    pre = await his.pre_settle(card_no=world.mine.card_no, order_ids=mine[:1])
    await his.settle(
        card_no=world.mine.card_no,
        order_ids=mine[:1],
        payment_ref="PWINDOW0001",
        self_pay_fen=pre.self_pay_fen,
    )
    clock.set(_after_noon(next_day))
    await run_daily(container, clock)
    run = await run_of(container, next_day)
    assert (run.state, run.empty_day, run.bill_lines, run.his_records, run.differences) == (
        "reconciled",
        True,
        0,
        1,
        1,
    )
    [diff] = await diffs_of(container, next_day)
    assert (diff.out_trade_no, diff.diff_class, diff.status, diff.his_fen, diff.bill_fen) == (
        "PWINDOW0001",
        "his_unpaid",
        "open",
        pre.self_pay_fen,
        None,
    )
    async with container.db.session() as s:
        assert (await recon.alarms(s)).unresolved == 1
    assert await diffs_of(container, day) == []


async def test_no_bill_for_a_day_we_took_wechat_money_fails_with_its_own_reason(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    paid = await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    assert paid.state == "paid"
    # WeChat has no bill of that day all the same.
    answer = await pay_sim.http.post(
        "/sim/pay/faults", json={"no_statement_days": [day.isoformat()]}
    )
    assert answer.status_code == 200

    clock.set(_after_noon(day))
    await run_daily(container, clock)
    run = await run_of(container, day)
    assert (run.state, run.error_code, run.empty_day) == ("waiting", "no_statement", False)
    assert "our ledger has 1 WeChat payment(s)/refund(s)" in (run.error_detail or "")

    clock.set(recon.day_window(day)[1] + timedelta(hours=48, minutes=1))
    await drain(container)
    run = await run_of(container, day)
    assert (run.state, run.error_code, run.empty_day, run.bill_lines) == (
        "failed",
        "no_statement_but_paid",
        False,
        0,
    )
    assert await diffs_of(container) == []
