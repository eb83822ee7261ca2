"""An in-memory ledger of the billing contract's shape (a legitimate ``LedgerSource`` for
tests: billing is built in another branch) and small bill helpers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.reconciliation.schemas import LedgerEntry
from frontdesk.sims.wechat_sim.pay_bill import BillLine, iter_bill

SH = ZoneInfo("Asia/Shanghai")


@dataclass
class MemoryLedger:
    """Entries and the actions asked of it. ``confirm_on_requery`` maps out_trade_no to the
    entry a WeChat query would make of it (a late notify confirmed)."""

    entries_: list[LedgerEntry] = field(default_factory=list)
    actions: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    confirm_on_requery: dict[str, LedgerEntry] = field(default_factory=dict)
    started: dict[str, datetime] = field(default_factory=dict)  # unfinished: when begun
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)

    async def entries(
        self, session: AsyncSession, *, start_at: datetime, end_at: datetime
    ) -> list[LedgerEntry]:
        """The contract's window: final in [start, end), or started in it and not final."""
        self.windows.append((start_at, end_at))
        chosen = [
            e
            for e in self.entries_
            if start_at <= (e.at or self.started[e.out_refund_no or e.out_trade_no]) < end_at
        ]
        return sorted(chosen, key=lambda e: (e.at or end_at, e.kind, e.ledger_id))

    async def find(
        self, session: AsyncSession, *, out_trade_no: str, out_refund_no: str | None = None
    ) -> LedgerEntry | None:
        for e in self.entries_:
            if e.out_trade_no == out_trade_no and e.out_refund_no == out_refund_no:
                return e
        return None

    async def requery_payment(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None:
        self.actions.append(("requery", out_trade_no, actor, None))
        confirmed = self.confirm_on_requery.pop(out_trade_no, None)
        if confirmed is not None:
            self.entries_ = [
                confirmed if (e.out_trade_no, e.kind) == (out_trade_no, "payment") else e
                for e in self.entries_
            ]

    async def retry_settlement(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None:
        self.actions.append(("settle", out_trade_no, actor, None))

    async def refund_payment(
        self, session: AsyncSession, *, out_trade_no: str, amount_fen: int, reason: str, actor: str
    ) -> int:
        self.actions.append(("refund", out_trade_no, actor, amount_fen))
        return 900 + len(self.actions)


def bill_text(lines: list[BillLine]) -> str:
    return "\r\n".join(iter_bill(lines, bill_type="ALL", tz=SH)) + "\r\n"


def paid_late(entry: LedgerEntry, at: datetime) -> LedgerEntry:
    return replace(entry, state="paid", at=at, his_state="pending")


def day_of(at: datetime) -> date:
    return at.astimezone(SH).date()
