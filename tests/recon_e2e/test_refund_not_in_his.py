"""A money-only refund of a payment the HIS had settled (finance's or the window's "refund an
amount"): WeChat gives the money back, the HIS still books the whole income. That is the
difference "refunded in WeChat but not in the HIS" (class ``state``), and reconciliation
must show it, not accept it because billing did not ask the HIS."""

from __future__ import annotations

from typing import Any

from frontdesk.billing import service as billing
from frontdesk.core.clock import FrozenClock
from tests.billing.conftest import World
from tests.billing.helpers import drain
from tests.recon_e2e.helpers import bill_time, diffs_of, pay_jsapi, run_daily, unpaid_ids


async def test_money_only_refund_of_a_settled_payment_is_a_state_difference(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    settled = await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    async with container.db.session() as s:
        await billing.refund_payment(
            s,
            out_trade_no=settled.out_trade_no,
            amount_fen=settled.amount_fen,
            reason="finance_adjustment",
            actor="staff:1",
        )
        await s.commit()
    await drain(container)
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()  # WeChat's refund notify
    await drain(container)

    clock.set(bill_time(day))
    await run_daily(container, clock)
    [diff] = await diffs_of(container)
    assert (diff.out_trade_no, diff.diff_class, diff.status) == (
        settled.out_trade_no,
        "state",
        "open",
    )
    assert diff.out_refund_no == f"{settled.out_trade_no}R01"
