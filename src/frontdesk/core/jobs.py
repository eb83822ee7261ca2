"""Housekeeping jobs of the core."""

from __future__ import annotations

from frontdesk.core import outbox, ratelimit, scheduler


@outbox.job("core.purge_rate_counters")
async def purge_rate_counters(ctx: outbox.JobContext, *, due_at: str | None = None) -> None:
    """Delete rate-limit windows that have ended (safe to run twice)."""
    await ratelimit.purge_expired(ctx.session, now=ctx.now)


scheduler.recurring("core.purge_rate_counters", "every 1h")
