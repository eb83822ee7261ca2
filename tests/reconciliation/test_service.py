"""Reconciliation of a generated day on the database: 100% of the injected differences found
with their class, no false alarm, exact sums; cross-day pairs closed by the adjacent day; a
repeated run gives the same result; a refused bill writes nothing; maker-checker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.reconciliation import service
from frontdesk.reconciliation.errors import (
    ActionInvalid,
    AlreadyProposed,
    BillRejected,
    OwnProposal,
)
from frontdesk.reconciliation.models import (
    ReconAdjustment,
    ReconDifference,
    ReconItem,
    ReconProposal,
    ReconRun,
    ReconTotals,
)
from frontdesk.sims.recon_day import MCHID, GeneratedDay, generate_day
from frontdesk.sims.wechat_sim.pay_bill import BillLine
from tests.reconciliation.helpers import SH, MemoryLedger, bill_text

DAY = date(2026, 11, 25)
POLICY = service.Policy()


async def run(
    db: AsyncSession,
    clock: FrozenClock,
    day: date,
    g: GeneratedDay,
    ledger: MemoryLedger,
    *,
    bill: str | None = None,
    extra_lines: Sequence[BillLine] = (),
) -> service.Outcome:
    text = bill if bill is not None else bill_text([*g.bill, *extra_lines])
    return await service.reconcile(
        db,
        day=day,
        bill_lines=text.splitlines(),
        bill_sha1="0" * 40,
        his_records=g.his,
        ledger=ledger,
        mchid=MCHID,
        now=clock.now(),
        policy=POLICY,
    )


def staff_actions(ledger: MemoryLedger) -> list[tuple[str, str, str, int | None]]:
    return [a for a in ledger.actions if a[2] != "system:reconciliation"]


async def count(db: AsyncSession, model: type) -> int:
    return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_generated_day_finds_every_difference_and_nothing_else(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=200, each=4)
    ledger = MemoryLedger(list(g.ledger), started=g.started)

    outcome = await run(db, clock, DAY, g, ledger)

    diffs = await service.differences(db, day=DAY)
    assert {d.key: d.diff_class for d in diffs} == g.expected  # 100% found, 0 false alarms
    assert len(g.expected) == 40
    status = {d.key: d.status for d in diffs}
    for key, cls in g.expected.items():
        if cls == "cross_day":
            assert status[key] == "pending_other_day"  # waits for the next day: no alarm
        elif (cls, next(d.reason for d in diffs if d.key == key)) == (
            "state",
            "pending_but_billed",
        ):
            assert status[key] == "auto_pending"  # the system asked WeChat again
        else:
            assert status[key] == "open"
    # The ledger was read an hour at a time, the hours covering the hospital day exactly.
    start, end = service.day_window(DAY)
    assert len(ledger.windows) == 24
    assert ledger.windows[0][0] == start and ledger.windows[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(ledger.windows, ledger.windows[1:], strict=False))
    requeried = [a for a in ledger.actions if a[0] == "requery"]
    assert len(requeried) == 4 and {a[2] for a in requeried} == {"system:reconciliation"}
    assert outcome.run.state == "reconciled"
    assert (outcome.run.bill_lines, outcome.run.differences) == (len(g.bill), 40)
    report = await service.day_report(db, DAY)
    pays = [b for b in g.bill if not b.is_refund]
    refunds = [b for b in g.bill if b.is_refund]
    assert report.total.pay_count == len(pays)
    assert report.total.pay_fen == sum(b.amount_fen for b in pays)
    assert report.total.refund_fen == sum(b.refund_fen for b in refunds)
    assert report.total.fee_milli_fen == sum(b.fee_units for b in g.bill)
    assert report.total.matched_count == g.clean + 4
    assert report.total.unmatched_count == 40
    assert await count(db, ReconItem) == g.clean + 4 + 40


async def test_cross_day_payments_close_when_the_next_day_is_reconciled(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=60, each=3)
    nxt = generate_day(DAY + timedelta(days=1), tz=SH, clean=40, each=0, start_index=10_000)
    ledger = MemoryLedger([*g.ledger, *nxt.ledger], started={**g.started, **nxt.started})
    await run(db, clock, DAY, g, ledger)

    await run(db, clock, DAY + timedelta(days=1), nxt, ledger, extra_lines=g.next_day_bill)

    crossing = {k for k, c in g.expected.items() if c == "cross_day"}
    first = {d.key: d for d in await service.differences(db, day=DAY)}
    second = {d.key: d for d in await service.differences(db, day=DAY + timedelta(days=1))}
    assert set(second) == crossing  # the next day found only the other halves
    for key in crossing:
        assert (first[key].status, first[key].resolution) == (
            "auto_resolved",
            "matched_across_days",
        )
        assert (second[key].diff_class, second[key].status) == ("cross_day", "auto_resolved")
    open_keys = {d.key for d in await service.differences(db, statuses=["open", "proposed"])}
    assert open_keys & crossing == set()


async def test_a_cross_day_half_that_the_next_day_lacks_becomes_a_short(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=20, each=1)
    nxt = generate_day(DAY + timedelta(days=1), tz=SH, clean=10, each=0, start_index=10_000)
    ledger = MemoryLedger([*g.ledger, *nxt.ledger], started={**g.started, **nxt.started})
    await run(db, clock, DAY, g, ledger)

    await run(db, clock, DAY + timedelta(days=1), nxt, ledger)  # the line never came

    [key] = [k for k, c in g.expected.items() if c == "cross_day"]
    row = {d.key: d for d in await service.differences(db, day=DAY)}[key]
    assert (row.diff_class, row.reason, row.status) == ("short", "not_on_adjacent_day", "open")


async def test_a_repeated_run_gives_the_same_result_and_keeps_resolutions(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=50, each=2)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    before = {
        d.key: (d.diff_class, d.bill_fen, d.ledger_fen, d.his_fen)
        for d in await service.differences(db, day=DAY)
    }
    items_before = await count(db, ReconItem)
    totals_before = [
        (t.trade_type, t.pay_fen, t.fee_milli_fen) for t in (await service.day_report(db, DAY)).rows
    ]
    long_row = next(d for d in await service.differences(db, day=DAY) if d.diff_class == "long")
    p = await service.propose(
        db,
        difference_id=long_row.id,
        action="accept",
        reason="测试商户号的入账",
        actor="fin-a",
        now=clock.now(),
    )
    await service.decide(
        db, proposal_id=p.id, approve=True, actor="fin-b", now=clock.now(), ledger=ledger
    )

    clock.advance(hours=1)
    await run(db, clock, DAY, g, ledger)

    after = await service.differences(db, day=DAY)
    assert {d.key: (d.diff_class, d.bill_fen, d.ledger_fen, d.his_fen) for d in after} == before
    assert await count(db, ReconItem) == items_before
    assert [
        (t.trade_type, t.pay_fen, t.fee_milli_fen) for t in (await service.day_report(db, DAY)).rows
    ] == totals_before
    assert next(d for d in after if d.id == long_row.id).status == "resolved"
    assert await count(db, ReconRun) == 1


async def test_a_difference_fixed_since_closes_itself_on_the_next_run(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=10, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    [key] = [k for k, c in g.expected.items() if c == "unsettled"]
    g.his.append(
        next(replace(h, reference=key[2:], his_id="SNEW") for h in g.his if h.kind == "payment")
    )
    amount = next(e.amount_fen for e in g.ledger if e.out_trade_no == key[2:])
    g.his[-1] = replace(g.his[-1], amount_fen=amount)
    # The settlement was retried: the HIS has it and our ledger knows.
    ledger.entries_ = [
        replace(e, his_state="settled") if e.out_trade_no == key[2:] else e for e in ledger.entries_
    ]

    await run(db, clock, DAY, g, ledger)

    row = {d.key: d for d in await service.differences(db, day=DAY)}[key]
    assert (row.status, row.resolution, row.resolved_by) == (
        "auto_resolved",
        "gone_on_rerun",
        "system:reconciliation",
    )


BAD_BILLS = {
    "decimals": lambda t: t.replace("`0.00,`0,`0,", "`0.0,`0,`0,", 1),
    "layout": lambda t: t.replace("手续费,", "服务费,", 1),
    "summary": lambda t: t[: t.rindex("`")] + "`9.99\r\n",
    "duplicate": lambda t: t.replace("\r\n", "\r\n" + t.split("\r\n")[1] + "\r\n", 1),
    "truncated": lambda t: t[: t.index("总交易单数")],
    "row": lambda t: t.replace("`JSAPI,", "JSAPI,", 1),
}


@pytest.mark.parametrize("reason", sorted(BAD_BILLS))
async def test_a_refused_bill_stops_the_run_and_writes_nothing_else(
    db: AsyncSession, clock: FrozenClock, reason: str
) -> None:
    g = generate_day(DAY, tz=SH, clean=30, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    bad = BAD_BILLS[reason](bill_text(g.bill))

    with pytest.raises(BillRejected) as caught:
        await run(db, clock, DAY, g, ledger, bill=bad)
    await service.record_failure(db, day=DAY, error=caught.value, now=clock.now())

    assert caught.value.reason == reason
    run_row = (await db.execute(select(ReconRun))).scalar_one()
    assert (run_row.state, run_row.error_code) == ("failed", reason)
    assert run_row.error_detail
    for model in (ReconItem, ReconTotals, ReconDifference, ReconProposal, OutboxJob):
        assert await count(db, model) == 0, model
    assert ledger.actions == []


async def test_a_failed_rerun_keeps_the_days_earlier_result(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=30, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    diffs = await count(db, ReconDifference)

    with pytest.raises(BillRejected) as caught:
        await run(db, clock, DAY, g, ledger, bill=BAD_BILLS["summary"](bill_text(g.bill)))
    await service.record_failure(db, day=DAY, error=caught.value, now=clock.now())

    assert await count(db, ReconDifference) == diffs
    assert (await service.day_report(db, DAY)).run.state == "failed"
    assert (await service.day_report(db, DAY)).total.pay_count == len(
        [b for b in g.bill if not b.is_refund]
    )


async def _first(db: AsyncSession, cls: str) -> ReconDifference:
    return next(d for d in await service.differences(db, day=DAY) if d.diff_class == cls)


async def test_maker_checker_the_proposer_cannot_approve(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=10, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    row = await _first(db, "unsettled")

    p = await service.propose(
        db,
        difference_id=row.id,
        action="settle",
        reason="HIS was down at 23:00",
        actor="fin-a",
        now=clock.now(),
    )
    with pytest.raises(OwnProposal):
        await service.decide(
            db, proposal_id=p.id, approve=True, actor="fin-a", now=clock.now(), ledger=ledger
        )
    assert staff_actions(ledger) == []
    await db.refresh(row)
    assert row.status == "proposed"
    with pytest.raises(AlreadyProposed):
        await service.propose(
            db,
            difference_id=row.id,
            action="accept",
            reason="again",
            actor="fin-c",
            now=clock.now(),
        )

    await service.decide(
        db, proposal_id=p.id, approve=True, actor="fin-b", now=clock.now(), ledger=ledger
    )

    assert staff_actions(ledger) == [("settle", row.out_trade_no, "fin-b", None)]
    await db.refresh(row)
    assert (row.status, row.resolution, row.resolved_by) == ("resolved", "settle", "fin-b")
    actions = (
        await db.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.outcome)
            .where(AuditEntry.action.like("reconciliation.%"))
            .order_by(AuditEntry.id)
        )
    ).all()
    assert [tuple(a) for a in actions if a[0] != "reconciliation.day_reconciled"] == [
        ("reconciliation.propose", "fin-a", "ok"),
        ("reconciliation.approve", "fin-a", "denied"),
        ("reconciliation.approve", "fin-b", "ok"),
    ]


async def test_a_rejected_proposal_reopens_and_a_refund_goes_through_the_ledger(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=10, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    row = await _first(db, "duplicate")
    p = await service.propose(
        db, difference_id=row.id, action="accept", reason="ok", actor="fin-a", now=clock.now()
    )
    await service.decide(
        db,
        proposal_id=p.id,
        approve=False,
        actor="fin-b",
        now=clock.now(),
        ledger=ledger,
        note="needs a refund",
    )
    await db.refresh(row)
    assert row.status == "open"

    with pytest.raises(ActionInvalid):
        await service.propose(
            db,
            difference_id=row.id,
            action="refund",
            reason="paid twice",
            actor="fin-a",
            now=clock.now(),
            amount_fen=(row.ledger_fen or 0) + 1,
        )
    await db.refresh(row)
    assert row.status == "open"
    p2 = await service.propose(
        db,
        difference_id=row.id,
        action="refund",
        reason="paid twice",
        actor="fin-a",
        now=clock.now(),
        amount_fen=100,
    )
    await service.decide(
        db, proposal_id=p2.id, approve=True, actor="fin-b", now=clock.now(), ledger=ledger
    )

    assert staff_actions(ledger) == [("refund", row.out_trade_no, "fin-b", 100)]


async def test_a_reversal_entry_books_the_difference(db: AsyncSession, clock: FrozenClock) -> None:
    g = generate_day(DAY, tz=SH, clean=10, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    row = await _first(db, "long")

    p = await service.propose(
        db,
        difference_id=row.id,
        action="reversal",
        reason="not our merchant's order",
        actor="fin-a",
        now=clock.now(),
    )
    await service.decide(
        db, proposal_id=p.id, approve=True, actor="fin-b", now=clock.now(), ledger=ledger
    )

    adj = (await db.execute(select(ReconAdjustment))).scalar_one()
    assert (adj.amount_fen, adj.proposed_by, adj.approved_by) == (row.bill_fen, "fin-a", "fin-b")
    summary = await service.month_summary(db, year=DAY.year, month=DAY.month)
    assert summary.adjustments_fen == row.bill_fen


@pytest.mark.parametrize(
    ("action", "reason"), [("settle", "x" * 2), ("bogus", "because"), ("accept", " ")]
)
async def test_an_action_that_does_not_fit_changes_nothing(
    db: AsyncSession, clock: FrozenClock, action: str, reason: str
) -> None:
    g = generate_day(DAY, tz=SH, clean=5, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    await run(db, clock, DAY, g, ledger)
    row = await _first(db, "long")  # not in our ledger: nothing to settle

    with pytest.raises(ActionInvalid):
        await service.propose(
            db, difference_id=row.id, action=action, reason=reason, actor="fin-a", now=clock.now()
        )

    await db.refresh(row)
    assert row.status == "open"
    assert await count(db, ReconProposal) == 0


async def test_a_late_notify_confirmed_by_a_query_is_resolved_automatically(
    db: AsyncSession, clock: FrozenClock
) -> None:
    g = generate_day(DAY, tz=SH, clean=5, each=1)
    ledger = MemoryLedger(list(g.ledger), started=g.started)
    late = next(
        e
        for e in g.ledger
        if e.state == "pending" and any(b.out_trade_no == e.out_trade_no for b in g.bill)
    )
    bill_line = next(b for b in g.bill if b.out_trade_no == late.out_trade_no)
    ledger.confirm_on_requery[late.out_trade_no] = replace(
        late, state="paid", at=bill_line.at, his_state="settled"
    )
    await run(db, clock, DAY, g, ledger)
    row = next(
        d for d in await service.differences(db, day=DAY) if d.out_trade_no == late.out_trade_no
    )
    assert row.status == "auto_pending"
    job = (
        await db.execute(
            select(OutboxJob).where(
                OutboxJob.name == service.RECHECK_JOB,
                OutboxJob.payload["difference_id"].as_integer() == row.id,
            )
        )
    ).scalar_one()

    outcome = await service.recheck(
        db, difference_id=row.id, round_no=1, ledger=ledger, now=clock.now(), policy=POLICY
    )

    assert job.run_after_at == clock.now() + timedelta(minutes=POLICY.recheck_minutes)
    assert outcome == "resolved"
    await db.refresh(row)
    assert (row.status, row.resolution, row.resolved_by) == (
        "auto_resolved",
        "late_notify_confirmed",
        "system:reconciliation",
    )
