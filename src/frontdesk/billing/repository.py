"""All of billing's SQL: the order mirror, payments, refunds and the event history.

State changes are guarded statements (``UPDATE ... WHERE state = :from``) whose row count
says whether this caller made the change; money reservations on a payment are one guarded
``UPDATE`` so concurrent refunds can never exceed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import models as m
from frontdesk.core.sql import insert_ignoring_conflict


def _count(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


# --------------------------------------------------------------------------- events


async def record_event(
    session: AsyncSession,
    *,
    payment_id: int,
    key: str,
    kind: str,
    source: str,
    actor: str,
    at: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
    refund_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Append one history row; False (nothing written) if ``key`` was recorded before."""
    stmt = insert_ignoring_conflict(
        session,
        m.BillingEvent.__table__,
        {
            "payment_id": payment_id,
            "refund_id": refund_id,
            "idempotency_key": key[:160],
            "kind": kind,
            "from_state": from_state,
            "to_state": to_state,
            "source": source,
            "actor": actor[:64],
            "detail": detail or {},
            "at": at,
        },
        conflict_columns=["idempotency_key"],
    )
    return _count(await session.execute(stmt)) == 1


async def events_of(session: AsyncSession, payment_id: int) -> list[m.BillingEvent]:
    rows = await session.scalars(
        select(m.BillingEvent)
        .where(m.BillingEvent.payment_id == payment_id)
        .order_by(m.BillingEvent.at, m.BillingEvent.id)
    )
    return list(rows)


# --------------------------------------------------------------------------- orders


async def order_by_his_id(session: AsyncSession, his_order_id: str) -> m.BillingOrder | None:
    return await session.scalar(
        select(m.BillingOrder).where(m.BillingOrder.his_order_id == his_order_id)
    )


async def orders_of_card(
    session: AsyncSession, card_no: str, statuses: Sequence[str]
) -> list[m.BillingOrder]:
    rows = await session.scalars(
        select(m.BillingOrder)
        .where(m.BillingOrder.card_no == card_no, m.BillingOrder.status.in_(list(statuses)))
        .order_by(m.BillingOrder.ordered_at.desc(), m.BillingOrder.his_order_id)
    )
    return list(rows)


async def orders_by_his_ids(
    session: AsyncSession, his_order_ids: Iterable[str]
) -> list[m.BillingOrder]:
    ids = list(his_order_ids)
    if not ids:
        return []
    return list(
        await session.scalars(select(m.BillingOrder).where(m.BillingOrder.his_order_id.in_(ids)))
    )


async def items_of_orders(
    session: AsyncSession, order_ids: Iterable[int]
) -> dict[int, list[m.BillingOrderItem]]:
    ids = list(order_ids)
    out: dict[int, list[m.BillingOrderItem]] = {}
    if not ids:
        return out
    rows = await session.scalars(
        select(m.BillingOrderItem)
        .where(m.BillingOrderItem.order_id.in_(ids))
        .order_by(m.BillingOrderItem.id)
    )
    for row in rows:
        out.setdefault(row.order_id, []).append(row)
    return out


async def insert_order(session: AsyncSession, values: dict[str, Any]) -> bool:
    stmt = insert_ignoring_conflict(
        session, m.BillingOrder.__table__, values, conflict_columns=["his_order_id"]
    )
    return _count(await session.execute(stmt)) == 1


async def insert_item(session: AsyncSession, values: dict[str, Any]) -> bool:
    stmt = insert_ignoring_conflict(
        session, m.BillingOrderItem.__table__, values, conflict_columns=["his_item_id"]
    )
    return _count(await session.execute(stmt)) == 1


async def update_unpaid_order(
    session: AsyncSession, his_order_id: str, values: dict[str, Any]
) -> bool:
    result = await session.execute(
        update(m.BillingOrder)
        .where(
            m.BillingOrder.his_order_id == his_order_id,
            m.BillingOrder.status.in_([m.ORDER_UNPAID, m.ORDER_VOID]),
        )
        .values(**values)
    )
    return _count(result) == 1


async def void_missing_unpaid(
    session: AsyncSession, card_no: str, keep: Sequence[str], now: datetime
) -> int:
    stmt = update(m.BillingOrder).where(
        m.BillingOrder.card_no == card_no, m.BillingOrder.status == m.ORDER_UNPAID
    )
    if keep:
        stmt = stmt.where(m.BillingOrder.his_order_id.not_in(list(keep)))
    return _count(await session.execute(stmt.values(status=m.ORDER_VOID, refreshed_at=now)))


