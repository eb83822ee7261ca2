"""The integration-health panels for the HIS bridge, WeChat and WeChat Pay.

Numbers come from what every process records in the shared database (outbox attempts,
the feed cursor, the token row, template rows, the inbox), so any web process shows the
same picture whichever worker did the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.health import BAD, OK, WARN, Panel, PanelRow, register_health_panel
from frontdesk.core.clock import get_clock
from frontdesk.his.status import bridge_status
from frontdesk.wechat.oa.status import account_status
from frontdesk.wechat.pay.status import pay_status

NEVER = "—"
# The poller runs every few seconds: a minute without a complete poll is worth a look,
# five minutes means patients are not getting the HIS's changes.
LAG_WARN_SECONDS, LAG_BAD_SECONDS = 60, 300


def _when(value: datetime | None) -> str:
    if value is None:
        return NEVER
    return value.astimezone(get_clock().tz).strftime("%Y-%m-%d %H:%M:%S")


def _worst(*statuses: str) -> str:
    return BAD if BAD in statuses else WARN if WARN in statuses else OK


async def his_panel(session: AsyncSession, container: Any) -> Panel:
    status = await bridge_status(session, now=get_clock().now())
    lag = status.lag_seconds
    lag_status = (
        BAD if lag is None or lag > LAG_BAD_SECONDS else WARN if lag > LAG_WARN_SECONDS else OK
    )
    rate_status = BAD if status.error_rate > 0.5 else WARN if status.error_rate > 0 else OK
    rows = (
        PanelRow("console.health.his.last_success", _when(status.last_success_at), lag_status),
        PanelRow(
            "console.health.his.error_rate",
            f"{status.error_rate:.0%} ({status.errors_last_hour}/{status.attempts_last_hour})",
            rate_status,
        ),
        PanelRow(
            "console.health.his.cursor", f"{status.cursor or NEVER} · {status.events_applied}"
        ),
        PanelRow("console.health.his.lag", NEVER if lag is None else f"{lag:.0f} s", lag_status),
    )
    return Panel(rows=rows, status=_worst(lag_status, rate_status))


async def wechat_panel(session: AsyncSession, container: Any) -> Panel:
    now = get_clock().now()
    status = await account_status(session, now=now)
    age = (now - status.token_refreshed_at).total_seconds() if status.token_refreshed_at else None
    token_status = (
        WARN if status.token_expires_at is None else BAD if status.token_expires_at <= now else OK
    )
    sends = status.templates_last_day
    failed = sends.get("failed", 0)
    send_status = WARN if failed else OK
    rows = (
        PanelRow(
            "console.health.wechat.token_age",
            NEVER if age is None else f"{age / 60:.0f} min",
            token_status,
        ),
        PanelRow(
            "console.health.wechat.token_expires", _when(status.token_expires_at), token_status
        ),
        PanelRow(
            "console.health.wechat.templates",
            " · ".join(f"{k} {sends.get(k, 0)}" for k in ("queued", "sent", "delivered", "failed")),
            send_status,
        ),
    )
    return Panel(rows=rows, status=_worst(token_status, send_status))


async def pay_panel(session: AsyncSession, container: Any) -> Panel:
    status = await pay_status(session, now=get_clock().now())
    pending = WARN if status.pending_queries else OK
    rows = (
        PanelRow("console.health.pay.last_notify", _when(status.last_notify_at)),
        PanelRow("console.health.pay.notifies", str(status.notifies_last_day)),
        PanelRow("console.health.pay.pending_queries", str(status.pending_queries), pending),
    )
    return Panel(rows=rows, status=pending)


register_health_panel("his", his_panel)
register_health_panel("wechat", wechat_panel)
register_health_panel("pay", pay_panel)
