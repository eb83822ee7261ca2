"""Reconciliation rules: run a day, keep its differences across runs, resolve them under
maker-checker, and the numbers finance reads (day report, month summary, alarms).

A run parses and matches everything in memory first and only then writes, all in the
caller's transaction: a bill that is refused leaves nothing behind but the error on the run
(earlier results of the day stay as they were). See docs/reconciliation.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import audit, outbox
from frontdesk.core.clock import get_clock
from frontdesk.his.port import SettlementRecord
from frontdesk.reconciliation import repository as repo
from frontdesk.reconciliation.billfile import BillParser
from frontdesk.reconciliation.errors import (
    ActionInvalid,
    AlreadyProposed,
    BillRejected,
    DifferenceNotFound,
    OwnProposal,
    ProposalNotFound,
    RunNotFound,
)
from frontdesk.reconciliation.matching import (
    PAID_STATES,
    HisIndex,
    LedgerIndex,
    classify,
    index_his,
    index_ledger,
    match,
    moved,
    trade_type_bucket,
)
from frontdesk.reconciliation.models import (
    AUTO_PENDING,
    AUTO_RESOLVED,
    CLOSED_STATUSES,
    FAILED,
    OPEN,
    P_APPROVED,
    P_PROPOSED,
    P_REJECTED,
    PENDING_OTHER_DAY,
    PROPOSED,
    RECONCILED,
    RESOLVED,
    WAITING,
    ReconDifference,
    ReconProposal,
    ReconRun,
    ReconTotals,
)
from frontdesk.reconciliation.schemas import (
    CROSS_DAY,
    OTHER_TRADE_TYPE,
    TRADE_TYPES,
    Finding,
    LedgerSource,
    Sides,
    TypeTotals,
)

log = logging.getLogger("frontdesk.reconciliation")

RUN_JOB = "reconciliation.run_day"
DAILY_JOB = "reconciliation.daily"
RECHECK_JOB = "reconciliation.recheck"
SYSTEM_ACTOR = "system:reconciliation"
RECHECK_ROUNDS = 6

ACTIONS = ("requery", "settle", "refund", "reversal", "accept")


@dataclass(frozen=True)
class Policy:
    cross_day_seconds: int = 600
    recheck_minutes: int = 5
    retry_minutes: int = 30
    give_up_hours: int = 48

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        return cls(
            cross_day_seconds=settings.reconciliation_cross_day_seconds,
            recheck_minutes=settings.reconciliation_recheck_minutes,
            retry_minutes=settings.reconciliation_retry_minutes,
            give_up_hours=settings.reconciliation_give_up_hours,
        )


def day_window(day: date) -> tuple[datetime, datetime]:
    """[start, end) of the hospital calendar day, aware UTC."""
    return get_clock().day_bounds(day)


def previous_day(at: datetime) -> date:
    return get_clock().local_date_of(at) - timedelta(days=1)


# WeChat generates the day's bills from 09:00 the next day and says to fetch them after
# 10:00 (protocols/wechat.md §4.10). From noon on, NO_STATEMENT_EXIST no longer means "not
# yet": it means WeChat has no bill for the day because the merchant had no transaction.
BILL_CERTAIN_AT = time(12, 0)


def bill_certain_at(day: date) -> datetime:
    """When WeChat's bill of ``day`` is certainly published (aware UTC): noon hospital time
    the next day."""
    return get_clock().at_local(day + timedelta(days=1), BILL_CERTAIN_AT)


async def wechat_movements(session: AsyncSession, ledger: LedgerSource, day: date) -> int:
    """How many WeChat payments and refunds our ledger recorded on ``day``: payments that
    were paid, and refunds in any state (WeChat lists a refund from the day it was applied
    for, finished or not). A payment still pending or closed moved no money and is not in
    any bill."""
    index = await read_ledger(session, ledger, day)
    return sum(1 for key, item in index.items() if key.startswith("r|") or item[1] in PAID_STATES)


async def may_reconcile_empty(session: AsyncSession, day: date) -> bool:
    """Whether a NO_STATEMENT_EXIST may be reconciled as an empty bill: not when an earlier
    run of the day reconciled a real bill (WeChat had one; a later "no bill" must not wipe
    its results)."""
    run = await repo.run_for(session, day)
    return run is None or run.bill_sha1 is None


# --------------------------------------------------------------------------- running a day


async def queue_run(
    session: AsyncSession, *, day: date, now: datetime, delay_minutes: int = 0
) -> int | None:
    """Queue a run of ``day`` (the daily job, retries, and staff's "run again")."""
    run_after = now + timedelta(minutes=delay_minutes)
    return await outbox.enqueue(
        session,
        RUN_JOB,
        run_after=run_after,
        dedupe_key=f"recon-run:{day.isoformat()}:{run_after.isoformat()}",
        day=day.isoformat(),
    )


@dataclass
class Outcome:
    run: ReconRun
    findings: list[Finding] = field(default_factory=list)


async def record_failure(
    session: AsyncSession, *, day: date, error: BillRejected, now: datetime, waiting: bool = False
) -> ReconRun:
    """The run stops: only the run row changes (state, error); earlier results stay."""
    run = await repo.ensure_run(session, day, now=now, state=WAITING if waiting else FAILED)
    if run.state == RECONCILED and waiting:
        return run  # a repeated run found no bill: the day's result stands
    run.state = WAITING if waiting else FAILED
    run.attempts += 1
    run.error_code = error.reason
    run.error_detail = (error.where or error.reason)[:2000]
    run.finished_at = now
    await audit.record(
        session,
        at=now,
        actor=SYSTEM_ACTOR,
        action="reconciliation.run_failed" if not waiting else "reconciliation.bill_waiting",
        record_type="recon_run",
        record_id=day.isoformat(),
        outcome="error" if not waiting else "ok",
        detail={"reason": error.reason, "detail": (error.where or "")[:500]},
    )
    await session.flush()
    return run


async def reconcile(
    session: AsyncSession,
    *,
    day: date,
    bill_lines: Iterable[str] | None,
    bill_sha1: str | None,
    his_records: Sequence[SettlementRecord] | HisIndex,
    ledger: LedgerSource,
    mchid: str | None,
    now: datetime,
    policy: Policy,
    his_later: HisIndex | None = None,
) -> Outcome:
    """Parse and match the day, then replace its results in one go. A refused bill raises
    ``BillRejected`` before anything is written (the caller records it).

    ``bill_lines`` None: WeChat has no bill for the day (no transactions, NO_STATEMENT_EXIST
    past ``bill_certain_at``): the day is matched against an empty bill, so whatever our
    ledger or the HIS has for it is a difference, and the run is marked ``empty_day``.

    ``his_later``: the HIS's settlements of the next day, for this day's movements the HIS
    booked only then (see ``matching.match``)."""
    led = await read_ledger(session, ledger, day)
    his_index = his_records if isinstance(his_records, dict) else index_his(his_records)
    await _drop_earlier_bookings(session, ledger, day, led, his_index)
    rows = () if bill_lines is None else BillParser(mchid=mchid).rows(bill_lines)
    result = match(rows, led, his_index, his_later=his_later)
    run = await repo.ensure_run(session, day, now=now, state=RECONCILED)
    existing = await repo.differences_of(session, day)
    findings = await _cross_day(session, day, result.findings, policy)
    found_keys: set[str] = set()
    auto: list[ReconDifference] = []
    for finding, cls, reason, status in findings:
        s = finding.sides
        found_keys.add(s.key)
        values = _sides_values(s)
        row = existing.get(s.key)
        if row is None:
            row = ReconDifference(
                day_on=day,
                key=s.key,
                diff_class=cls,
                reason=reason,
                status=status,
                detected_at=now,
                last_seen_at=now,
                **values,
            )
            session.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.diff_class, row.reason, row.last_seen_at = cls, reason, now
            if row.status in (OPEN, PENDING_OTHER_DAY, AUTO_PENDING) or (
                row.status == AUTO_RESOLVED and status != AUTO_RESOLVED
            ):
                row.status = status
                if status != AUTO_RESOLVED:
                    row.resolution = row.resolution_note = row.resolved_by = None
                    row.resolved_at = None
            if status == AUTO_RESOLVED and row.status not in CLOSED_STATUSES:
                row.status = AUTO_RESOLVED
        if status == AUTO_RESOLVED and row.resolution is None:
            row.resolution = "matched_across_days"
            row.resolved_by, row.resolved_at = SYSTEM_ACTOR, now
        if finding.auto and row.status == OPEN:
            row.status = AUTO_PENDING
            auto.append(row)
    for key, row in existing.items():
        if key not in found_keys and row.status not in CLOSED_STATUSES:
            # Gone on this run (a requery or a settlement fixed it, or the adjacent day
            # matched it): the system closes it and says why.
            row.status = AUTO_RESOLVED
            row.resolution = "gone_on_rerun"
            row.resolved_by, row.resolved_at = SYSTEM_ACTOR, now
            await _close_open_proposals(session, row.id, now)
    await session.flush()
    items = [_item_values(day, s, None) for s in result.matched]
    # The details carry the class the difference was filed under (cross-day included).
    items += [_item_values(day, f.sides, cls) for f, cls, _, _ in findings]
    await repo.replace_items(session, day, items)
    await repo.replace_totals(session, day, _totals_rows(day, result.totals))
    run.state = RECONCILED
    run.bill_sha1 = bill_sha1
    run.empty_day = bill_lines is None
    run.bill_lines = result.bill_count
    run.ledger_entries = result.ledger_count
    run.his_records = result.his_count
    run.matched = len(result.matched)
    run.differences = len(result.findings)
    run.attempts += 1
    run.error_code = run.error_detail = None
    run.finished_at = run.reconciled_at = now
    for row in auto:
        if row.out_trade_no:
            await ledger.requery_payment(session, out_trade_no=row.out_trade_no, actor=SYSTEM_ACTOR)
            await outbox.enqueue(
                session,
                RECHECK_JOB,
                run_after=now + timedelta(minutes=policy.recheck_minutes),
                dedupe_key=f"recon-recheck:{row.id}:{now.isoformat()}:1",
                difference_id=row.id,
                round=1,
            )
        else:
            row.status = OPEN
    await audit.record(
        session,
        at=now,
        actor=SYSTEM_ACTOR,
        action="reconciliation.day_reconciled",
        record_type="recon_run",
        record_id=day.isoformat(),
        detail={
            "bill_lines": result.bill_count,
            "matched": len(result.matched),
            "differences": len(result.findings),
            "bill_sha1": bill_sha1,
        },
    )
    await session.flush()
    return Outcome(run=run, findings=[f for f, *_ in findings])


async def _drop_earlier_bookings(
    session: AsyncSession, ledger: LedgerSource, day: date, led: LedgerIndex, his: HisIndex
) -> None:
    """HIS records of this day for a movement our ledger finished the day before: the HIS
    booked it late (settled the next morning). That day's run matched them (it reads this
    day's settlements as its ``his_later``), so they are not this day's ``his_unpaid``.
    Payments only: the HIS books a refund before WeChat makes it, never after."""
    start = day_window(day)[0]
    earlier = start - timedelta(days=1)
    for key in [k for k in his if k.startswith("p|") and k not in led]:
        entry = await ledger.find(session, out_trade_no=key[2:])
        if entry is not None and entry.at is not None and earlier <= entry.at < start:
            del his[key]


async def read_ledger(session: AsyncSession, ledger: LedgerSource, day: date) -> LedgerIndex:
    """The day's ledger, read an hour at a time and indexed as it comes: on a busy day only
    one hour of full ``LedgerEntry`` objects is in memory at once. The contract's window
    (final in it, or started in it and not final) makes the hours a partition of the day."""
    start, end = day_window(day)
    index: LedgerIndex = {}
    at = start
    while at < end:
        upto = min(at + timedelta(hours=1), end)
        index_ledger(await ledger.entries(session, start_at=at, end_at=upto), index)
        at = upto
    return index


def _sides_values(s: Sides) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "out_trade_no": s.out_trade_no,
        "out_refund_no": s.out_refund_no,
        "transaction_id": s.transaction_id or s.ledger_txn,
        "trade_type": trade_type_bucket(s.trade_type),
        "bill_fen": s.bill_fen,
        "ledger_fen": s.ledger_fen,
        "his_fen": s.his_fen,
        "bill_at": s.bill_at,
        "ledger_at": s.ledger_at,
        "his_at": s.his_at,
    }