async def claim_due_notice(session: AsyncSession, his_order_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(m.BillingOrder)
        .where(
            m.BillingOrder.his_order_id == his_order_id,
            m.BillingOrder.status == m.ORDER_UNPAID,
            m.BillingOrder.due_notified_at.is_(None),
        )
        .values(due_notified_at=now)
    )
    return _count(result) == 1


async def mark_orders_paid(
    session: AsyncSession,
    his_order_ids: Sequence[str],
    *,
    channel: str,
    payment_id: int | None,
    settlement_id: str,
    now: datetime,
) -> None:
    if not his_order_ids:
        return
    await session.execute(
        update(m.BillingOrder)
        .where(m.BillingOrder.his_order_id.in_(list(his_order_ids)))
        .values(
            status=m.ORDER_PAID,
            paid_channel=channel,
            payment_id=payment_id,
            settlement_id=settlement_id,
            refreshed_at=now,
        )
    )
    order_ids = select(m.BillingOrder.id).where(
        m.BillingOrder.his_order_id.in_(list(his_order_ids))
    )
    await session.execute(
        update(m.BillingOrderItem)
        .where(
            m.BillingOrderItem.order_id.in_(order_ids),
            m.BillingOrderItem.status == m.ITEM_BILLED,
        )
        .values(status=m.ITEM_PAID)
    )


async def set_execution(
    session: AsyncSession, his_order_id: str, state: str, executed_at: datetime | None
) -> int:
    result = await session.execute(
        update(m.BillingOrder)
        .where(m.BillingOrder.his_order_id == his_order_id)
        .values(execution_state=state, executed_at=executed_at)
    )
    return _count(result)


async def items_by_his_ids(
    session: AsyncSession, his_item_ids: Sequence[str]
) -> list[m.BillingOrderItem]:
    if not his_item_ids:
        return []
    return list(
        await session.scalars(
            select(m.BillingOrderItem).where(m.BillingOrderItem.his_item_id.in_(list(his_item_ids)))
        )
    )


async def claim_items_for_refund(
    session: AsyncSession, his_item_ids: Sequence[str], refund_id: int
) -> int:
    result = await session.execute(
        update(m.BillingOrderItem)
        .where(
            m.BillingOrderItem.his_item_id.in_(list(his_item_ids)),
            m.BillingOrderItem.status == m.ITEM_PAID,
            m.BillingOrderItem.refund_id.is_(None),
        )
        .values(refund_id=refund_id)
    )
    return _count(result)


async def release_items(session: AsyncSession, refund_id: int) -> None:
    await session.execute(
        update(m.BillingOrderItem)
        .where(
            m.BillingOrderItem.refund_id == refund_id,
            m.BillingOrderItem.status == m.ITEM_PAID,
        )
        .values(refund_id=None)
    )


async def mark_items_refunded(
    session: AsyncSession, his_item_ids: Sequence[str], refund_id: int | None, now: datetime
) -> list[str]:
    """Items refunded in the HIS; orders whose every item went back become ``refunded``.
    Returns the HIS order ids that became refunded."""
    if not his_item_ids:
        return []
    await session.execute(
        update(m.BillingOrderItem)
        .where(m.BillingOrderItem.his_item_id.in_(list(his_item_ids)))
        .values(status=m.ITEM_REFUNDED, refund_id=refund_id)
    )
    order_ids = set(
        await session.scalars(
            select(m.BillingOrderItem.order_id).where(
                m.BillingOrderItem.his_item_id.in_(list(his_item_ids))
            )
        )
    )
    done: list[str] = []
    for order_id in sorted(order_ids):
        left = await session.scalar(
            select(func.count())
            .select_from(m.BillingOrderItem)
            .where(
                m.BillingOrderItem.order_id == order_id,
                m.BillingOrderItem.status != m.ITEM_REFUNDED,
            )
        )
        if left == 0:
            his_id = await session.scalar(
                update(m.BillingOrder)
                .where(m.BillingOrder.id == order_id, m.BillingOrder.status != m.ORDER_REFUNDED)
                .values(status=m.ORDER_REFUNDED, refreshed_at=now)
                .returning(m.BillingOrder.his_order_id)
            )
            if his_id is not None:
                done.append(his_id)
    return done


# --------------------------------------------------------------------------- payments


async def payment(session: AsyncSession, payment_id: int) -> m.BillingPayment | None:
    return await session.get(m.BillingPayment, payment_id, populate_existing=True)


