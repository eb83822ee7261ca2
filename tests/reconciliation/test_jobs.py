"""The worker's reconciliation against the real Pay simulator and the demo HIS: the daily job
reconciles the previous hospital day, a bill not yet published waits and is retried, a day
WeChat has no bill for is an empty day from noon (unless our ledger has WeChat payments on
it: then it waits and fails with ``no_statement_but_paid``), and a bill that does not hash
or unzip stops the run with its reason (on a committed database)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from frontdesk.container import Container
from frontdesk.core import scheduler
from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.core.worker import Worker, load_job_modules
from frontdesk.reconciliation import service
from frontdesk.reconciliation.models import ReconDifference, ReconItem, ReconRun
from frontdesk.reconciliation.schemas import LedgerEntry
from tests.reconciliation.helpers import SH, MemoryLedger
from tests.sims.pay_rig import PaySimRig
from tests.wechat.test_pay_client import paid_order

load_job_modules()


async def _paid_day(pay_sim: PaySimRig, clock: FrozenClock) -> tuple[date, MemoryLedger]:
    await paid_order(pay_sim, "P1000001", 2350)
    clock.advance(seconds=5)
    await paid_order(pay_sim, "P1000002", 100)
    entries = []
    for i, number in enumerate(("P1000001", "P1000002")):
        paid = await pay_sim.pay.query_order(number)
        entries.append(
            LedgerEntry(
                kind="payment",
                out_trade_no=number,
                out_refund_no=None,
                transaction_id=paid.transaction_id,
                refund_id=None,
                trade_type="JSAPI",
                amount_fen=paid.amount_fen,
                state="paid",
                at=paid.success_at,
                card_no="C1",
                his_ref=number,
                # The first was settled without the HIS (not needed), the second says it
                # was settled, but the demo HIS has no such settlement.
                his_state="not_needed" if i == 0 else "settled",
                ledger_id=i + 1,
            )
        )
    return clock.local_now().date(), MemoryLedger(entries)


def _wire(
    container: Container, pay_sim: PaySimRig, his_gateway: object, ledger: MemoryLedger
) -> None:
    container.services["pay"] = pay_sim.pay
    container.services["his"] = his_gateway
    container.services["ledger"] = ledger


async def _run(container: Container, day: date, clock: FrozenClock) -> ReconRun:
    async with container.db.session() as s:
        await service.queue_run(s, day=day, now=clock.now())
    await Worker(container).drain()
    async with container.db.session() as s:
        return (await s.execute(select(ReconRun).where(ReconRun.day_on == day))).scalar_one()


async def test_the_daily_job_reconciles_the_previous_day_through_the_pay_port(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day, ledger = await _paid_day(pay_sim, clock)
    _wire(container, pay_sim, his_gateway, ledger)
    worker = Worker(container)
    daily = scheduler.recurring_registry[service.DAILY_JOB]
    assert (daily.schedule.spec, daily.setting) == ("daily 10:30", "reconciliation_schedule")
    async with container.db.session() as s:  # only this recurring job, from the settings
        await scheduler.sync_definitions(
            s,
            now=clock.now(),
            tz=container.settings.tz,
            definitions={daily.name: daily},
            settings=container.settings,
        )
    clock.set(datetime.combine(day + timedelta(days=1), time(10, 31), tzinfo=SH))

    await worker.drain()

    async with container.db.session() as s:
        run = (await s.execute(select(ReconRun))).scalar_one()
        diffs = (await s.execute(select(ReconDifference))).scalars().all()
        items = (await s.execute(select(ReconItem))).scalars().all()
    assert (run.day_on, run.state, run.bill_lines, run.matched, run.differences) == (
        day,
        "reconciled",
        2,
        1,
        1,
    )
    assert len(run.bill_sha1 or "") == 40
    assert [(d.out_trade_no, d.diff_class, d.status) for d in diffs] == [
        ("P1000002", "unsettled", "open")
    ]
    assert sorted((i.out_trade_no, i.bill_fen, i.diff_class) for i in items) == [
        ("P1000001", 2350, None),
        ("P1000002", 100, "unsettled"),
    ]


async def test_a_bill_not_yet_published_waits_and_is_retried(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day, ledger = await _paid_day(pay_sim, clock)
    _wire(container, pay_sim, his_gateway, ledger)

    run = await _run(container, day, clock)  # 09:00 the same day: nothing published

    assert (run.state, run.error_code) == ("waiting", "no_statement")
    async with container.db.session() as s:
        retry = (
            await s.execute(
                select(OutboxJob).where(
                    OutboxJob.name == service.RUN_JOB, OutboxJob.status == "queued"
                )
            )
        ).scalar_one()
    assert retry.run_after_at == clock.now() + timedelta(minutes=30)

    clock.set(datetime.combine(day + timedelta(days=1), time(9, 5), tzinfo=SH))
    await Worker(container).drain()

    async with container.db.session() as s:
        run = (await s.execute(select(ReconRun))).scalar_one()
    assert (run.state, run.error_code, run.bill_lines) == ("reconciled", None, 2)


def _noon_next_day(day: date, minutes: int = 0) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(12, 0), tzinfo=SH) + timedelta(
        minutes=minutes
    )


async def _queued_runs(container: Container) -> list[OutboxJob]:
    async with container.db.session() as s:
        return list(
            (
                await s.execute(
                    select(OutboxJob).where(
                        OutboxJob.name == service.RUN_JOB, OutboxJob.status == "queued"
                    )
                )
            ).scalars()
        )


def _pending_payment(day: date) -> tuple[LedgerEntry, datetime]:
    """A payment a patient started and abandoned: no money moved, in no bill."""
    entry = LedgerEntry(
        kind="payment",
        out_trade_no="P2000001",
        out_refund_no=None,
        transaction_id=None,
        refund_id=None,
        trade_type="JSAPI",
        amount_fen=500,
        state="pending",
        at=None,
        card_no="C1",
        his_ref="P2000001",
        his_state="pending",
        ledger_id=7,
    )
    return entry, datetime.combine(day, time(15, 0), tzinfo=SH)


def _paid_entry(day: date) -> LedgerEntry:
    return LedgerEntry(
        kind="payment",
        out_trade_no="P3000001",
        out_refund_no=None,
        transaction_id="4200000000000000000000000001",
        refund_id=None,
        trade_type="JSAPI",
        amount_fen=2350,
        state="paid",
        at=datetime.combine(day, time(10, 0), tzinfo=SH),
        card_no="C1",
        his_ref="P3000001",
        his_state="settled",
        ledger_id=8,
    )


async def test_a_day_without_transactions_waits_until_noon_then_is_an_empty_bill(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day = clock.local_now().date()
    pending, started = _pending_payment(day)
    _wire(container, pay_sim, his_gateway, MemoryLedger([pending], started={"P2000001": started}))
    clock.set(_noon_next_day(day, minutes=-5))  # the bill is published by now, but not surely

    run = await _run(container, day, clock)

    # WeChat answers NO_STATEMENT_EXIST (no trades); before noon that is "not yet".
    assert (run.state, run.error_code, run.bill_lines) == ("waiting", "no_statement", 0)
    [retry] = await _queued_runs(container)
    assert retry.run_after_at == clock.now() + timedelta(minutes=30)

    clock.advance(minutes=30)
    await Worker(container).drain()

    async with container.db.session() as s:
        run = (await s.execute(select(ReconRun))).scalar_one()
        diffs = (await s.execute(select(ReconDifference))).scalars().all()
        items = (await s.execute(select(ReconItem))).scalars().all()
    assert (run.state, run.error_code, run.error_detail, run.empty_day, run.bill_sha1) == (
        "reconciled",
        None,
        None,
        True,
        None,
    )
    assert (run.bill_lines, run.his_records, run.matched, run.differences) == (0, 0, 0, 0)
    assert (diffs, items) == ([], [])
    assert await _queued_runs(container) == []


async def test_an_empty_day_long_past_the_deadline_is_reconciled_not_failed(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    _wire(container, pay_sim, his_gateway, MemoryLedger())
    day = clock.local_now().date() - timedelta(days=5)  # no trades at all that day

    run = await _run(container, day, clock)

    assert (run.state, run.error_code, run.empty_day, run.bill_lines) == (
        "reconciled",
        None,
        True,
        0,
    )
    assert await _queued_runs(container) == []


async def test_an_empty_day_shows_what_the_his_booked_for_wechat(
    container: Container, pay_sim: PaySimRig, his_gateway: Any, clock: FrozenClock
) -> None:
    day = clock.local_now().date()
    card = "6100000002"
    ids = [o.order_id for o in await his_gateway.unpaid_orders(card_no=card)]
    pre = await his_gateway.pre_settle(card_no=card, order_ids=ids)
    await his_gateway.settle(  # the HIS books a WeChat payment nobody made through us
        card_no=card, order_ids=ids, payment_ref="PHIS000001", self_pay_fen=pre.self_pay_fen
    )
    _wire(container, pay_sim, his_gateway, MemoryLedger())
    clock.set(_noon_next_day(day, minutes=1))

    run = await _run(container, day, clock)

    assert (run.state, run.empty_day, run.bill_lines, run.his_records, run.differences) == (
        "reconciled",
        True,
        0,
        1,
        1,
    )
    async with container.db.session() as s:
        [diff] = (await s.execute(select(ReconDifference))).scalars().all()
    assert (diff.out_trade_no, diff.diff_class, diff.reason, diff.status) == (
        "PHIS000001",
        "his_unpaid",
        "his_not_paid",
        "open",
    )
    assert (diff.bill_fen, diff.ledger_fen, diff.his_fen) == (None, None, pre.self_pay_fen)


async def test_no_bill_while_our_ledger_has_payments_waits_then_fails_with_its_reason(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day = clock.local_now().date()
    _wire(container, pay_sim, his_gateway, MemoryLedger([_paid_entry(day)]))
    clock.set(_noon_next_day(day, minutes=30))  # past the cut-off: the bill must be there

    run = await _run(container, day, clock)

    assert (run.state, run.error_code, run.empty_day) == ("waiting", "no_statement", False)
    assert "our ledger has 1 WeChat payment(s)/refund(s)" in (run.error_detail or "")
    [retry] = await _queued_runs(container)
    assert retry.run_after_at == clock.now() + timedelta(minutes=30)

    give_up = service.day_window(day)[1] + timedelta(hours=48)
    clock.set(give_up + timedelta(minutes=1))
    await Worker(container).drain()

    async with container.db.session() as s:
        run = (await s.execute(select(ReconRun))).scalar_one()
        assert (await s.execute(select(ReconItem))).all() == []
        assert (await s.execute(select(ReconDifference))).all() == []
    assert (run.state, run.error_code, run.empty_day) == (
        "failed",
        "no_statement_but_paid",
        False,
    )
    assert "NO_STATEMENT_EXIST" in (run.error_detail or "")
    assert await _queued_runs(container) == []


async def test_statement_creating_after_noon_is_still_not_published(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day = clock.local_now().date()
    _wire(container, pay_sim, his_gateway, MemoryLedger())
    answer = await pay_sim.http.post("/sim/pay/faults", json={"statement_creating": 1})
    assert answer.status_code == 200
    clock.set(_noon_next_day(day, minutes=1))

    run = await _run(container, day, clock)

    assert (run.state, run.error_code, run.empty_day) == ("waiting", "no_statement", False)
    assert "STATEMENT_CREATING" in (run.error_detail or "")
    assert len(await _queued_runs(container)) == 1


async def test_no_bill_on_a_rerun_keeps_the_bill_an_earlier_run_reconciled(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day, ledger = await _paid_day(pay_sim, clock)
    _wire(container, pay_sim, his_gateway, ledger)
    clock.set(_noon_next_day(day, minutes=1))
    first = await _run(container, day, clock)
    assert (first.state, first.bill_lines, first.differences) == ("reconciled", 2, 1)
    # Later WeChat has no bill of the day, and our ledger no longer shows its payments.
    answer = await pay_sim.http.post(
        "/sim/pay/faults", json={"no_statement_days": [day.isoformat()]}
    )
    assert answer.status_code == 200
    ledger.entries_.clear()
    clock.advance(minutes=5)

    again = await _run(container, day, clock)

    assert (again.state, again.bill_lines, again.empty_day, again.bill_sha1) == (
        "reconciled",
        2,
        False,
        first.bill_sha1,
    )
    async with container.db.session() as s:
        diffs = (await s.execute(select(ReconDifference))).scalars().all()
    assert [(d.out_trade_no, d.status) for d in diffs] == [("P1000002", "open")]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda raw: gzip.compress(gzip.decompress(raw).replace(b"23.50", b"23.60")), "hash"),
        (lambda raw: raw[: len(raw) - 20], "gzip"),
    ],
)
async def test_a_bill_that_does_not_hash_or_unzip_stops_the_run(
    container: Container,
    pay_sim: PaySimRig,
    his_gateway: object,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    mangle: Callable[[bytes], bytes],
    reason: str,
) -> None:
    day, ledger = await _paid_day(pay_sim, clock)
    _wire(container, pay_sim, his_gateway, ledger)
    real = pay_sim.sim.bill_file
    monkeypatch.setattr(pay_sim.sim, "bill_file", lambda token: mangle(real(token)))
    clock.advance(days=1)

    run = await _run(container, day, clock)

    assert (run.state, run.error_code) == ("failed", reason)
    assert run.error_detail
    async with container.db.session() as s:
        assert (await s.execute(select(ReconItem))).all() == []
        assert (await s.execute(select(ReconDifference))).all() == []


async def test_the_daily_time_comes_from_the_setting(
    container: Container, clock: FrozenClock
) -> None:
    daily = scheduler.recurring_registry[service.DAILY_JOB]
    settings = container.settings.model_copy(update={"reconciliation_schedule": "daily 11:15"})
    async with container.db.session() as s:
        await scheduler.sync_definitions(
            s, now=clock.now(), tz=settings.tz, definitions={daily.name: daily}, settings=settings
        )
    async with container.db.session() as s:
        row = await s.get(scheduler.RecurringJob, daily.name)
    assert row is not None
    assert row.spec == "daily 11:15"
    assert row.next_run_at == datetime.combine(clock.local_now().date(), time(11, 15), tzinfo=SH)


async def test_without_a_ledger_the_run_says_so_instead_of_dying(
    container: Container, pay_sim: PaySimRig, his_gateway: object, clock: FrozenClock
) -> None:
    day, _ = await _paid_day(pay_sim, clock)
    container.services["pay"] = pay_sim.pay
    container.services["his"] = his_gateway
    container.services.pop("ledger", None)
    clock.advance(days=1)

    run = await _run(container, day, clock)

    assert (run.state, run.error_code) == ("failed", "ledger")
    async with container.db.session() as s:
        dead = (await s.execute(select(OutboxJob).where(OutboxJob.status == "dead"))).all()
    assert dead == []
