"""Housekeeping jobs of the core."""

from __future__ import annotations

from datetime import timedelta

from frontdesk.core import outbox, ratelimit, scheduler


@outbox.job("core.purge_rate_counters")
async def purge_rate_counters(ctx: outbox.JobContext, *, due_at: str | None = None) -> None:
    """Delete rate-limit windows that have ended (safe to run twice)."""
    await ratelimit.purge_expired(ctx.session, now=ctx.now)


scheduler.recurring("core.purge_rate_counters", "every 1h")


@outbox.job("core.purge_done_jobs")
async def purge_done_jobs(ctx: outbox.JobContext, *, due_at: str | None = None) -> None:
    """Delete jobs finished more than ``worker_keep_done_days`` ago (dead letters stay)."""
    keep = timedelta(days=ctx.container.settings.worker_keep_done_days)
    await outbox.purge_done(ctx.session, finished_before=ctx.now - keep)


scheduler.recurring("core.purge_done_jobs", "daily 03:30")