async def payment_by_trade_no(session: AsyncSession, out_trade_no: str) -> m.BillingPayment | None:
    return await session.scalar(
        select(m.BillingPayment)
        .where(m.BillingPayment.out_trade_no == out_trade_no)
        .execution_options(populate_existing=True)
    )


async def payments_of_card(session: AsyncSession, card_no: str) -> list[m.BillingPayment]:
    rows = await session.scalars(
        select(m.BillingPayment)
        .where(m.BillingPayment.card_no == card_no)
        .order_by(m.BillingPayment.created_at.desc(), m.BillingPayment.id.desc())
    )
    return list(rows)


async def order_ids_of_payment(session: AsyncSession, payment_id: int) -> list[str]:
    rows = await session.scalars(
        select(m.BillingPaymentOrder.his_order_id)
        .where(m.BillingPaymentOrder.payment_id == payment_id)
        .order_by(m.BillingPaymentOrder.position)
    )
    return list(rows)


async def payments_of_orders(
    session: AsyncSession, his_order_ids: Sequence[str]
) -> list[m.BillingPayment]:
    if not his_order_ids:
        return []
    ids = select(m.BillingPaymentOrder.payment_id).where(
        m.BillingPaymentOrder.his_order_id.in_(list(his_order_ids))
    )
    rows = await session.scalars(
        select(m.BillingPayment)
        .where(m.BillingPayment.id.in_(ids))
        .order_by(m.BillingPayment.created_at, m.BillingPayment.id)
    )
    return list(rows)


async def move_payment(
    session: AsyncSession,
    payment_id: int,
    *,
    from_states: Sequence[str],
    values: dict[str, Any],
    his_from: Sequence[str] | None = None,
) -> bool:
    stmt = update(m.BillingPayment).where(
        m.BillingPayment.id == payment_id, m.BillingPayment.state.in_(list(from_states))
    )
    if his_from is not None:
        stmt = stmt.where(m.BillingPayment.his_state.in_(list(his_from)))
    return _count(await session.execute(stmt.values(**values))) == 1


async def move_his_state(
    session: AsyncSession, payment_id: int, *, from_state: str, values: dict[str, Any]
) -> bool:
    result = await session.execute(
        update(m.BillingPayment)
        .where(m.BillingPayment.id == payment_id, m.BillingPayment.his_state == from_state)
        .values(**values)
    )
    return _count(result) == 1


async def flag_payment(session: AsyncSession, payment_id: int, reason: str, now: datetime) -> None:
    await session.execute(
        update(m.BillingPayment)
        .where(m.BillingPayment.id == payment_id)
        .values(flagged=True, flag_reason=reason[:64], updated_at=now)
    )


async def reserve_refund(
    session: AsyncSession, payment_id: int, amount_fen: int, now: datetime
) -> int | None:
    """Reserve ``amount_fen`` of a paid payment for a new refund; its sequence number, or
    None if that would exceed what was paid (checked in the one statement)."""
    seq = await session.scalar(
        update(m.BillingPayment)
        .where(
            m.BillingPayment.id == payment_id,
            m.BillingPayment.state == m.PAY_PAID,
            m.BillingPayment.refunded_fen + amount_fen <= m.BillingPayment.amount_fen,
        )
        .values(
            refunded_fen=m.BillingPayment.refunded_fen + amount_fen,
            refund_seq=m.BillingPayment.refund_seq + 1,
            updated_at=now,
        )
        .returning(m.BillingPayment.refund_seq)
    )
    return None if seq is None else int(seq)


async def release_refund(
    session: AsyncSession, payment_id: int, amount_fen: int, now: datetime
) -> None:
    await session.execute(
        update(m.BillingPayment)
        .where(m.BillingPayment.id == payment_id, m.BillingPayment.refunded_fen >= amount_fen)
        .values(refunded_fen=m.BillingPayment.refunded_fen - amount_fen, updated_at=now)
    )


async def search_payments(
    session: AsyncSession,
    *,
    out_trade_no: str | None = None,
    transaction_id: str | None = None,
    card_no: str | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    limit: int = 100,
) -> list[m.BillingPayment]:
    stmt = select(m.BillingPayment)
    if out_trade_no:
        stmt = stmt.where(m.BillingPayment.out_trade_no == out_trade_no)
    if transaction_id:
        stmt = stmt.where(m.BillingPayment.transaction_id == transaction_id)
    if card_no:
        stmt = stmt.where(m.BillingPayment.card_no == card_no)
    if start_at:
        stmt = stmt.where(m.BillingPayment.created_at >= start_at)
    if end_at:
        stmt = stmt.where(m.BillingPayment.created_at < end_at)
    rows = await session.scalars(
        stmt.order_by(m.BillingPayment.created_at.desc(), m.BillingPayment.id.desc()).limit(limit)
    )
    return list(rows)


