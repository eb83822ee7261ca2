"""Billing's outbox jobs and HIS event handlers (each takes ids, reloads rows, is safe to run
twice). Job names of WeChat queries start with ``billing.query_`` (the pay health panel counts
them).

- ``order.created`` → ``billing.refresh_card`` (mirror the card's orders; "payment due").
- ``order.executed`` → ``billing.refresh_execution``.
- ``window.paid`` / ``window.refunded`` → the mirror; open payments of those orders closed.
- ``billing.query_payment``: a started payment until final (backoff), closing it at expiry.
- ``billing.settle``: the saga step; ``billing.his_refund``, ``billing.refund``,
  ``billing.query_refund``: item refunds in the HIS, then WeChat, then until final.
"""

from __future__ import annotations

import logging
from typing import Any

from frontdesk.billing import service
from frontdesk.billing.errors import BillingUnavailable
from frontdesk.core import outbox
from frontdesk.his import events
from frontdesk.wechat.pay.port import PayRejected, PayUnavailable

log = logging.getLogger("frontdesk.billing.jobs")


def _delay(schedule: tuple[int, ...], attempt: int) -> float:
    return float(schedule[min(max(attempt, 1), len(schedule)) - 1])


def _base_url(ctx: Any) -> str:
    return str(ctx.container.settings.public_base_url)


def _pay(ctx: outbox.JobContext) -> Any:
    pay = ctx.container.services.get("pay")
    if pay is None:
        raise outbox.RetryLater("WeChat Pay is not configured", delay_seconds=300)
    return pay


# --------------------------------------------------------------------------- HIS events