def _item_values(day: date, s: Sides, cls: str | None) -> dict[str, Any]:
    values = _sides_values(s)
    values.update(day_on=day, key=s.key, fee_milli_fen=s.fee_milli_fen, diff_class=cls)
    return values


def _totals_rows(day: date, totals: dict[str, TypeTotals]) -> list[dict[str, Any]]:
    rows = []
    for name in (*TRADE_TYPES, OTHER_TRADE_TYPE):
        t = totals.get(name)
        if t is None:
            continue
        rows.append(
            {
                "day_on": day,
                "trade_type": name,
                "pay_count": t.pay_count,
                "pay_fen": t.pay_fen,
                "refund_count": t.refund_count,
                "refund_fen": t.refund_fen,
                "fee_milli_fen": t.fee_milli_fen,
                "matched_count": t.matched_count,
                "matched_fen": t.matched_fen,
                "unmatched_count": t.unmatched_count,
                "unmatched_fen": t.unmatched_fen,
            }
        )
    return rows


# --------------------------------------------------------------------------- across days


def _near(s: Sides, day: date, tolerance: int) -> int:
    """+1: every time we have is within ``tolerance`` s before the day's end; -1: after its
    start; 0: neither (or nothing to go by)."""
    start, end = day_window(day)
    times = [t for t in (s.bill_at, s.ledger_at, s.his_at) if t is not None]
    if not times or tolerance <= 0:
        return 0
    if all(timedelta(0) < end - t <= timedelta(seconds=tolerance) for t in times):
        return 1
    if all(timedelta(0) <= t - start < timedelta(seconds=tolerance) for t in times):
        return -1
    return 0


