"""The production ``LedgerSource``: our payments ledger as billing (issue 8) exposes it in
``frontdesk.billing.service`` (contract: docs/billing.md, "The ledger contract"). Wire it in
``container.py``: ``container.services["ledger"] = BillingLedger()``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import service as billing
from frontdesk.billing.schemas import LedgerEntry


class BillingLedger:
    """``reconciliation.schemas.LedgerSource`` over billing's service functions."""

    async def entries(
        self, session: AsyncSession, *, start_at: datetime, end_at: datetime
    ) -> list[LedgerEntry]:
        return await billing.ledger_entries(session, start_at=start_at, end_at=end_at)

    async def find(
        self, session: AsyncSession, *, out_trade_no: str, out_refund_no: str | None = None
    ) -> LedgerEntry | None:
        return await billing.find_ledger_entry(
            session, out_trade_no=out_trade_no, out_refund_no=out_refund_no
        )

    async def requery_payment(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None:
        await billing.requery_payment(session, out_trade_no=out_trade_no, actor=actor)

    async def retry_settlement(
        self, session: AsyncSession, *, out_trade_no: str, actor: str
    ) -> None:
        await billing.retry_settlement(session, out_trade_no=out_trade_no, actor=actor)

    async def refund_payment(
        self, session: AsyncSession, *, out_trade_no: str, amount_fen: int, reason: str, actor: str
    ) -> int:
        return await billing.refund_payment(
            session, out_trade_no=out_trade_no, amount_fen=amount_fen, reason=reason, actor=actor
        )