# --------------------------------------------------------------------------- refunds


async def refund(session: AsyncSession, refund_id: int) -> m.BillingRefund | None:
    return await session.get(m.BillingRefund, refund_id, populate_existing=True)


async def refund_by_number(session: AsyncSession, out_refund_no: str) -> m.BillingRefund | None:
    return await session.scalar(
        select(m.BillingRefund)
        .where(m.BillingRefund.out_refund_no == out_refund_no)
        .execution_options(populate_existing=True)
    )


async def refunds_of_payments(
    session: AsyncSession, payment_ids: Sequence[int]
) -> list[m.BillingRefund]:
    if not payment_ids:
        return []
    rows = await session.scalars(
        select(m.BillingRefund)
        .where(m.BillingRefund.payment_id.in_(list(payment_ids)))
        .order_by(m.BillingRefund.created_at, m.BillingRefund.id)
    )
    return list(rows)


async def move_refund(
    session: AsyncSession, refund_id: int, *, from_states: Sequence[str], values: dict[str, Any]
) -> bool:
    result = await session.execute(
        update(m.BillingRefund)
        .where(m.BillingRefund.id == refund_id, m.BillingRefund.state.in_(list(from_states)))
        .values(**values)
    )
    return _count(result) == 1


async def move_refund_his(
    session: AsyncSession, refund_id: int, *, from_state: str, values: dict[str, Any]
) -> bool:
    result = await session.execute(
        update(m.BillingRefund)
        .where(m.BillingRefund.id == refund_id, m.BillingRefund.his_state == from_state)
        .values(**values)
    )
    return _count(result) == 1


# --------------------------------------------------------------------------- ledger


async def ledger_payments(
    session: AsyncSession, start_at: datetime, end_at: datetime
) -> list[m.BillingPayment]:
    rows = await session.scalars(
        select(m.BillingPayment).where(
            or_(
                and_(m.BillingPayment.paid_at >= start_at, m.BillingPayment.paid_at < end_at),
                and_(
                    m.BillingPayment.state == m.PAY_PENDING,
                    m.BillingPayment.created_at >= start_at,
                    m.BillingPayment.created_at < end_at,
                ),
            )
        )
    )
    return list(rows)


async def ledger_refunds(
    session: AsyncSession, start_at: datetime, end_at: datetime
) -> list[m.BillingRefund]:
    rows = await session.scalars(
        select(m.BillingRefund).where(
            or_(
                and_(
                    m.BillingRefund.succeeded_at >= start_at,
                    m.BillingRefund.succeeded_at < end_at,
                ),
                and_(
                    m.BillingRefund.state.in_(
                        [m.REF_CREATED, m.REF_PROCESSING, m.REF_ABNORMAL, m.REF_CLOSED]
                    ),
                    m.BillingRefund.succeeded_at.is_(None),
                    m.BillingRefund.created_at >= start_at,
                    m.BillingRefund.created_at < end_at,
                ),
            )
        )
    )
    return list(rows)


async def payments_by_ids(
    session: AsyncSession, payment_ids: Iterable[int]
) -> dict[int, m.BillingPayment]:
    ids = list(set(payment_ids))
    if not ids:
        return {}
    rows = await session.scalars(select(m.BillingPayment).where(m.BillingPayment.id.in_(ids)))
    return {p.id: p for p in rows}


async def paid_between(session: AsyncSession, start: datetime, end: datetime) -> tuple[int, int]:
    """(count, fen) of payments paid in [start, end) — refunded later or not."""
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(m.BillingPayment.amount_fen), 0)).where(
                m.BillingPayment.state == m.PAY_PAID,
                m.BillingPayment.paid_at >= start,
                m.BillingPayment.paid_at < end,
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def refunded_between(
    session: AsyncSession, start: datetime, end: datetime
) -> tuple[int, int]:
    """(count, fen) of refunds that succeeded in [start, end)."""
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(m.BillingRefund.amount_fen), 0)).where(
                m.BillingRefund.state == m.REF_SUCCESS,
                m.BillingRefund.succeeded_at >= start,
                m.BillingRefund.succeeded_at < end,
            )
        )
    ).one()
    return int(row[0]), int(row[1])