def _missing_a_side(finding: Finding) -> bool:
    s = finding.sides
    if finding.cls == "duplicate":
        return False
    return s.bill_fen is None or s.ledger_fen is None or s.his_count == 0


def _merge(a: Sides, b: ReconDifference) -> Sides:
    """``a`` completed with what the adjacent day's difference row saw."""
    merged = Sides(
        key=a.key,
        kind=a.kind,
        out_trade_no=a.out_trade_no or b.out_trade_no,
        out_refund_no=a.out_refund_no or b.out_refund_no,
    )
    for name in (
        "bill_fen",
        "bill_state",
        "bill_at",
        "transaction_id",
        "trade_type",
        "ledger_fen",
        "ledger_state",
        "ledger_at",
        "ledger_txn",
        "ledger_his_state",
        "ledger_count",
        "his_fen",
        "his_at",
        "his_count",
        "fee_milli_fen",
    ):
        setattr(merged, name, getattr(a, name))
    if merged.bill_fen is None and b.bill_fen is not None:
        merged.bill_fen, merged.bill_at = b.bill_fen, b.bill_at
        merged.bill_state = "SUCCESS"
        merged.transaction_id = b.transaction_id
    if merged.ledger_fen is None and b.ledger_fen is not None:
        merged.ledger_fen, merged.ledger_at = b.ledger_fen, b.ledger_at
        merged.ledger_state = "paid" if a.kind == "payment" else "success"
        merged.ledger_count = 1
        merged.ledger_his_state = "settled" if b.his_fen is not None else "pending"
    if merged.his_count == 0 and b.his_fen is not None:
        merged.his_fen, merged.his_at, merged.his_count = b.his_fen, b.his_at, 1
    if merged.ledger_his_state is not None and merged.his_count:
        merged.ledger_his_state = "refunded" if a.kind == "refund" else "settled"
    return merged


