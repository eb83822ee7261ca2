"""Template messages for every domain: queue in the caller's transaction, send from the outbox.

A domain calls ``queue_template(session, openid=..., kind="booking_made", data=..., url=...)``
in the same transaction as its change; the row and its ``wechat.send_template`` job commit or
roll back with it. The job (``jobs.py``) resolves the template id for the kind from settings,
sends with ``client_msg_id`` = the row's fixed id (WeChat delivers a retried send once), and
applies the errcode policy. TEMPLATESENDJOBFINISH later sets ``delivered`` or ``failed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.core import outbox
from frontdesk.core.clock import now as clock_now
from frontdesk.wechat.oa.errors import UnknownTemplateKind
from frontdesk.wechat.oa.models import TEMPLATE_FAILED, TEMPLATE_QUEUED, TemplateMessage
from frontdesk.wechat.oa.service import is_following

SEND_JOB = "wechat.send_template"

# The events the hospital notifies patients of (DESIGN.md §3, Notifications).
KINDS = frozenset(
    {
        "booking_made",
        "booking_cancelled",
        "visit_reminder",
        "clinic_suspended",
        "payment_due",
        "payment_received",
        "refund_made",
        "report_ready",
        "message_reply",
    }
)


async def queue_template(
    session: AsyncSession,
    *,
    openid: str,
    kind: str,
    data: dict[str, str],
    url: str | None = None,
    now: datetime | None = None,
) -> TemplateMessage | None:
    """Queue one template message; None (nothing written) if the user unfollowed or withdrew
    consent to the privacy notice.

    ``data`` maps the template's keyword names to plain strings (WeChat cuts each at 20
    characters; say what matters first).
    """
    if kind not in KINDS:
        raise UnknownTemplateKind(kind=kind)
    if not openid or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UnknownTemplateKind("openid and string data are required", kind=kind)
    if not await is_following(session, openid=openid):
        return None
    if not await accounts.may_message(session, openid=openid):
        return None  # the patient withdrew consent: the hospital sends nothing more
    at = now or clock_now()
    row = TemplateMessage(
        kind=kind,
        openid=openid,
        data=dict(data),
        url=url,
        client_msg_id="pending",
        state=TEMPLATE_QUEUED,
        attempts=0,
        created_at=at,
    )
    session.add(row)
    await session.flush()
    row.client_msg_id = f"fd-tpl-{row.id}"
    await session.flush()
    await outbox.enqueue(
        session, SEND_JOB, template_message_id=row.id, dedupe_key=f"{SEND_JOB}:{row.id}"
    )
    return row


async def failed_templates(session: AsyncSession, *, limit: int = 50) -> list[TemplateMessage]:
    """Template messages that ended in failure, newest first (the staff console's list)."""
    rows = await session.execute(
        select(TemplateMessage)
        .where(TemplateMessage.state == TEMPLATE_FAILED)
        .order_by(TemplateMessage.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


def template_id_for(settings: Any, kind: str) -> str | None:
    ids: dict[str, str] = settings.wechat_template_ids
    return ids.get(kind)
