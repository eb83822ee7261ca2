"""Property-based: random sequences of pay / notify (duplicated, reordered, late, lost) /
query / HIS failure / refund (with injected SYSTEMERROR and WeChat timeouts on pay queries,
refunds and any call) / window payment / amount changes, through the real adapters and the
simulators, checked after every step:

- a paid payment is settled in the HIS at most once, and once the saga is done either
  settled exactly once or refunded in full; nothing unpaid is ever settled;
- refunds never exceed payments (ours, and WeChat's view of each order);
- no refund number is used for two refunds (ours, and WeChat's);
- every notify causes at most one state change.

Runs on the test database (SQLite, or PostgreSQL with FRONTDESK_TEST_DATABASE_URL) on its own
event loop; each example writes fresh orders into one demo HIS and looks only at its own."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select, text, update
from tests.conftest import T0, wipe_all_tables
from tests.sims.pay_rig import build_pay_rig

from frontdesk.billing import errors, service
from frontdesk.billing import jobs as _billing_jobs  # noqa: F401 - registers jobs
from frontdesk.billing import models as bm
from frontdesk.container import build_container
from frontdesk.core import migrate, outbox
from frontdesk.core.clock import FrozenClock, set_clock
from frontdesk.core.database import Database
from frontdesk.core.errors import DomainError
from frontdesk.core.settings import Settings
from frontdesk.core.worker import Worker
from frontdesk.his import jobs as his_jobs
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.his_sim import service as his_service
from frontdesk.sims.his_sim.app import Faults, create_his_sim_app, seed, sim_state
from frontdesk.sims.wechat_sim.pay_state import SimError

CARD = "6100000002"
OPENID = "o-state-machine-payer"
ENV: dict[str, Any] = {}
# WeChat timeouts are real time: the adapter gives up after WECHAT_DEADLINE_SECONDS, the
# simulator holds a faulted answer longer. Small, so the machine stays quick.
WECHAT_DEADLINE_SECONDS = 0.25
WECHAT_HOLD_SECONDS = 0.35
_example = itertools.count(1)


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = ENV["loop"]
        self.clock: FrozenClock = ENV["clock"]
        self.container = ENV["container"]
        self.rig = ENV["rig"]
        self.his_sim = ENV["his_sim"]
        self.n = next(_example)
        self.orders: list[str] = self.run(self._write_orders(3))
        self.payments: list[int] = []
        self.params: dict[int, dict[str, str]] = {}
        sim_state(self.his_sim).faults = Faults()
        self.rig.sim.faults.notify.clear()
        self.rig.sim.faults.api_500 = 0
        self.rig.sim.faults.timeout = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _write_orders(self, count: int) -> list[str]:
        out = []
        async with sim_state(self.his_sim).sessionmaker.begin() as s:
            for k in range(count):
                order = await his_service.write_order(
                    s,
                    card_no=CARD,
                    kind="lab",
                    title=f"检验{self.n}-{k}",
                    ordering_department="内科",
                    executing_department="检验科",
                    doctor_name="王医生",
                    visit_no=f"VSM{self.n}",
                    items=[
                        {"name": f"项目{k}a", "quantity": 1, "unit_price_fen": 1000 + 100 * k},
                        {"name": f"项目{k}b", "quantity": 2, "unit_price_fen": 500},
                    ],
                )
                out.append(order["order_id"])
        return out

    async def _drain(self) -> None:
        await Worker(self.container).drain()

    # ------------------------------------------------------------------ rules

    @initialize(fault=st.sampled_from(["none", "drop", "delay", "duplicate"]))
    def a_first_payment_is_made(self, fault: str) -> None:
        self.start_payment({0, 1})
        self.phone_pays(len(self.payments) - 1, fault)

    @rule(
        pick=st.sets(st.integers(0, 2), min_size=1, max_size=3),
        fault=st.sampled_from(["none", "drop", "delay", "duplicate"]),
    )
    def start_and_pay(self, pick: set[int], fault: str) -> None:
        self.start_payment(pick)
        self.phone_pays(len(self.payments) - 1, fault)

    @rule(pick=st.sets(st.integers(0, 2), min_size=1, max_size=3))
    def start_payment(self, pick: set[int]) -> None:
        ids = [self.orders[i] for i in sorted(pick)]

        async def go() -> None:
            try:
                async with self.container.db.session() as s:
                    view, placed = await service.start_payment(
                        s,
                        his=self.container.services["his"],
                        pay=self.rig.pay,
                        card_no=CARD,
                        order_ids=ids,
                        channel="JSAPI",
                        openid=OPENID,
                        actor=f"patient:{OPENID}",
                        now=self.clock.now(),
                    )
                self.payments.append(view.payment_id)
                self.params[view.payment_id] = placed.pay_params
            except DomainError:
                pass  # not payable now (paid, amount changed...), or WeChat down: no payment

        self.run(go())

    @rule(k=st.integers(0, 5), fault=st.sampled_from(["none", "drop", "delay", "duplicate"]))
    def phone_pays(self, k: int, fault: str) -> None:
        if not self.payments:
            return
        payment_id = self.payments[k % len(self.payments)]
        params = self.params.get(payment_id)
        if not params:
            return
        if fault != "none":
            self.rig.sim.faults.notify.append(fault)
        try:
            order = self.rig.sim.confirm_jsapi(params)
            self.rig.sim.pay(order, openid=OPENID)
        except SimError:
            if fault != "none":
                self.rig.sim.faults.notify.pop()

    @rule()
    def deliver_notifies(self) -> None:
        self.run(self.rig.sim.deliver_due())

    @rule(seconds=st.sampled_from([1, 6, 30, 120, 700]))
    def time_passes_and_worker_runs(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)
        self.run(self._drain())

    @rule(calls=st.integers(1, 9))
    def his_outage(self, calls: int) -> None:
        sim_state(self.his_sim).faults = Faults(
            mode="error", count=calls, path_contains="/settlements"
        )

    @rule(calls=st.integers(1, 3))
    def his_times_out(self, calls: int) -> None:
        # The HIS holds the settlement past the adapter's deadline (1 s): a timeout.
        sim_state(self.his_sim).faults = Faults(
            mode="timeout", timeout_seconds=1.5, count=calls, path_contains="/settlements"
        )

    @rule(calls=st.integers(1, 3))
    def wechat_systemerror(self, calls: int) -> None:
        self.rig.sim.faults.api_500 = calls

    def _wechat_answers_late(self, calls: int, where: str) -> None:
        # WeChat carries the call out but answers after the adapter's deadline: we do not
        # know whether a refund was accepted or what a payment's state is.
        self.rig.sim.faults.timeout = calls
        self.rig.sim.faults.timeout_path = where
        self.rig.sim.faults.timeout_seconds = WECHAT_HOLD_SECONDS

    @rule(calls=st.integers(1, 2))
    def wechat_times_out(self, calls: int) -> None:
        """Whatever WeChat call comes next (order, query, close, refund...) times out."""
        self._wechat_answers_late(calls, "")

    @rule(k=st.integers(0, 5), calls=st.integers(1, 2))
    def pay_query_times_out(self, k: int, calls: int) -> None:
        """Finance asks WeChat about a payment (and its refunds); the query times out."""
        self._wechat_answers_late(calls, "/v3/pay/transactions/out-trade-no/")
        self.requery(k)
        self.run(self._drain())

    @rule(k=st.integers(0, 5), amount=st.integers(1, 3000))
    def refund_times_out(self, k: int, amount: int) -> None:
        """A refund is sent; WeChat accepts it but the answer comes too late."""
        self._wechat_answers_late(1, "/v3/refund/domestic/refunds")
        self.staff_refund(k, amount)
        self.run(self._drain())

    @rule(i=st.integers(0, 2))
    def paid_at_the_window(self, i: int) -> None:
        async def go() -> None:
            async with sim_state(self.his_sim).sessionmaker.begin() as s:
                status = (
                    await s.execute(
                        select(hm.order.c.status).where(hm.order.c.id == self.orders[i])
                    )
                ).scalar_one()
                if status != "unpaid":
                    return
                await his_service.window_payment(s, card_no=CARD, order_ids=[self.orders[i]])
            async with self.container.db.session() as s:
                await outbox.enqueue(s, his_jobs.POLL_JOB)
            await self._drain()

        self.run(go())

    @rule(i=st.integers(0, 2))
    def doctor_changes_an_order(self, i: int) -> None:
        async def go() -> None:
            async with sim_state(self.his_sim).engine.begin() as conn:
                await conn.execute(
                    update(hm.order_item)
                    .where(
                        hm.order_item.c.order_id == self.orders[i],
                        hm.order_item.c.status == "billed",
                    )
                    .values(unit_price_fen=hm.order_item.c.unit_price_fen + 10)
                )

        self.run(go())

    @rule(k=st.integers(0, 5), amount=st.integers(-5, 6000))
    def staff_refund(self, k: int, amount: int) -> None:
        if not self.payments:
            return
        payment_id = self.payments[k % len(self.payments)]

        async def go() -> None:
            async with self.container.db.session() as s:
                p = await s.get(bm.BillingPayment, payment_id)
                assert p is not None
                ref = p.out_trade_no
            try:
                async with self.container.db.session() as s:
                    await service.refund_payment(
                        s, out_trade_no=ref, amount_fen=amount, reason="抽查", actor="finance1"
                    )
            except (errors.AmountInvalid, errors.RefundExceedsPayment, errors.PaymentNotPaid):
                pass

        self.run(go())

    @rule()
    def patient_item_refund(self) -> None:
        async def go() -> None:
            try:
                async with self.container.db.session() as s:
                    offer = await service.refundable_items(
                        s, his=self.container.services["his"], card_no=CARD
                    )
                    mine = [v for v in offer if v.payment_id in self.payments]
                    if mine:
                        await service.request_item_refund(
                            s,
                            his=self.container.services["his"],
                            card_no=CARD,
                            item_ids=[mine[0].his_item_id],
                            actor=f"patient:{OPENID}",
                            now=self.clock.now(),
                        )
            except DomainError:
                pass

        self.run(go())

    @rule(k=st.integers(0, 5))
    def requery(self, k: int) -> None:
        if not self.payments:
            return
        payment_id = self.payments[k % len(self.payments)]

        async def go() -> None:
            async with self.container.db.session() as s:
                p = await s.get(bm.BillingPayment, payment_id)
                assert p is not None
                await service.requery_payment(s, out_trade_no=p.out_trade_no, actor="finance1")

        self.run(go())

    # ------------------------------------------------------------------ invariants

    async def _state(self) -> dict[str, Any]:
        async with self.container.db.session() as s:
            payments = list(
                await s.scalars(
                    select(bm.BillingPayment).where(bm.BillingPayment.id.in_(self.payments or [0]))
                )
            )
            refunds = list(
                await s.scalars(
                    select(bm.BillingRefund).where(
                        bm.BillingRefund.payment_id.in_(self.payments or [0])
                    )
                )
            )
            events = list(
                await s.scalars(
                    select(bm.BillingEvent).where(
                        bm.BillingEvent.payment_id.in_(self.payments or [0])
                    )
                )
            )
        refs = [p.out_trade_no for p in payments]
        async with sim_state(self.his_sim).engine.connect() as conn:
            settlements = list(
                (
                    await conn.execute(
                        select(hm.settlement).where(hm.settlement.c.payment_ref.in_(refs or ["-"]))
                    )
                ).all()
            )
        return {
            "payments": payments,
            "refunds": refunds,
            "events": events,
            "settlements": settlements,
        }

    @invariant()
    def money_is_never_lost_or_taken_twice(self) -> None:
        state = self.run(self._state())
        settled = Counter(s.payment_ref for s in state["settlements"])
        for p in state["payments"]:
            # Settled in the HIS at most once; never for a payment that is not paid.
            assert settled[p.out_trade_no] <= 1, p.out_trade_no
            if p.state != "paid":
                assert settled[p.out_trade_no] == 0
            if p.his_state == "settled":
                assert settled[p.out_trade_no] == 1
            if p.his_state == "failed":
                assert settled[p.out_trade_no] == 0
                assert p.refunded_fen == p.amount_fen  # all of it is going back
            # Refunds never exceed the payment; the reservation matches the refunds.
            mine = [r for r in state["refunds"] if r.payment_id == p.id]
            holding = sum(r.amount_fen for r in mine if r.state in bm.REF_HOLDING)
            assert holding == p.refunded_fen <= p.amount_fen
            wechat_order = self.rig.sim.orders.get(p.out_trade_no)
            if wechat_order is not None:
                taken = sum(
                    r.refund_fen
                    for r in self.rig.sim.refunds.values()
                    if r.out_trade_no == p.out_trade_no and r.status != "CLOSED"
                )
                assert taken <= wechat_order.total_fen
        # No refund number for two refunds, here or at WeChat.
        numbers = [r.out_refund_no for r in state["refunds"]]
        assert len(numbers) == len(set(numbers))
        ours = {r.out_refund_no: r for r in state["refunds"]}
        for sim_refund in self.rig.sim.refunds.values():
            if sim_refund.out_trade_no in {p.out_trade_no for p in state["payments"]}:
                assert sim_refund.out_refund_no in ours
                assert ours[sim_refund.out_refund_no].amount_fen == sim_refund.refund_fen
        # Every notify causes at most one state change.
        changes = Counter(
            e.detail.get("observation")
            for e in state["events"]
            if e.to_state is not None and str(e.detail.get("observation", "")).startswith("notify:")
        )
        assert all(n <= 1 for n in changes.values()), changes

    def teardown(self) -> None:
        """With the faults gone and time passing, the saga finishes: every paid payment is
        settled exactly once or refunded in full."""
        sim_state(self.his_sim).faults = Faults()
        self.rig.sim.faults.api_500 = 0
        self.rig.sim.faults.timeout = 0
        self.rig.sim.faults.notify.clear()
        for _ in range(12):
            self.clock.advance(seconds=600)
            self.run(self.rig.sim.deliver_due())
            self.run(self._drain())
        state = self.run(self._state())
        settled = Counter(s.payment_ref for s in state["settlements"])
        for p in state["payments"]:
            if p.state == "paid":
                assert p.his_state in ("settled", "failed", "refunded"), (
                    p.out_trade_no,
                    p.his_state,
                )
                if p.his_state == "failed":
                    backs = [
                        r for r in state["refunds"] if r.payment_id == p.id and r.state == "success"
                    ]
                    assert sum(r.amount_fen for r in backs) == p.amount_fen
                else:
                    assert settled[p.out_trade_no] == 1
            else:
                assert p.state in ("closed", "failed") and settled[p.out_trade_no] == 0


def test_payment_state_machine(database_url: str, pay_keys: Any, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    clock = FrozenClock(T0, tz="Asia/Shanghai")
    previous = set_clock(clock)
    url = (
        database_url
        if database_url.startswith("postgresql")
        else f"sqlite+aiosqlite:///{tmp_path / 'sm.db'}"
    )
    database = Database(url, pool_size=5, max_overflow=5)
    app_settings = Settings(
        env="test",
        database_url=url,
        secret_key="t" * 40,
        worker_backoff_base_seconds=0.01,
        worker_backoff_max_seconds=0.05,
        _env_file=None,
    )
    his_sim = create_his_sim_app(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'his.db'}",
        seed=1,
        size="small",
        key_id="sm-key",
        secret="s" * 32,
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim")
    rig = build_pay_rig(pay_keys, clock, client_timeout_seconds=WECHAT_DEADLINE_SECONDS)

    async def setup() -> Any:
        await migrate.upgrade(database.engine)
        await seed(his_sim, today=clock.today())
        container = build_container(app_settings, clock=clock, db=database)
        container.services["his"] = HttpHisGateway(
            base_url="http://his-sim",
            key_id="sm-key",
            secret="s" * 32,
            timeout_seconds=1.0,
            backoff_seconds=0.0,
            client=http,
        )
        container.services["pay"] = rig.pay
        from frontdesk.web.app import create_app

        rig.connect_notify(create_app(app_settings, container=container))
        return container

    try:
        container = loop.run_until_complete(setup())
        ENV.update(loop=loop, clock=clock, container=container, rig=rig, his_sim=his_sim)
        PaymentMachine.TestCase.settings = settings(
            max_examples=12,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        PaymentMachine.TestCase().runTest()
        print(
            "HELD", Counter(p.split("/")[2] + "/" + p.split("/")[3] for p in rig.sim.answers_held)
        )
    finally:

        async def cleanup() -> None:
            await rig.aclose()
            await http.aclose()
            async with database.engine.begin() as conn:
                await wipe_all_tables(conn)
                if conn.dialect.name == "sqlite":
                    await conn.execute(text("SELECT 1"))
            await database.dispose()
            await sim_state(his_sim).engine.dispose()

        loop.run_until_complete(cleanup())
        set_clock(previous)
        loop.close()