async def _cross_day(
    session: AsyncSession, day: date, findings: list[Finding], policy: Policy
) -> list[tuple[Finding, str, str, str]]:
    """(finding, class, reason, status) for each finding, cross-day ones settled with the
    adjacent days. A one-sided movement near midnight waits for the adjacent day
    (``pending_other_day``, no alarm); once both days are reconciled their two halves are
    merged: complete and equal -> both closed as "matched across days"; otherwise both
    become ordinary open differences."""
    adjacent_days = [day - timedelta(days=1), day + timedelta(days=1)]
    waiting = {(d.day_on, d.key): d for d in await repo.pending_other_day(session, adjacent_days)}
    reconciled = {
        d: (run is not None and run.state == RECONCILED)
        for d in adjacent_days
        for run in [await repo.run_for(session, d)]
    }
    out: list[tuple[Finding, str, str, str]] = []
    paired: set[tuple[date, str]] = set()
    now = get_clock().now()
    for f in findings:
        direction = _near(f.sides, day, policy.cross_day_seconds) if _missing_a_side(f) else 0
        if direction == 0:
            out.append((f, f.cls, f.reason, OPEN))
            continue
        other_day = day + timedelta(days=direction)
        other = waiting.get((other_day, f.sides.key))
        if other is not None:
            paired.add((other_day, f.sides.key))
            merged_finding = classify(_merge(f.sides, other))
            if merged_finding is None:
                other.status = AUTO_RESOLVED
                other.resolution = "matched_across_days"
                other.resolved_by, other.resolved_at = SYSTEM_ACTOR, now
                out.append((f, CROSS_DAY, f.cls, AUTO_RESOLVED))
            else:
                other.diff_class, other.reason, other.status = (
                    other.reason,
                    "not_on_adjacent_day",
                    OPEN,
                )
                out.append((f, f.cls, f.reason, OPEN))
        elif reconciled[other_day]:
            out.append((f, f.cls, f.reason, OPEN))  # the adjacent day did not have it
        else:
            out.append((f, CROSS_DAY, f.cls, PENDING_OTHER_DAY))
    # Adjacent days' halves that pointed at this day and found nothing here.
    for (other_day, key), other in waiting.items():
        if (other_day, key) in paired:
            continue
        sides = Sides(key=key, kind=other.kind, out_trade_no="", out_refund_no="")
        sides.bill_at, sides.ledger_at, sides.his_at = other.bill_at, other.ledger_at, other.his_at
        if other_day + timedelta(days=_near(sides, other_day, policy.cross_day_seconds)) == day:
            other.diff_class, other.reason, other.status = other.reason, "not_on_adjacent_day", OPEN
    return out


