"""A payment the HIS failed to settle (its settlement endpoint down all evening and still
down the next morning): the day's run finds it ``unsettled`` and nothing else. In the
console, finance user A proposes "settle in the HIS", A cannot approve it, user B approves;
the action goes through ``billing.retry_settlement`` (the saga) and ends settled in the
HIS; a rerun of the day shows the difference resolved; every step is in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from frontdesk.billing import models as bm
from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from frontdesk.reconciliation.models import ReconProposal
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.his_sim.app import Faults, sim_state
from tests.billing.conftest import World
from tests.billing.helpers import drain, his_rows, payment_row
from tests.console.conftest import audit_rows, create_staff, sign_in
from tests.recon_e2e.helpers import bill_time, diffs_of, pay_jsapi, run_daily, run_of, unpaid_ids


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def consoles(world: World) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = await _client(world.env.front_app), await _client(world.env.front_app)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_unsettled_is_settled_through_the_saga_under_maker_checker(
    world: World,
    his_sim: Any,
    pay_sim: Any,
    clock: FrozenClock,
    consoles: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    container = world.env.container
    day = clock.local_now().date()
    mine = await unpaid_ids(his_sim, world.mine.card_no)
    ok = await pay_jsapi(world, pay_sim, mine[:1])
    await drain(container)
    clock.advance(minutes=3)
    # The HIS's settlement endpoint goes down (reads still work): the next one fails.
    sim_state(his_sim).faults = Faults(mode="error", path_contains="/settlements", method="POST")
    stuck = await pay_jsapi(world, pay_sim, mine[1:])
    await drain(container)
    stuck = await payment_row(container, stuck.id)
    assert (stuck.state, stuck.his_state) == ("paid", "pending")

    clock.set(bill_time(day))
    await run_daily(container, clock)
    run = await run_of(container, day)
    assert (run.state, run.matched, run.differences) == ("reconciled", 1, 1)
    [diff] = await diffs_of(container)
    assert (diff.out_trade_no, diff.diff_class, diff.reason, diff.status) == (
        stuck.out_trade_no,
        "unsettled",
        "not_in_his",
        "open",
    )
    assert ok.out_trade_no != diff.out_trade_no
    sim_state(his_sim).faults = Faults()  # the HIS is back

    a, b = consoles
    async with container.db.session() as s:
        maker = await create_staff(s, clock, username="fin-a", role=Role.finance)
        checker = await create_staff(s, clock, username="fin-b", role=Role.finance)
    csrf_a = await sign_in(a, clock, maker)
    csrf_b = await sign_in(b, clock, checker)
    proposed = await a.post(
        f"/console/reconciliation/differences/{diff.id}/propose",
        data={"csrf_token": csrf_a, "action": "settle", "reason": "HIS 结算接口当晚故障"},
    )
    assert proposed.status_code == 303
    async with container.db.session() as s:
        [proposal] = (await s.execute(select(ReconProposal))).scalars().all()
    own = await a.post(
        f"/console/reconciliation/proposals/{proposal.id}/approve", data={"csrf_token": csrf_a}
    )
    assert own.status_code == 303 and "recon_own_proposal" in own.headers["location"]
    [diff] = await diffs_of(container)
    assert diff.status == "proposed"
    assert (await payment_row(container, stuck.id)).his_state == "pending"  # nothing ran

    approved = await b.post(
        f"/console/reconciliation/proposals/{proposal.id}/approve", data={"csrf_token": csrf_b}
    )
    assert approved.status_code == 303
    await drain(container)  # the saga's settlement, queued by billing.retry_settlement
    stuck = await payment_row(container, stuck.id)
    assert stuck.his_state == "settled"
    [settlement] = await his_rows(his_sim, hm.settlement, payment_ref=stuck.out_trade_no)
    assert settlement.self_pay_fen == stuck.amount_fen
    async with container.db.session() as s:
        retried = (
            (
                await s.execute(
                    select(bm.BillingEvent).where(
                        bm.BillingEvent.payment_id == stuck.id,
                        bm.BillingEvent.kind == "settle.retry_requested",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert [e.actor for e in retried] == [f"staff:{checker.id}"]
    [diff] = await diffs_of(container)
    assert (diff.status, diff.resolution, diff.resolved_by) == (
        "resolved",
        "settle",
        f"staff:{checker.id}",
    )

    # Rerun (from the console, a minute later): the day is clean, the difference stays
    # resolved.
    clock.advance(minutes=1)
    rerun = await a.post(
        "/console/reconciliation/run", data={"csrf_token": csrf_a, "day": day.isoformat()}
    )
    assert rerun.status_code == 303
    await drain(container)
    run = await run_of(container, day)
    assert (run.matched, run.differences) == (2, 0)
    assert [(d.status, d.resolution) for d in await diffs_of(container)] == [("resolved", "settle")]
    async with container.db.session() as s:
        trail = {
            (x.action, x.actor, x.outcome)
            for name in ("propose", "approve")
            for x in await audit_rows(s, action=f"reconciliation.{name}")
        }
    assert trail == {
        ("reconciliation.propose", f"staff:{maker.id}", "ok"),
        ("reconciliation.approve", f"staff:{maker.id}", "denied"),
        ("reconciliation.approve", f"staff:{checker.id}", "ok"),
    }
