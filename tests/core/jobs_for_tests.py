"""Job handlers used by the outbox tests (also loaded by worker subprocesses)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from frontdesk.core import inbox, outbox
from frontdesk.core.clock import now

# Executions in flight per job id, to prove no job runs twice at once (in-process workers).
in_flight: dict[int, int] = {}
max_overlap: dict[int, int] = {}


async def _record_effect(ctx: outbox.JobContext, label: str) -> None:
    await inbox.receive(
        ctx.session,
        source="test-effect",
        external_id=f"{label}:{ctx.job_id}:{uuid.uuid4().hex}",
        at=now(),
        payload={"job_id": ctx.job_id, "attempt": ctx.attempt},
    )


@outbox.job("testing.effect")
async def effect(ctx: outbox.JobContext, *, label: str, sleep: float = 0.0) -> None:
    in_flight[ctx.job_id] = in_flight.get(ctx.job_id, 0) + 1
    max_overlap[ctx.job_id] = max(max_overlap.get(ctx.job_id, 0), in_flight[ctx.job_id])
    try:
        if sleep:
            await asyncio.sleep(sleep)
        await _record_effect(ctx, label)
    finally:
        in_flight[ctx.job_id] -= 1


@outbox.job("testing.fail_times")
async def fail_times(ctx: outbox.JobContext, *, label: str, failures: int) -> None:
    await _record_effect(ctx, f"{label}-attempt")  # rolled back on failure
    if ctx.attempt <= failures:
        raise RuntimeError(f"failure {ctx.attempt} of {failures}")


@outbox.job("testing.retry_later")
async def retry_later(ctx: outbox.JobContext) -> None:
    raise outbox.RetryLater("HIS busy", delay_seconds=60)


@outbox.job("testing.permanent")
async def permanent(ctx: outbox.JobContext) -> None:
    raise outbox.PermanentFailure("card was merged")


@outbox.job("testing.slow", timeout_seconds=0.2)
async def slow(ctx: outbox.JobContext) -> None:
    await asyncio.sleep(5)


@outbox.job("testing.crash_once")
async def crash_once(ctx: outbox.JobContext, *, marker_dir: str, label: str) -> None:
    """First attempt announces itself and hangs (the test kills the process); later ones
    complete at once."""
    if ctx.attempt == 1:
        Path(marker_dir, f"started-{ctx.job_id}-{os.getpid()}").write_text("x")
        await asyncio.sleep(60)
    await _record_effect(ctx, label)