# --------------------------------------------------------------------------- automatic


async def recheck(
    session: AsyncSession,
    *,
    difference_id: int,
    round_no: int,
    ledger: LedgerSource,
    now: datetime,
    policy: Policy,
) -> str:
    """After the system asked WeChat again: does our ledger now agree with the bill? Then
    the difference closes itself ("late notify confirmed by query"); after a few rounds it
    becomes an ordinary open difference."""
    row = await repo.difference(session, difference_id)
    if row is None or row.status != AUTO_PENDING:
        return "gone"
    entry = await ledger.find(
        session, out_trade_no=row.out_trade_no, out_refund_no=row.out_refund_no or None
    )
    if entry is not None:
        s = Sides(key=row.key, kind=row.kind, out_trade_no=row.out_trade_no, out_refund_no="")
        s.bill_fen, s.ledger_fen, s.ledger_state = row.bill_fen, entry.amount_fen, entry.state
        if moved(s) and entry.amount_fen == row.bill_fen:
            row.status = AUTO_RESOLVED
            row.resolution = "late_notify_confirmed"
            row.ledger_fen, row.ledger_at = entry.amount_fen, entry.at
            row.resolved_by, row.resolved_at = SYSTEM_ACTOR, now
            await audit.record(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action="reconciliation.auto_resolved",
                record_type="recon_difference",
                record_id=row.id,
                detail={"resolution": "late_notify_confirmed", "key": row.key},
            )
            return "resolved"
    if round_no >= RECHECK_ROUNDS:
        row.status = OPEN
        return "open"
    await outbox.enqueue(
        session,
        RECHECK_JOB,
        run_after=now + timedelta(minutes=policy.recheck_minutes),
        dedupe_key=f"recon-recheck:{row.id}:{now.isoformat()}:{round_no + 1}",
        difference_id=row.id,
        round=round_no + 1,
    )
    return "waiting"


