"""What reconciliation works with: ledger entries (the billing contract's shape), parsed bill
rows, HIS settlements (``his.port.SettlementRecord``), and what a match produces.

``LedgerEntry`` is billing's (``frontdesk.billing.schemas``): the one shape both domains agree on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing.schemas import LedgerEntry as LedgerEntry


class LedgerSource(Protocol):
    """Our payments ledger, as reconciliation may read and act on it (billing implements it;
    see ``billing_ledger.py``). Every action is safe to call twice."""

    async def entries(
        self, session: AsyncSession, *, start_at: datetime, end_at: datetime
    ) -> list[LedgerEntry]:
        """Entries that became final in [start_at, end_at), plus those started in it and not
        final (``at`` None), ordered by (at, kind, ledger id)."""
        ...

    async def find(
        self, session: AsyncSession, *, out_trade_no: str, out_refund_no: str | None = None
    ) -> LedgerEntry | None:
        """One entry on any day."""
        ...

    async def requery_payment(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None: ...

    async def retry_settlement(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None: ...

    async def refund_payment(
        self, session: AsyncSession, *, out_trade_no: str, amount_fen: int, reason: str, actor: str
    ) -> int: ...


class BillRow(NamedTuple):
    """One detail row of the ALL trade bill, amounts in integer fen (fee in milli-fen).

    A named tuple: a million of them are made per large bill, and tuples are made fastest."""

    at: datetime  # aware UTC: payment success time, or refund *apply* time
    mchid: str
    transaction_id: str
    out_trade_no: str
    trade_type: str
    trade_state: str  # SUCCESS | REFUND | REVOKED
    settle_fen: int  # 应结订单金额 (0 on refund rows)
    refund_id: str
    out_refund_no: str
    refund_fen: int
    refund_status: str  # SUCCESS | PROCESSING | CLOSED | ABNORMAL ('' on payment rows)
    fee_milli_fen: int  # 手续费: 0.00001 yuan = 1 milli-fen; negative on refund rows
    line_no: int

    @property
    def kind(self) -> str:
        return "refund" if self.trade_state == "REFUND" else "payment"

    @property
    def amount_fen(self) -> int:
        return self.refund_fen if self.kind == "refund" else self.settle_fen

    @property
    def key(self) -> str:
        if self.kind == "refund":
            return refund_key(self.out_refund_no)
        return payment_key(self.out_trade_no)


@dataclass(frozen=True)
class BillSummary:
    count: int
    settle_fen: int
    refund_fen: int
    fee_milli_fen: int


# --- what a match produces ------------------------------------------------------------------

# Difference classes (definitions in docs/reconciliation.md and the console).
LONG = "long"  # 长款: in WeChat's bill, not in our ledger
SHORT = "short"  # 短款: final in our ledger, not in WeChat's bill
AMOUNT = "amount"  # the same movement with different amounts
STATE = "state"  # the same movement in different states
HIS_UNPAID = "his_unpaid"  # in the HIS, but neither in the bill nor paid in our ledger
UNSETTLED = "unsettled"  # paid in WeChat and our ledger, not settled in the HIS
CROSS_DAY = "cross_day"  # one-sided near midnight: the other side is on the adjacent day
DUPLICATE = "duplicate"  # the same movement twice in our ledger or in the HIS
CLASSES = (LONG, SHORT, AMOUNT, STATE, HIS_UNPAID, UNSETTLED, CROSS_DAY, DUPLICATE)

TRADE_TYPES = ("JSAPI", "NATIVE", "MICROPAY")
OTHER_TRADE_TYPE = "OTHER"


def payment_key(out_trade_no: str) -> str:
    """Movements are keyed by our merchant numbers: the HIS knows payments by payment_ref
    (= out_trade_no) and refunds by refund_ref (= out_refund_no), WeChat by both."""
    return "p|" + out_trade_no


def refund_key(out_refund_no: str) -> str:
    return "r|" + out_refund_no


@dataclass(slots=True)
class Sides:
    """What each of the three sources says about one movement (None: absent)."""

    key: str
    kind: str
    out_trade_no: str
    out_refund_no: str
    bill_fen: int | None = None
    bill_state: str | None = None
    bill_at: datetime | None = None
    transaction_id: str | None = None
    trade_type: str | None = None
    fee_milli_fen: int = 0
    ledger_fen: int | None = None
    ledger_state: str | None = None
    ledger_at: datetime | None = None
    ledger_txn: str | None = None
    ledger_his_state: str | None = None
    ledger_count: int = 0
    his_fen: int | None = None
    his_at: datetime | None = None
    his_count: int = 0


@dataclass(frozen=True)
class Finding:
    """One difference found by a match."""

    cls: str
    reason: str  # a finer code, e.g. "pending_but_billed", "his_amount"
    sides: Sides
    auto: bool = False  # safe for the system to resolve (a late notify a query confirms)


@dataclass
class TypeTotals:
    pay_count: int = 0
    pay_fen: int = 0
    refund_count: int = 0
    refund_fen: int = 0
    fee_milli_fen: int = 0
    matched_count: int = 0
    matched_fen: int = 0
    unmatched_count: int = 0
    unmatched_fen: int = 0

    @property
    def net_milli_fen(self) -> int:
        """Net settlement: payments - refunds - fees, in milli-fen (exact)."""
        return (self.pay_fen - self.refund_fen) * 1000 - self.fee_milli_fen


@dataclass
class MatchResult:
    findings: list[Finding] = field(default_factory=list)
    matched: list[Sides] = field(default_factory=list)
    totals: dict[str, TypeTotals] = field(default_factory=dict)
    bill_count: int = 0
    ledger_count: int = 0
    his_count: int = 0
