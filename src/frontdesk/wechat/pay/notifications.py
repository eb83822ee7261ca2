"""Handling one WeChat Pay notification: verify, decrypt, store once, dispatch.

Framework-free so it can be tested and reused (the route in ``notify_routes.py`` only reads the raw
body and turns the outcome into the HTTP answer WeChat Pay expects).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import inbox
from frontdesk.wechat.pay import events
from frontdesk.wechat.pay.port import WeChatPay

log = logging.getLogger("frontdesk.wechat.pay.notify_routes")

INBOX_SOURCE = "wxpay"


class Outcome(StrEnum):
    processed = "processed"
    duplicate = "duplicate"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def event_payload(event: events.PayEvent) -> dict[str, Any]:
    """What the inbox keeps of an event: its kind and its fields, JSON-ready."""
    return {"kind": type(event).__name__, **_plain(dataclasses.asdict(event))}


async def handle_notification(
    session: AsyncSession, pay: WeChatPay, headers: Mapping[str, str], body: bytes, *, now: datetime
) -> tuple[Outcome, events.PayEvent]:
    """Verify and type the notification, store it in the inbox unique on its id and, the
    first time only, run the registered handlers — all in the caller's transaction.

    Raises ``NotificationRejected`` (nothing stored) for anything untrustworthy; a handler's
    exception propagates so the caller can roll back and let WeChat Pay retry.
    """
    event = await pay.parse_notification(headers, body)
    first = await inbox.receive(
        session,
        source=INBOX_SOURCE,
        external_id=event.notify_id,
        at=now,
        payload=event_payload(event),
    )
    if not first:
        # WeChat Pay repeats notifications (even after our 204): answer, change nothing.
        log.info(
            "wechatpay notify %s (%s) already received",
            event.notify_id,
            event.event_type,
            extra={"operation": "wechatpay.notify", "outcome": "duplicate"},
        )
        return Outcome.duplicate, event
    ran = await events.dispatch(session, event)
    await inbox.mark_processed(
        session,
        source=INBOX_SOURCE,
        external_id=event.notify_id,
        at=now,
        result=f"{ran} handler(s)",
    )
    log.info(
        "wechatpay notify %s (%s) processed by %d handler(s)",
        event.notify_id,
        event.event_type,
        ran,
        extra={"operation": "wechatpay.notify", "outcome": "processed"},
    )
    return Outcome.processed, event