# --------------------------------------------------------------------------- maker-checker


def _allowed(row: ReconDifference, action: str) -> bool:
    if action in ("accept", "reversal"):
        return True
    if not row.out_trade_no or (row.kind != "payment" and action != "requery"):
        return False
    if action == "requery":
        return row.ledger_fen is not None or row.diff_class in ("state", "cross_day", "short")
    if action == "settle":
        return row.ledger_fen is not None and row.kind == "payment"
    return row.ledger_fen is not None  # refund: only what our ledger took


def reversal_amount(row: ReconDifference) -> int:
    """The signed amount a reversal entry books: what WeChat holds minus what we hold
    (for a movement only the HIS has: the HIS's amount, reversed)."""
    if row.bill_fen is not None or row.ledger_fen is not None:
        return (row.bill_fen or 0) - (row.ledger_fen or 0)
    return -(row.his_fen or 0)


async def propose(
    session: AsyncSession,
    *,
    difference_id: int,
    action: str,
    reason: str,
    actor: str,
    now: datetime,
    amount_fen: int | None = None,
    ip: str | None = None,
) -> ReconProposal:
    row = await repo.difference(session, difference_id)
    if row is None:
        raise DifferenceNotFound()
    reason = reason.strip()
    if action not in ACTIONS or not _allowed(row, action) or not 2 <= len(reason) <= 500:
        raise ActionInvalid(action=action)
    if action == "refund":
        if amount_fen is None or not 0 < amount_fen <= (row.ledger_fen or 0):
            raise ActionInvalid(action=action)
    elif action == "reversal":
        amount_fen = reversal_amount(row)
        if amount_fen == 0:
            raise ActionInvalid(action=action)
    else:
        amount_fen = None
    if not await repo.set_difference_status(
        session, row.id, from_statuses=(OPEN, AUTO_PENDING), status=PROPOSED
    ):
        raise AlreadyProposed()
    proposal = await repo.add_proposal(
        session,
        difference_id=row.id,
        action=action,
        amount_fen=amount_fen,
        reason=reason,
        state=P_PROPOSED,
        proposed_by=actor,
        proposed_at=now,
    )
    await audit.record(
        session,
        at=now,
        actor=actor,
        action="reconciliation.propose",
        record_type="recon_difference",
        record_id=row.id,
        ip=ip,
        detail={"action": action, "amount_fen": amount_fen, "reason": reason, "key": row.key},
    )
    return proposal


