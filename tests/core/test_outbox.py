from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.container import Container
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.inbox import InboxMessage
from frontdesk.core.outbox import OutboxAttempt, OutboxJob
from frontdesk.core.worker import Worker
from tests.core import jobs_for_tests


async def _effects(session: AsyncSession, label: str) -> int:
    stmt = (
        select(func.count())
        .select_from(InboxMessage)
        .where(InboxMessage.source == "test-effect", InboxMessage.external_id.like(f"{label}:%"))
    )
    return int((await session.execute(stmt)).scalar_one())


async def _job(container: Container, job_id: int) -> OutboxJob:
    async with container.db.session() as s:
        return (await s.execute(select(OutboxJob).where(OutboxJob.id == job_id))).scalar_one()


async def _attempts(container: Container, job_id: int) -> list[tuple[int, str | None]]:
    async with container.db.session() as s:
        rows = await s.execute(
            select(OutboxAttempt.attempt, OutboxAttempt.outcome)
            .where(OutboxAttempt.job_id == job_id)
            .order_by(OutboxAttempt.attempt)
        )
        return [(a, o) for a, o in rows.all()]


async def test_enqueue_writes_in_the_callers_transaction(
    db: AsyncSession, clock: FrozenClock
) -> None:
    async with db.begin_nested() as tx:
        await outbox.enqueue(db, "testing.effect", label="rolled-back")
        await tx.rollback()
    job_id = await outbox.enqueue(db, "testing.effect", label="kept")
    jobs = (await db.execute(select(OutboxJob))).scalars().all()
    assert [(j.id, j.name, j.payload, j.status) for j in jobs] == [
        (job_id, "testing.effect", {"label": "kept"}, "queued")
    ]
    assert jobs[0].run_after_at == clock.now()


async def test_dedupe_key_writes_one_job(db: AsyncSession, clock: FrozenClock) -> None:
    first = await outbox.enqueue(db, "testing.effect", dedupe_key="push:7", label="a")
    second = await outbox.enqueue(db, "testing.effect", dedupe_key="push:7", label="b")
    assert first is not None
    assert second is None
    count = (await db.execute(select(func.count()).select_from(OutboxJob))).scalar_one()
    assert count == 1


async def test_payload_must_be_plain_ids(db: AsyncSession, clock: FrozenClock) -> None:
    with pytest.raises(TypeError, match="plain JSON"):
        await outbox.enqueue(db, "testing.effect", label=object())
    assert (await db.execute(select(func.count()).select_from(OutboxJob))).scalar_one() == 0


async def test_worker_runs_a_job_and_records_the_attempt(container: Container) -> None:
    async with container.db.session() as s:
        job_id = await outbox.enqueue(s, "testing.effect", label="ok-run")
    assert job_id is not None
    ran = await Worker(container, worker_id="w1").drain()
    assert ran == 1
    job = await _job(container, job_id)
    assert (job.status, job.attempts, job.last_error) == ("done", 1, None)
    assert await _attempts(container, job_id) == [(1, "ok")]
    async with container.db.session() as s:
        assert await _effects(s, "ok-run") == 1


async def test_failures_are_retried_with_backoff_then_succeed(
    container: Container, clock: FrozenClock
) -> None:
    async with container.db.session() as s:
        job_id = await outbox.enqueue(s, "testing.fail_times", label="flaky", failures=2)
    assert job_id is not None
    worker = Worker(container, worker_id="w1")
    assert await worker.run_once() == 1
    job = await _job(container, job_id)
    assert job.status == "queued"
    assert job.last_error == "RuntimeError: failure 1 of 2"
    assert job.run_after_at > clock.now()
    assert await worker.run_once() == 0  # not due yet: backoff holds
    clock.advance(seconds=1)
    assert await worker.run_once() == 1
    clock.advance(seconds=1)
    assert await worker.run_once() == 1
    job = await _job(container, job_id)
    assert (job.status, job.attempts) == ("done", 3)
    assert await _attempts(container, job_id) == [(1, "error"), (2, "error"), (3, "ok")]
    async with container.db.session() as s:
        # The effects of failed attempts were rolled back with them.
        assert await _effects(s, "flaky-attempt") == 1


async def test_a_job_that_keeps_failing_becomes_a_dead_letter(
    container: Container, clock: FrozenClock
) -> None:
    async with container.db.session() as s:
        job_id = await outbox.enqueue(
            s, "testing.fail_times", label="doomed", failures=99, max_attempts=3
        )
    worker = Worker(container, worker_id="w1")
    for _ in range(3):
        await worker.run_once()
        clock.advance(seconds=1)
    assert job_id is not None
    job = await _job(container, job_id)
    assert (job.status, job.attempts) == ("dead", 3)
    assert job.last_error == "RuntimeError: failure 3 of 99"
    async with container.db.session() as s:
        dead = await outbox.dead_letters(s)
        assert [d.id for d in dead] == [job_id]
        assert (await outbox.counts_by_status(s))["dead"] == 1
    # Staff retry gives it a fresh set of attempts.
    async with container.db.session() as s:
        assert await outbox.retry_dead(s, job_id) is True
        assert await outbox.retry_dead(s, job_id) is False
    assert (await _job(container, job_id)).status == "queued"


