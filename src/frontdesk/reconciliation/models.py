"""Reconciliation's tables: one run per hospital day, its matched items and report numbers
(replaced together when a day is run again), its differences (kept across runs: their
resolution must survive), proposals under maker-checker, and reversal entries."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false as sa_false

from frontdesk.core.models import Base, BigId, UTCDateTime

# run states
WAITING = "waiting"  # the bill is not published yet: retried later
FAILED = "failed"  # the bill could not be fetched or was refused; error_* say why
RECONCILED = "reconciled"

# difference statuses
OPEN = "open"  # an alarm until someone resolves it
PENDING_OTHER_DAY = "pending_other_day"  # cross-day: waits for the adjacent day (no alarm)
AUTO_PENDING = "auto_pending"  # the system asked WeChat again; no alarm while it waits
PROPOSED = "proposed"  # an action was proposed and waits for a second person
RESOLVED = "resolved"  # closed by an approved action
AUTO_RESOLVED = "auto_resolved"  # closed by the system (listed as such)
ALARM_STATUSES = (OPEN, PROPOSED)
CLOSED_STATUSES = (RESOLVED, AUTO_RESOLVED)

# proposal states
P_PROPOSED, P_APPROVED, P_REJECTED = "proposed", "approved", "rejected"


class ReconRun(Base):
    """The reconciliation of one hospital day (one row per day; a re-run replaces it)."""

    __tablename__ = "recon_run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day_on: Mapped[date] = mapped_column(Date, nullable=False, unique=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    bill_sha1: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # WeChat has no bill for the day (NO_STATEMENT_EXIST) and our ledger recorded no WeChat
    # payment or refund: reconciled against an empty bill (no SHA-1 to show).
    empty_day: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=sa_false()
    )
    bill_lines: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    ledger_entries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    his_records: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    matched: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    differences: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReconItem(Base):
    """One movement of a reconciled day as the three sources saw it (matched or not): the
    day's details, exported for finance."""

    __tablename__ = "recon_item"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day_on: Mapped[date] = mapped_column(Date, nullable=False)
    key: Mapped[str] = mapped_column(String(80), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    out_trade_no: Mapped[str] = mapped_column(String(64), nullable=False)
    out_refund_no: Mapped[str] = mapped_column(String(64), nullable=False)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_type: Mapped[str] = mapped_column(String(16), nullable=False)
    bill_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ledger_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    his_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fee_milli_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bill_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ledger_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    his_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    diff_class: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: matched

    __table_args__ = (UniqueConstraint("day_on", "key"),)


class ReconTotals(Base):
    """The day's report numbers for one trade type (JSAPI, NATIVE, MICROPAY, OTHER)."""

    __tablename__ = "recon_totals"

    day_on: Mapped[date] = mapped_column(Date, primary_key=True)
    trade_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    pay_count: Mapped[int] = mapped_column(Integer, nullable=False)
    pay_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    refund_count: Mapped[int] = mapped_column(Integer, nullable=False)
    refund_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fee_milli_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    matched_count: Mapped[int] = mapped_column(Integer, nullable=False)
    matched_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    unmatched_count: Mapped[int] = mapped_column(Integer, nullable=False)
    unmatched_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReconDifference(Base):
    """One difference of a day, keyed by (day, movement): a re-run updates it in place and
    keeps its resolution."""

    __tablename__ = "recon_difference"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day_on: Mapped[date] = mapped_column(Date, nullable=False)
    key: Mapped[str] = mapped_column(String(80), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    out_trade_no: Mapped[str] = mapped_column(String(64), nullable=False)
    out_refund_no: Mapped[str] = mapped_column(String(64), nullable=False)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_type: Mapped[str] = mapped_column(String(16), nullable=False)
    diff_class: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    bill_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ledger_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    his_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bill_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ledger_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    his_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resolution_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        UniqueConstraint("day_on", "key"),
        Index("ix_recon_difference_status", "status"),
    )


class ReconProposal(Base):
    """An action proposed by one person and approved (or rejected) by another."""

    __tablename__ = "recon_proposal"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    difference_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("recon_difference.id", ondelete="CASCADE"), nullable=False, index=True
    )
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    amount_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(String(12), nullable=False)
    proposed_by: Mapped[str] = mapped_column(String(100), nullable=False)
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReconAdjustment(Base):
    """A reversal entry: finance books the difference against the day (our books only)."""

    __tablename__ = "recon_adjustment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    difference_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("recon_difference.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    day_on: Mapped[date] = mapped_column(Date, nullable=False, index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)  # signed: + in, - out
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    proposed_by: Mapped[str] = mapped_column(String(100), nullable=False)
    approved_by: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
