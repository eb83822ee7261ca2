"""Resolution "refund through the payments saga": a payment the HIS could not settle (its
settlement endpoint down) is found ``unsettled``; finance decides to give the money back
(proposed by one user, approved by another, through the service as the console does). The
refund goes through billing's saga to WeChat with a deterministic number
(``{out_trade_no}R01``), is on the next day's bill, and the next day reconciles clean; the
HIS coming back later does not settle the refunded payment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation import service as recon
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.his_sim.app import Faults, sim_state
from tests.billing.conftest import World
from tests.billing.helpers import drain, his_rows, payment_row
from tests.recon_e2e.helpers import (
    bill_time,
    diffs_of,
    pay_jsapi,
    pay_micropay,
    run_daily,
    run_of,
    unpaid_ids,
)


async def test_refund_through_the_saga_ends_with_a_deterministic_wechat_refund(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ledger = container.services["ledger"]
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    sim_state(his_sim).faults = Faults(mode="error", path_contains="/settlements", method="POST")
    stuck = await pay_jsapi(world, pay_sim, mine[1:])
    await drain(container)

    clock.set(bill_time(day))
    await run_daily(container, clock)
    [diff] = await diffs_of(container)
    assert (diff.out_trade_no, diff.diff_class, diff.status) == (
        stuck.out_trade_no,
        "unsettled",
        "open",
    )
    async with container.db.session() as s:
        proposal = await recon.propose(
            s,
            difference_id=diff.id,
            action="refund",
            amount_fen=stuck.amount_fen,
            reason="患者已离院，退回",
            actor="staff:1",
            now=clock.now(),
        )
    async with container.db.session() as s:
        await recon.decide(
            s,
            proposal_id=proposal.id,
            approve=True,
            actor="staff:2",
            ledger=ledger,
            now=clock.now(),
        )
    await drain(container)
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()  # WeChat's refund notify
    async with container.db.session() as s:
        [refund] = (
            (
                await s.execute(
                    select(bm.BillingRefund).where(bm.BillingRefund.payment_id == stuck.id)
                )
            )
            .scalars()
            .all()
        )
    assert refund.out_refund_no == f"{stuck.out_trade_no}R01"
    assert (refund.state, refund.amount_fen) == ("success", stuck.amount_fen)
    wechat = pay_sim.sim.get_refund(refund.out_refund_no)
    assert wechat.refund_fen == stuck.amount_fen
    [diff] = await diffs_of(container)
    assert (diff.status, diff.resolution, diff.resolved_by) == ("resolved", "refund", "staff:2")

    # The HIS comes back: the refunded payment is not settled any more.
    sim_state(his_sim).faults = Faults()
    clock.advance(hours=1)
    await drain(container)
    assert await his_rows(his_sim, hm.settlement, payment_ref=stuck.out_trade_no) == []
    row = await payment_row(container, stuck.id)
    assert (row.refunded_fen, row.his_state) == (stuck.amount_fen, "not_needed")
    async with container.db.session() as s:
        entry = await ledger.find(s, out_trade_no=stuck.out_trade_no)
    assert entry is not None and entry.state == "refunded"

    # The next day: the refund is on its bill and matches our ledger; nothing is flagged.
    next_day = clock.local_now().date()
    family = await unpaid_ids(his_sim, world.family.card_no)
    await pay_micropay(world, pay_sim, clock, world.family.card_no, family[:1])
    await drain(container)
    clock.set(bill_time(next_day))
    await run_daily(container, clock)
    run = await run_of(container, next_day)
    assert (run.state, run.bill_lines, run.matched, run.differences) == ("reconciled", 2, 2, 0)
    assert await diffs_of(container, next_day) == []