async def decide(
    session: AsyncSession,
    *,
    proposal_id: int,
    approve: bool,
    actor: str,
    now: datetime,
    ledger: LedgerSource,
    note: str = "",
    ip: str | None = None,
) -> ReconProposal:
    """The second person approves (the action runs) or rejects (the difference reopens)."""
    proposal = await repo.proposal(session, proposal_id)
    if proposal is None:
        raise ProposalNotFound()
    if proposal.proposed_by == actor:
        await audit.record(
            session,
            at=now,
            actor=actor,
            action="reconciliation.approve",
            record_type="recon_proposal",
            record_id=proposal.id,
            ip=ip,
            outcome="denied",
            detail={"reason": "own_proposal"},
        )
        raise OwnProposal()
    row = await repo.difference(session, proposal.difference_id)
    assert row is not None  # the foreign key
    state = P_APPROVED if approve else P_REJECTED
    if not await repo.decide_proposal(
        session,
        proposal.id,
        from_state=P_PROPOSED,
        state=state,
        decided_by=actor,
        decided_at=now,
        decision_note=note.strip()[:500] or None,
    ):
        raise AlreadyProposed()
    if approve:
        await _carry_out(session, row=row, proposal=proposal, actor=actor, now=now, ledger=ledger)
        await repo.set_difference_status(
            session,
            row.id,
            from_statuses=(PROPOSED,),
            status=RESOLVED,
            resolution=proposal.action,
            resolution_note=proposal.reason,
            resolved_by=actor,
            resolved_at=now,
        )
    else:
        await repo.set_difference_status(session, row.id, from_statuses=(PROPOSED,), status=OPEN)
    await audit.record(
        session,
        at=now,
        actor=actor,
        action="reconciliation.approve" if approve else "reconciliation.reject",
        record_type="recon_proposal",
        record_id=proposal.id,
        ip=ip,
        detail={
            "action": proposal.action,
            "amount_fen": proposal.amount_fen,
            "proposed_by": proposal.proposed_by,
            "difference_id": row.id,
            "key": row.key,
        },
    )
    await session.refresh(proposal)
    return proposal


async def _carry_out(
    session: AsyncSession,
    *,
    row: ReconDifference,
    proposal: ReconProposal,
    actor: str,
    now: datetime,
    ledger: LedgerSource,
) -> None:
    if proposal.action == "requery":
        await ledger.requery_payment(session, out_trade_no=row.out_trade_no, actor=actor)
    elif proposal.action == "settle":
        await ledger.retry_settlement(session, out_trade_no=row.out_trade_no, actor=actor)
    elif proposal.action == "refund":
        assert proposal.amount_fen is not None
        await ledger.refund_payment(
            session,
            out_trade_no=row.out_trade_no,
            amount_fen=proposal.amount_fen,
            reason=proposal.reason,
            actor=actor,
        )
    elif proposal.action == "reversal":
        assert proposal.amount_fen is not None
        await repo.add_adjustment(
            session,
            difference_id=row.id,
            day_on=row.day_on,
            amount_fen=proposal.amount_fen,
            reason=proposal.reason,
            proposed_by=proposal.proposed_by,
            approved_by=actor,
            created_at=now,
        )
    # "accept": nothing to do but close it with the reason.


async def _close_open_proposals(session: AsyncSession, difference_id: int, now: datetime) -> None:
    for p in await repo.proposals_for(session, [difference_id]):
        if p.state == P_PROPOSED:
            await repo.decide_proposal(
                session,
                p.id,
                from_state=P_PROPOSED,
                state=P_REJECTED,
                decided_by=SYSTEM_ACTOR,
                decided_at=now,
                decision_note="gone_on_rerun",
            )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DayReport:
    run: ReconRun
    rows: list[ReconTotals]
    total: TypeTotals


