"""Reconciliation's worker jobs.

- ``reconciliation.daily`` (recurring, ``reconciliation_schedule``, default "daily 10:30"):
  queue the run of the previous hospital day.
- ``reconciliation.run_day``: stream the day's ALL bill (gzip, SHA-1 checked) to a temporary
  file, read the HIS's WeChat-channel settlements and our ledger, then parse, match and
  store in the job's one transaction. WeChat's NO_STATEMENT_EXIST past noon the next day
  (``service.bill_certain_at``) for a day on which our ledger has no WeChat payment or
  refund: the merchant had no transaction, the day is reconciled against an empty bill
  (with such payments it is waited for, then fails with ``no_statement_but_paid``). Not
  published yet, WeChat Pay or the HIS unreachable, or a bill that does not hash: the run is
  marked (waiting / failed with the reason) and a new attempt is queued, until
  ``reconciliation_give_up_hours`` after the day ended. A bill
  that hashes but cannot be used (layout, decimals, summary, duplicates) fails for good
  until staff run it again.
- ``reconciliation.recheck``: after the system asked WeChat again about a late notify.

The ledger is ``container.services["ledger"]`` (a ``LedgerSource``; billing's is
``reconciliation.billing_ledger.BillingLedger``).
"""

from __future__ import annotations

import io
import logging
import tempfile
from datetime import date, timedelta
from typing import Any

from frontdesk.core import outbox, scheduler
from frontdesk.his.port import HisError
from frontdesk.reconciliation import service
from frontdesk.reconciliation.errors import BillRejected
from frontdesk.reconciliation.matching import index_his
from frontdesk.reconciliation.schemas import LedgerSource
from frontdesk.wechat.pay.port import BillDownload, PayRejected, PayUnavailable

log = logging.getLogger("frontdesk.reconciliation")

scheduler.recurring(service.DAILY_JOB, "daily 10:30", setting="reconciliation_schedule")


def _ledger(ctx: outbox.JobContext) -> LedgerSource | None:
    return ctx.container.services.get("ledger")  # type: ignore[no-any-return]


@outbox.job(service.DAILY_JOB, max_attempts=3)
async def daily(ctx: outbox.JobContext, **_: Any) -> None:
    await service.queue_run(ctx.session, day=service.previous_day(ctx.now), now=ctx.now)


def _no_statement_exists(exc: PayRejected | PayUnavailable) -> bool:
    """WeChat's NO_STATEMENT_EXIST: not generated yet, or no transaction that day (WeChat
    uses the one code for both). STATEMENT_CREATING is only ever "not yet"."""
    return isinstance(exc, PayRejected) and exc.vendor_code == "NO_STATEMENT_EXIST"


def _fetch_error(exc: PayRejected | PayUnavailable) -> BillRejected:
    if isinstance(exc, PayRejected) and exc.reason in ("no_statement", "statement_not_ready"):
        return BillRejected("no_statement", str(exc))
    if isinstance(exc, PayUnavailable) and exc.vendor_code == "STATEMENT_CREATING":
        return BillRejected("no_statement", str(exc))
    text = str(exc)
    if isinstance(exc, PayUnavailable) and exc.vendor_code == "HASH":
        return BillRejected("hash", text)
    if "gzip" in text:
        return BillRejected("gzip", text)
    return BillRejected("fetch", text)


@outbox.job(service.RUN_JOB, max_attempts=3, timeout_seconds=900)
async def run_day(ctx: outbox.JobContext, *, day: str, **_: Any) -> None:
    settings = ctx.container.settings
    policy = service.Policy.from_settings(settings)
    the_day = date.fromisoformat(day)
    ledger = _ledger(ctx)
    pay = ctx.container.services.get("pay")
    his = ctx.container.services["his"]
    day_end = service.day_window(the_day)[1]
    may_retry = ctx.now < day_end + timedelta(hours=policy.give_up_hours)

    async def stop(error: BillRejected, *, retry: bool) -> None:
        waiting = error.reason == "no_statement" and may_retry
        await service.record_failure(
            ctx.session, day=the_day, error=error, now=ctx.now, waiting=waiting
        )
        if retry and may_retry:
            await service.queue_run(
                ctx.session, day=the_day, now=ctx.now, delay_minutes=policy.retry_minutes
            )

    if pay is None:
        await stop(BillRejected("fetch", "WeChat Pay is not configured"), retry=False)
        return
    if ledger is None:
        await stop(BillRejected("ledger", "services['ledger'] is not configured"), retry=False)
        return
    with tempfile.TemporaryFile(dir=settings.reconciliation_work_dir or None) as fh:
        download: BillDownload | None
        try:
            download = await pay.stream_trade_bill(the_day, fh)
        except (PayRejected, PayUnavailable) as exc:
            error = _fetch_error(exc)
            if not _no_statement_exists(exc) or ctx.now < service.bill_certain_at(the_day):
                await stop(error, retry=True)
                return
            # Past the time the bill is certainly published: no bill means no transaction,
            # unless our ledger recorded WeChat payments or refunds that day.
            movements = await service.wechat_movements(ctx.session, ledger, the_day)
            if movements or not await service.may_reconcile_empty(ctx.session, the_day):
                if movements:
                    # Still retried until the deadline (WeChat may be late); then it fails
                    # with its own reason: finance must look, it is not an empty day.
                    error = BillRejected(
                        "no_statement_but_paid" if not may_retry else "no_statement",
                        f"{exc}; our ledger has {movements} WeChat payment(s)/refund(s) that day",
                    )
                await stop(error, retry=True)
                return
            download = None
        try:
            # Indexed at once: the HIS's list of records is dropped before the ledger is read.
            settlements = index_his(await his.day_settlements(the_day))
            # The next day's too (once it has begun): this day's payments the HIS settled
            # only then (a late notify, a settlement retried the next morning) match there.
            later = (
                index_his(await his.day_settlements(the_day + timedelta(days=1)))
                if ctx.now >= day_end
                else None
            )
        except HisError as exc:
            await stop(BillRejected("his", f"{type(exc).__name__}: {exc}"), retry=True)
            return
        fh.seek(0)
        text = io.TextIOWrapper(fh, encoding="utf-8", errors="strict", newline="")
        try:
            outcome = await service.reconcile(
                ctx.session,
                day=the_day,
                bill_lines=text if download is not None else None,
                bill_sha1=download.sha1 if download is not None else None,
                his_records=settlements,
                ledger=ledger,
                mchid=settings.wechatpay_mchid or None,
                now=ctx.now,
                policy=policy,
                his_later=later,
            )
        except UnicodeDecodeError as exc:
            await stop(BillRejected("encoding", str(exc)), retry=False)
            return
        except BillRejected as exc:
            await stop(exc, retry=False)
            return
        finally:
            text.detach()
    log.info(
        "reconciled %s: %s lines%s, %s differences",
        day,
        outcome.run.bill_lines,
        " (no WeChat bill: no transactions)" if outcome.run.empty_day else "",
        outcome.run.differences,
    )


@outbox.job(service.RECHECK_JOB, max_attempts=5)
async def recheck(ctx: outbox.JobContext, *, difference_id: int, round: int = 1, **_: Any) -> None:
    ledger = _ledger(ctx)
    if ledger is None:
        raise outbox.PermanentFailure("services['ledger'] is not configured")
    await service.recheck(
        ctx.session,
        difference_id=difference_id,
        round_no=round,
        ledger=ledger,
        now=ctx.now,
        policy=service.Policy.from_settings(ctx.container.settings),
    )
