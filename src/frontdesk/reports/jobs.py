"""Report jobs: "report ready" messages from the HIS event feed, and cache expiry.

- ``report.reviewed`` (HIS event): the card's cached list is dropped (so the new report is
  listed at once) and a ``reports.announce`` job is queued to run when the report's hold is
  over, in the poller's transaction (exactly once per event).
- ``reports.announce``: asks the HIS for the report (it is the record: a report withdrawn
  meanwhile is not announced), and queues one ``report_ready`` template message per
  account bound to the card, at most once per report and account (``report_notice``),
  linking straight to the report (the link goes through WeChat sign-in if needed).
- ``reports.purge_cache`` (every 5 minutes): deletes local copies whose time is up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from frontdesk.core import outbox, scheduler
from frontdesk.core.i18n import translate
from frontdesk.his import events
from frontdesk.his.port import LabReport
from frontdesk.reports import service
from frontdesk.reports.errors import ReportsUnavailable
from frontdesk.reports.schemas import ReportPolicy
from frontdesk.wechat.oa.templates import queue_template

log = logging.getLogger("frontdesk.reports.jobs")

ANNOUNCE_JOB = "reports.announce"
PURGE_JOB = "reports.purge_cache"


@events.on("report.reviewed")
async def report_reviewed(ctx: events.EventContext) -> None:
    """Schedule the announcement for when the hold is over (the event's time is the
    review's); forget the card's cached list."""
    data = ctx.event.data
    report_id, card_no, kind = data.get("report_id"), data.get("card_no"), data.get("kind")
    if not (
        isinstance(report_id, str)
        and service.REPORT_ID.fullmatch(report_id)
        and isinstance(card_no, str)
        and 0 < len(card_no) <= 32
    ):
        log.warning("report.reviewed event %s without usable ids; skipped", ctx.event.event_id)
        return
    await service.forget_card_list(ctx.session, card_no=card_no)
    policy = ReportPolicy.from_settings(ctx.container.settings)
    hold = timedelta(hours=policy.hold_hours.get(str(kind), 0))
    await outbox.enqueue(
        ctx.session,
        ANNOUNCE_JOB,
        run_after=max(ctx.event.occurred_at + hold, ctx.now),
        dedupe_key=f"{ANNOUNCE_JOB}:{report_id}",
        report_id=report_id,
        card_no=card_no,
    )


@outbox.job(ANNOUNCE_JOB, max_attempts=8, timeout_seconds=60)
async def announce(ctx: outbox.JobContext, *, report_id: str, card_no: str) -> None:
    """Queue "report ready" for every account of the card, once each; safe to run twice."""
    settings = ctx.container.settings
    try:
        result = await service.announce_ready(
            ctx.session,
            his=ctx.container.services["his"],
            report_id=report_id,
            card_no=card_no,
            policy=ReportPolicy.from_settings(settings),
            now=ctx.now,
        )
    except ReportsUnavailable as exc:
        raise outbox.RetryLater(f"HIS unavailable: {exc.detail}") from exc
    if result.not_before is not None:
        # The hold was lengthened after the event was scheduled: wait for it.
        delay = (result.not_before - ctx.now).total_seconds()
        raise outbox.RetryLater("report still held", delay_seconds=max(delay, 1.0))
    report = result.report
    if report is None:
        log.info("report %s is no longer shown by the HIS; not announced", report_id)
        return
    kind_key = "report_kind_lab" if isinstance(report, LabReport) else "report_kind_exam"
    for openid in result.openids:
        await queue_template(
            ctx.session,
            openid=openid,
            kind="report_ready",
            data=_message(report, kind_key, card_no, settings.tz),
            url=f"{settings.public_base_url.rstrip('/')}/h5/reports/{report.report_id}",
            now=ctx.now,
        )


def _message(report: Any, kind_key: str, card_no: str, tz: Any) -> dict[str, str]:
    # Keywords of the hospital's "report ready" template (thing1, thing2, time3); messages
    # are read on a lock screen: what and whose, never results.
    reviewed: datetime = report.reviewed_at
    masked_card = f"{card_no[:2]}****{card_no[-4:]}" if len(card_no) > 6 else card_no
    return {
        "thing1": f"{translate(kind_key)} {report.title}"[:20],
        "thing2": translate("report_ready_card", card=masked_card)[:20],
        "time3": reviewed.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
    }


@outbox.job(PURGE_JOB)
async def purge_cache(ctx: outbox.JobContext, *, due_at: str | None = None) -> None:
    """Delete expired local copies of reports (safe to run twice)."""
    dropped = await service.purge_expired(ctx.session, now=ctx.now)
    if dropped:
        log.info("dropped %d expired report copies", dropped)


scheduler.recurring(PURGE_JOB, "every 5m")