def sum_totals(rows: Iterable[ReconTotals]) -> TypeTotals:
    t = TypeTotals()
    for r in rows:
        t.pay_count += r.pay_count
        t.pay_fen += r.pay_fen
        t.refund_count += r.refund_count
        t.refund_fen += r.refund_fen
        t.fee_milli_fen += r.fee_milli_fen
        t.matched_count += r.matched_count
        t.matched_fen += r.matched_fen
        t.unmatched_count += r.unmatched_count
        t.unmatched_fen += r.unmatched_fen
    return t


async def day_report(session: AsyncSession, day: date) -> DayReport:
    run = await repo.run_for(session, day)
    if run is None:
        raise RunNotFound()
    rows = list(await repo.totals(session, start=day, end=day + timedelta(days=1)))
    return DayReport(run=run, rows=rows, total=sum_totals(rows))


async def runs(session: AsyncSession, *, limit: int = 62) -> Sequence[ReconRun]:
    return await repo.latest_runs(session, limit)


async def differences(
    session: AsyncSession, *, day: date | None = None, statuses: Sequence[str] | None = None
) -> Sequence[ReconDifference]:
    return await repo.differences(session, day=day, statuses=statuses)


async def proposals_for(
    session: AsyncSession, difference_ids: Sequence[int]
) -> Sequence[ReconProposal]:
    return await repo.proposals_for(session, difference_ids)


async def difference_day(session: AsyncSession, difference_id: int) -> date | None:
    row = await repo.difference(session, difference_id)
    return None if row is None else row.day_on


async def proposal_day(session: AsyncSession, proposal_id: int) -> date | None:
    proposal = await repo.proposal(session, proposal_id)
    return None if proposal is None else await difference_day(session, proposal.difference_id)


async def items(session: AsyncSession, day: date) -> Sequence[Any]:
    return await repo.items(session, day)


@dataclass(frozen=True)
class MonthSummary:
    year: int
    month: int
    days: list[tuple[date, TypeTotals]]
    by_type: dict[str, TypeTotals]
    total: TypeTotals
    differences_by_class: dict[str, dict[str, int]]  # class -> status -> count
    adjustments_fen: int
    failed_days: list[date]


def month_bounds(year: int, month: int) -> tuple[date, date]:
    start = date(year, month, 1)
    end = date(year + (month == 12), month % 12 + 1, 1)
    return start, end


async def month_summary(session: AsyncSession, *, year: int, month: int) -> MonthSummary:
    start, end = month_bounds(year, month)
    rows = await repo.totals(session, start=start, end=end)
    per_day: dict[date, list[ReconTotals]] = {}
    per_type: dict[str, list[ReconTotals]] = {}
    for r in rows:
        per_day.setdefault(r.day_on, []).append(r)
        per_type.setdefault(r.trade_type, []).append(r)
    diffs: dict[str, dict[str, int]] = {}
    for d in await repo.differences(session, start=start, end=end):
        by_status = diffs.setdefault(d.diff_class, {})
        by_status[d.status] = by_status.get(d.status, 0) + 1
    adjustments = await repo.adjustments(session, start=start, end=end)
    failed = [
        r.day_on for r in await repo.runs(session, start=start, end=end) if r.state != RECONCILED
    ]
    return MonthSummary(
        year=year,
        month=month,
        days=[(d, sum_totals(v)) for d, v in sorted(per_day.items())],
        by_type={
            k: sum_totals(per_type[k]) for k in (*TRADE_TYPES, OTHER_TRADE_TYPE) if k in per_type
        },
        total=sum_totals(rows),
        differences_by_class=diffs,
        adjustments_fen=sum(a.amount_fen for a in adjustments),
        failed_days=sorted(failed),
    )


@dataclass(frozen=True)
class Alarms:
    unresolved: int
    failed_days: int
    latest: ReconRun | None


async def alarms(session: AsyncSession) -> Alarms:
    unresolved, failed = await repo.alarm_counts(session)
    latest = await repo.latest_runs(session, 1)
    return Alarms(unresolved=unresolved, failed_days=failed, latest=latest[0] if latest else None)
