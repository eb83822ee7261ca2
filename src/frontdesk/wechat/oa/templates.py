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

from sqlalchemy import select, update
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
        "hospital_notice",
    }
)
# Kinds a patient may turn off (or on) in the notification centre, and their default.
# News and notices are opt-in; visit reminders are on unless turned off.
OPTIONAL_KINDS: dict[str, bool] = {"hospital_notice": False, "visit_reminder": True}


async def queue_template(
    session: AsyncSession,
    *,
    openid: str,
    kind: str,
    data: dict[str, str],
    url: str | None = None,
    now: datetime | None = None,
    run_after: datetime | None = None,
) -> TemplateMessage | None:
    """Queue one template message; None (nothing written) if the user unfollowed, withdrew
    consent to the privacy notice, or ``kind`` is optional and the account turned it off
    (``OPTIONAL_KINDS``).

    ``run_after`` delays the send (bulk pushes spread themselves within WeChat's rate).

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
    if kind in OPTIONAL_KINDS:
        # Imported here: the messaging service itself queues template messages.
        from frontdesk.messaging import service as messaging

        if not await messaging.wants(session, openid=openid, kind=kind):
            return None
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
        session,
        SEND_JOB,
        template_message_id=row.id,
        dedupe_key=f"{SEND_JOB}:{row.id}",
        run_after=run_after,
    )
    return row


async def templates_for(
    session: AsyncSession, *, openid: str, limit: int = 100
) -> list[TemplateMessage]:
    """Every template message queued for one account, newest first (the notification
    centre: nothing depends on the chat history)."""
    rows = await session.execute(
        select(TemplateMessage)
        .where(TemplateMessage.openid == openid)
        .order_by(TemplateMessage.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


async def deliveries(
    session: AsyncSession, *, state: str | None = None, limit: int = 200
) -> list[TemplateMessage]:
    """Template messages for the staff delivery view, newest first, optionally by state."""
    stmt = select(TemplateMessage).order_by(TemplateMessage.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(TemplateMessage.state == state)
    return list((await session.execute(stmt)).scalars())


async def retry_failed(session: AsyncSession, *, template_message_id: int) -> bool:
    """Send a failed template message again: back to ``queued`` with a fresh
    ``client_msg_id`` (the failed send was not delivered) and a new send job. False if the
    row is not failed (a second click, or someone else retried first)."""
    row = await session.get(TemplateMessage, template_message_id)
    if row is None or row.state != TEMPLATE_FAILED:
        return False
    retry_no = row.client_msg_id.count("-r") + 1
    result = await session.execute(
        update(TemplateMessage)
        .where(TemplateMessage.id == row.id, TemplateMessage.state == TEMPLATE_FAILED)
        .values(
            state=TEMPLATE_QUEUED,
            client_msg_id=f"fd-tpl-{row.id}-r{retry_no}",
            errcode=None,
            last_error=None,
            finished_at=None,
            delivery_status=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await outbox.enqueue(
        session,
        SEND_JOB,
        template_message_id=row.id,
        dedupe_key=f"{SEND_JOB}:{row.id}:r{retry_no}",
    )
    return True


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