async def test_retry_later_permanent_failure_timeout_and_unknown_job(
    container: Container, clock: FrozenClock
) -> None:
    async with container.db.session() as s:
        later = await outbox.enqueue(s, "testing.retry_later")
        perm = await outbox.enqueue(s, "testing.permanent")
        slow = await outbox.enqueue(s, "testing.slow")
        unknown = await outbox.enqueue(s, "testing.no_such_handler")
    await Worker(container, worker_id="w1").run_once()
    assert later and perm and slow and unknown
    job = await _job(container, later)
    assert (job.status, job.run_after_at) == ("queued", clock.now() + timedelta(seconds=60))
    assert job.last_error == "retry later: HIS busy"
    job = await _job(container, perm)
    assert (job.status, job.last_error) == ("dead", "permanent failure: card was merged")
    job = await _job(container, slow)
    assert (job.status, job.last_error) == ("queued", "timed out after 0.2s")
    assert await _attempts(container, slow) == [(1, "timeout")]
    job = await _job(container, unknown)
    assert job.status == "dead"
    assert job.last_error == "no handler registered for 'testing.no_such_handler'"


async def test_expired_lease_is_taken_over_and_the_old_worker_cannot_commit(
    container: Container, clock: FrozenClock
) -> None:
    async with container.db.session() as s:
        job_id = await outbox.enqueue(s, "testing.effect", label="lease")
    assert job_id is not None
    first = Worker(container, worker_id="first")
    [claimed] = await first.claim(1)
    # The first worker stalls past its lease; a second worker takes the job over.
    clock.advance(seconds=container.settings.worker_lease_seconds + 1)
    second = Worker(container, worker_id="second")
    [taken] = await second.claim(1)
    assert taken.id == job_id and taken.attempts == 2
    assert await _attempts(container, job_id) == [(1, "lost"), (2, None)]
    # The stalled worker wakes up: its completion is refused and its work rolled back.
    assert (
        await outbox.run_claimed(container.db.sessionmaker, claimed, config=first.config) == "lost"
    )
    assert (
        await outbox.run_claimed(container.db.sessionmaker, taken, config=second.config) == "done"
    )
    async with container.db.session() as s:
        assert await _effects(s, "lease") == 1
    assert (await _job(container, job_id)).status == "done"


async def test_many_workers_run_each_job_exactly_once(container: Container) -> None:
    """Real concurrency: 6 workers with their own claims against one database."""
    async with container.db.session() as s:
        ids = [
            await outbox.enqueue(s, "testing.effect", label=f"many-{i}", sleep=0.01)
            for i in range(60)
        ]
    workers = [Worker(container, worker_id=f"w{i}") for i in range(6)]
    await asyncio.gather(*(w.drain() for w in workers))
    async with container.db.session() as s:
        statuses = (
            await s.execute(select(OutboxJob.status, func.count()).group_by(OutboxJob.status))
        ).all()
        assert dict(statuses) == {"done": 60}
        for i in range(60):
            assert await _effects(s, f"many-{i}") == 1
        attempts = (await s.execute(select(func.count()).select_from(OutboxAttempt))).scalar()
        assert attempts == 60
    assert all(jobs_for_tests.max_overlap[j] == 1 for j in ids if j is not None)


async def test_done_jobs_are_purged_after_the_retention_dead_letters_stay(
    container: Container, clock: FrozenClock
) -> None:
    async with container.db.session() as s:
        old = await outbox.enqueue(s, "testing.effect", label="old")
        doomed = await outbox.enqueue(s, "testing.permanent")
    await Worker(container, worker_id="w1").drain()
    clock.advance(days=15)
    async with container.db.session() as s:
        fresh = await outbox.enqueue(s, "testing.effect", label="fresh")
    await Worker(container, worker_id="w1").drain()
    from frontdesk.core import jobs  # noqa: F401 - registers the housekeeping jobs

    async with container.db.session() as s:  # the daily job, as the worker runs it
        await outbox.enqueue(s, "core.purge_done_jobs")
    await Worker(container, worker_id="w1").drain()
    async with container.db.session() as s:
        left = (
            await s.execute(select(OutboxJob.id, OutboxJob.status).order_by(OutboxJob.id))
        ).all()
        attempts = (await s.execute(select(OutboxAttempt.job_id))).scalars().all()
    left = [r for r in left if r[0] in (old, doomed, fresh)]
    assert [tuple(r) for r in left] == [(doomed, "dead"), (fresh, "done")]
    assert old not in attempts