def _text(data: Any, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


@events.on("order.created")
async def order_created(ctx: events.EventContext) -> None:
    order_id, card_no = _text(ctx.event.data, "order_id"), _text(ctx.event.data, "card_no")
    if not (order_id and card_no and service.HIS_ID.fullmatch(order_id)):
        log.warning("order.created event %s without usable ids; skipped", ctx.event.event_id)
        return
    await outbox.enqueue(
        ctx.session,
        service.REFRESH_JOB,
        card_no=card_no,
        order_id=order_id,
        dedupe_key=f"{service.REFRESH_JOB}:{order_id}",
    )


@events.on("order.executed")
async def order_executed(ctx: events.EventContext) -> None:
    order_id = _text(ctx.event.data, "order_id")
    if not (order_id and service.HIS_ID.fullmatch(order_id)):
        return
    await outbox.enqueue(
        ctx.session,
        service.EXECUTION_JOB,
        order_id=order_id,
        dedupe_key=f"{service.EXECUTION_JOB}:{ctx.event.event_id}",
    )


@events.on("window.paid")
async def window_paid(ctx: events.EventContext) -> None:
    card_no = _text(ctx.event.data, "card_no")
    settlement_id = _text(ctx.event.data, "settlement_id")
    raw = ctx.event.data.get("order_ids")
    if not (card_no and settlement_id and isinstance(raw, str)):
        return
    await service.window_paid(
        ctx.session,
        card_no=card_no,
        order_ids=[i for i in raw.split(",") if i][:50],
        settlement_id=settlement_id,
        now=ctx.now,
    )


@events.on("window.refunded")
async def window_refunded(ctx: events.EventContext) -> None:
    raw = ctx.event.data.get("item_ids")
    if isinstance(raw, str):
        await service.window_refunded(
            ctx.session, item_ids=[i for i in raw.split(",") if i][:200], now=ctx.now
        )


# --------------------------------------------------------------------------- jobs


@outbox.job(service.REFRESH_JOB, max_attempts=8, timeout_seconds=60)
async def refresh_card(
    ctx: outbox.JobContext, *, card_no: str, order_id: str | None = None
) -> None:
    try:
        await service.refresh_orders(
            ctx.session, his=ctx.container.services["his"], card_no=card_no, now=ctx.now
        )
    except BillingUnavailable as exc:
        raise outbox.RetryLater(str(exc)) from exc
    if order_id:
        await service.announce_due(
            ctx.session, his_order_id=order_id, now=ctx.now, base_url=_base_url(ctx)
        )


@outbox.job(service.EXECUTION_JOB, max_attempts=8, timeout_seconds=60)
async def refresh_execution(ctx: outbox.JobContext, *, order_id: str) -> None:
    try:
        await service.refresh_execution(
            ctx.session, his=ctx.container.services["his"], his_order_id=order_id, now=ctx.now
        )
    except BillingUnavailable as exc:
        raise outbox.RetryLater(str(exc)) from exc


@outbox.job(service.QUERY_PAYMENT_JOB, max_attempts=60, timeout_seconds=60)
async def query_payment(
    ctx: outbox.JobContext, *, payment_id: int, close: bool = False, force: bool = False
) -> None:
    try:
        state = await service.query_payment(
            ctx.session, pay=_pay(ctx), payment_id=payment_id, now=ctx.now, close=close
        )
    except PayUnavailable as exc:
        raise outbox.RetryLater(
            f"WeChat Pay: {exc.vendor_code}",
            delay_seconds=_delay(service.QUERY_BACKOFF, ctx.attempt),
        ) from exc
    except PayRejected as exc:
        raise outbox.PermanentFailure(f"WeChat Pay refused the query: {exc.reason}") from exc
    if state == "pending" and not force:
        raise outbox.RetryLater(
            "payment not final yet", delay_seconds=_delay(service.QUERY_BACKOFF, ctx.attempt)
        )


@outbox.job(service.SETTLE_JOB, max_attempts=40, timeout_seconds=120)
async def settle(ctx: outbox.JobContext, *, payment_id: int) -> None:
    budget = int(ctx.container.settings.billing_settle_attempts)
    outcome = await service.settle_payment(
        ctx.session,
        his=ctx.container.services["his"],
        payment_id=payment_id,
        now=ctx.now,
        last_attempt=ctx.attempt >= budget,
        base_url=_base_url(ctx),
    )
    if outcome == "retry":
        raise outbox.RetryLater(
            "HIS unavailable", delay_seconds=_delay(service.SETTLE_BACKOFF, ctx.attempt)
        )


@outbox.job(service.HIS_REFUND_JOB, max_attempts=40, timeout_seconds=120)
async def his_refund(ctx: outbox.JobContext, *, refund_id: int) -> None:
    outcome = await service.confirm_his_refund(
        ctx.session, his=ctx.container.services["his"], refund_id=refund_id, now=ctx.now
    )
    if outcome == "retry":
        raise outbox.RetryLater(
            "HIS unavailable", delay_seconds=_delay(service.SETTLE_BACKOFF, ctx.attempt)
        )


@outbox.job(service.REFUND_JOB, max_attempts=40, timeout_seconds=60)
async def refund(ctx: outbox.JobContext, *, refund_id: int) -> None:
    try:
        await service.send_refund(ctx.session, pay=_pay(ctx), refund_id=refund_id, now=ctx.now)
    except PayUnavailable as exc:
        # The same out_refund_no next time: WeChat answers the first refund, never a second.
        delay = (
            61.0
            if exc.vendor_code in {"FREQUENCY_LIMITED", "FREQUENCY_LIMIT_EXCEED"}
            else (_delay(service.QUERY_BACKOFF, ctx.attempt))
        )
        raise outbox.RetryLater(f"WeChat Pay: {exc.vendor_code}", delay_seconds=delay) from exc


@outbox.job(service.QUERY_REFUND_JOB, max_attempts=60, timeout_seconds=60)
async def query_refund(ctx: outbox.JobContext, *, refund_id: int, force: bool = False) -> None:
    try:
        state = await service.query_refund(
            ctx.session, pay=_pay(ctx), refund_id=refund_id, now=ctx.now
        )
    except PayUnavailable as exc:
        raise outbox.RetryLater(
            f"WeChat Pay: {exc.vendor_code}",
            delay_seconds=_delay(service.QUERY_BACKOFF, ctx.attempt),
        ) from exc
    if state == "processing" and not force:
        raise outbox.RetryLater(
            "refund not final yet", delay_seconds=_delay(service.QUERY_BACKOFF, ctx.attempt)
        )
