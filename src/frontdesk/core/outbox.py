"""The transactional outbox: jobs written in the caller's transaction, run by workers.

``enqueue`` adds a job row in the same transaction as the change that causes it, so a side
effect (a push, an HIS write, a refund) is never lost and never happens for a change that
rolled back. Workers claim due jobs with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
on SQLite every transaction is ``BEGIN IMMEDIATE``, so the same guarded ``UPDATE`` is already
serialised), run each in its own transaction, and either mark it done in that same
transaction or record the failure and schedule a retry with exponential backoff and jitter.
A worker that dies mid-job loses nothing: the job's lease expires and another worker takes it.
Completion is guarded by the claim's token, so a worker whose lease was taken over cannot
commit its work a second time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.clock import now as clock_now
from frontdesk.core.models import Base, BigId, UTCDateTime
from frontdesk.core.sql import dialect_name, pg_connection

log = logging.getLogger("frontdesk.outbox")

QUEUED, RUNNING, DONE, DEAD = "queued", "running", "done", "dead"
MAX_ERROR_CHARS = 4000


class OutboxJob(Base):
    __tablename__ = "outbox_job"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    run_after_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    locked_until_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lock_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_outbox_job_status_run_after_at", "status", "run_after_at"),)


class OutboxAttempt(Base):
    """One row per run of a job: when, by whom, how it ended (every attempt recorded)."""

    __tablename__ = "outbox_attempt"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("outbox_job.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    worker: Mapped[str] = mapped_column(String(100), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # ok | error | timeout | lost (the worker died or its lease expired)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


# --------------------------------------------------------------------------- handlers


class RetryLater(Exception):
    """Raise from a handler to be run again after ``delay_seconds`` (counts as an attempt)."""

    def __init__(self, reason: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class PermanentFailure(Exception):
    """Raise from a handler when retrying cannot help: the job goes to dead letters now."""


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides its payload ids."""

    session: AsyncSession
    job_id: int
    attempt: int
    now: datetime
    container: Any  # the composition root's services (HIS, WeChat, settings, clock)


Handler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    handler: Handler
    max_attempts: int | None = None
    timeout_seconds: float | None = None


@dataclass
class Registry:
    specs: dict[str, JobSpec] = field(default_factory=dict)

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        existing = self.specs.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"job {name!r} is registered twice")
        self.specs[name] = JobSpec(name, handler, max_attempts, timeout_seconds)

    def get(self, name: str) -> JobSpec | None:
        return self.specs.get(name)


registry = Registry()


def job(
    name: str, *, max_attempts: int | None = None, timeout_seconds: float | None = None
) -> Callable[[Handler], Handler]:
    """Register a job handler: ``async def handler(ctx: JobContext, **payload) -> None``.

    Handlers take ids, reload rows, and must be safe to run twice (a lease can expire).
    """
    if "." not in name:
        raise ValueError("job names are 'domain.job_name'")

    def decorate(handler: Handler) -> Handler:
        registry.register(name, handler, max_attempts=max_attempts, timeout_seconds=timeout_seconds)
        return handler

    return decorate


# --------------------------------------------------------------------------- enqueue


def attempts_for(name: str) -> int:
    """How many attempts a job of this name gets (its spec's, else 8)."""
    spec = registry.get(name)
    return (spec.max_attempts if spec else None) or 8


def _check_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in payload.items():
        if not isinstance(value, str | int | float | bool | type(None) | list | dict):
            raise TypeError(f"job payload {key!r} must be plain JSON data (ids), got {value!r}")
    return dict(payload)


async def enqueue(
    session: AsyncSession,
    name: str,
    *,
    run_after: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int | None = None,
    **payload: Any,
) -> int | None:
    """Add a job in the caller's transaction. Returns its id, or None if ``dedupe_key``
    was already used (the job exists, and nothing new was written)."""
    now = clock_now()
    attempts_cap = max_attempts or attempts_for(name)
    values = {
        "name": name,
        "payload": _check_payload(payload),
        "dedupe_key": dedupe_key,
        "status": QUEUED,
        "attempts": 0,
        "max_attempts": attempts_cap,
        "created_at": now,
        "run_after_at": run_after or now,
    }
    pg = await pg_connection(session)
    if pg is not None:
        job_id = await pg.fetchval(
            _ENQUEUE_PG if dedupe_key is not None else _ENQUEUE_PG_ANY,
            name,
            json.dumps(values["payload"]),
            dedupe_key,
            QUEUED,
            attempts_cap,
            now,
            values["run_after_at"],
        )
        return int(job_id) if job_id is not None else None
    conn = await session.connection()
    result = await conn.execute(_ENQUEUE[(dialect_name(session), dedupe_key is not None)], values)
    job_id = result.scalar_one_or_none()
    return int(job_id) if job_id is not None else None


def _enqueue_stmt(dialect: str, dedupe: bool) -> Any:
    table: Any = OutboxJob.__table__
    if not dedupe:
        return table.insert().returning(table.c.id)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return stmt.returning(table.c.id)


_ENQUEUE_PG_ANY = (
    "INSERT INTO outbox_job (name, payload, dedupe_key, status, attempts, max_attempts,"
    " created_at, run_after_at) VALUES ($1, $2, $3, $4, 0, $5, $6, $7)"
)
_ENQUEUE_PG = _ENQUEUE_PG_ANY + " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
_ENQUEUE_PG_ANY += " RETURNING id"
# Built once per dialect: enqueue runs in every booking at release time.
_ENQUEUE = {(d, k): _enqueue_stmt(d, k) for d in ("postgresql", "sqlite") for k in (True, False)}


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    name: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lock_token: str


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    lease_seconds: float = 300.0
    job_timeout_seconds: float = 120.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in [0.5, 1.5) of the step, capped."""
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(min(cap, step * (0.5 + random.random())))


async def claim(session: AsyncSession, *, config: WorkerConfig, limit: int) -> list[ClaimedJob]:
    """Claim up to ``limit`` due jobs (queued and due, or running with an expired lease).

    Call inside a transaction and commit it before running the jobs.
    """
    now = clock_now()
    due = (
        select(OutboxJob.id)
        .where(
            or_(
                (OutboxJob.status == QUEUED) & (OutboxJob.run_after_at <= now),
                (OutboxJob.status == RUNNING) & (OutboxJob.locked_until_at < now),
            )
        )
        .order_by(OutboxJob.run_after_at, OutboxJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    token = uuid.uuid4().hex
    stmt = (
        update(OutboxJob)
        .where(OutboxJob.id.in_(due.scalar_subquery()))
        .values(
            status=RUNNING,
            lock_token=token,
            locked_until_at=now + timedelta(seconds=config.lease_seconds),
            attempts=OutboxJob.attempts + 1,
        )
        .returning(
            OutboxJob.id,
            OutboxJob.name,
            OutboxJob.payload,
            OutboxJob.attempts,
            OutboxJob.max_attempts,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(stmt)).all()
    claimed = [
        ClaimedJob(
            id=r.id,
            name=r.name,
            payload=dict(r.payload or {}),
            attempts=r.attempts,
            max_attempts=r.max_attempts,
            lock_token=token,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]
    if claimed:
        ids = [c.id for c in claimed]
        # An earlier attempt that never finished belonged to a worker that died.
        await session.execute(
            update(OutboxAttempt)
            .where(OutboxAttempt.job_id.in_(ids), OutboxAttempt.finished_at.is_(None))
            .values(finished_at=now, outcome="lost", error="lease expired before it finished")
            .execution_options(synchronize_session=False)
        )
        session.add_all(
            OutboxAttempt(job_id=c.id, attempt=c.attempts, worker=config.worker_id, started_at=now)
            for c in claimed
        )
        await session.flush()
    return claimed


async def run_claimed(
    sessionmaker: Any,
    claimed: ClaimedJob,
    *,
    config: WorkerConfig,
    container: Any = None,
) -> str:
    """Run one claimed job; returns its new status (done, queued, dead, or 'lost')."""
    spec = registry.get(claimed.name)
    if claimed.attempts > claimed.max_attempts:
        await _finish_failure(
            sessionmaker,
            claimed,
            config=config,
            error="the last attempt did not finish (worker died)",
            outcome="lost",
            terminal=True,
        )
        return DEAD
    if spec is None:
        await _finish_failure(
            sessionmaker,
            claimed,
            config=config,
            error=f"no handler registered for {claimed.name!r}",
            outcome="error",
            terminal=True,
        )
        return DEAD
    timeout = spec.timeout_seconds or config.job_timeout_seconds
    started = clock_now()
    try:
        async with sessionmaker() as session, session.begin():
            ctx = JobContext(
                session=session,
                job_id=claimed.id,
                attempt=claimed.attempts,
                now=started,
                container=container,
            )
            await asyncio.wait_for(spec.handler(ctx, **claimed.payload), timeout)
            finished = clock_now()
            done = await session.execute(
                update(OutboxJob)
                .where(
                    OutboxJob.id == claimed.id,
                    OutboxJob.lock_token == claimed.lock_token,
                    OutboxJob.status == RUNNING,
                )
                .values(status=DONE, finished_at=finished, locked_until_at=None, last_error=None)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:
                raise _LeaseLost
            await session.execute(
                update(OutboxAttempt)
                .where(
                    OutboxAttempt.job_id == claimed.id,
                    OutboxAttempt.attempt == claimed.attempts,
                    OutboxAttempt.finished_at.is_(None),
                )
                .values(finished_at=finished, outcome="ok")
                .execution_options(synchronize_session=False)
            )
    except _LeaseLost:
        log.warning("job %s %s lost its lease; its work was rolled back", claimed.id, claimed.name)
        return "lost"
    except RetryLater as exc:
        return await _finish_failure(
            sessionmaker,
            claimed,
            config=config,
            error=f"retry later: {exc}",
            outcome="error",
            delay=exc.delay_seconds,
        )
    except PermanentFailure as exc:
        return await _finish_failure(
            sessionmaker,
            claimed,
            config=config,
            error=f"permanent failure: {exc}",
            outcome="error",
            terminal=True,
        )
    except TimeoutError:
        return await _finish_failure(
            sessionmaker,
            claimed,
            config=config,
            error=f"timed out after {timeout:g}s",
            outcome="timeout",
        )
    except Exception as exc:  # a handler's bug or an outside system's failure: record it
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.warning(
            "job %s %s failed (attempt %s/%s): %s",
            claimed.id,
            claimed.name,
            claimed.attempts,
            claimed.max_attempts,
            error,
        )
        return await _finish_failure(
            sessionmaker, claimed, config=config, error=error, outcome="error"
        )
    return DONE


class _LeaseLost(Exception):
    pass


async def _finish_failure(
    sessionmaker: Any,
    claimed: ClaimedJob,
    *,
    config: WorkerConfig,
    error: str,
    outcome: str,
    terminal: bool = False,
    delay: float | None = None,
) -> str:
    now = clock_now()
    error = error[:MAX_ERROR_CHARS]
    dead = terminal or claimed.attempts >= claimed.max_attempts
    if dead:
        values: dict[str, Any] = {"status": DEAD, "finished_at": now}
    else:
        wait = (
            delay
            if delay is not None
            else backoff_delay(
                claimed.attempts, base=config.backoff_base_seconds, cap=config.backoff_max_seconds
            )
        )
        values = {"status": QUEUED, "run_after_at": now + timedelta(seconds=wait)}
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(OutboxJob)
            .where(
                OutboxJob.id == claimed.id,
                OutboxJob.lock_token == claimed.lock_token,
                OutboxJob.status == RUNNING,
            )
            .values(last_error=error, locked_until_at=None, lock_token=None, **values)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(OutboxAttempt)
            .where(
                OutboxAttempt.job_id == claimed.id,
                OutboxAttempt.attempt == claimed.attempts,
                OutboxAttempt.finished_at.is_(None),
            )
            .values(finished_at=now, outcome=outcome, error=error)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return "lost"
    return DEAD if dead else QUEUED


# --------------------------------------------------------------------------- staff tools


async def retry_dead(session: AsyncSession, job_id: int) -> bool:
    """Give a dead letter a fresh set of attempts (console "retry" button)."""
    result = await session.execute(
        update(OutboxJob)
        .where(OutboxJob.id == job_id, OutboxJob.status == DEAD)
        .values(status=QUEUED, attempts=0, run_after_at=clock_now(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def retry_dead_by_key(session: AsyncSession, dedupe_key: str) -> bool:
    """``retry_dead`` for the job a domain knows by its ``dedupe_key``: the same row, so the
    same payload, runs again. One guarded ``UPDATE``: of two staff pressing at once, one
    re-queues it and the other gets ``False``; a job that is not dead is left alone."""
    result = await session.execute(
        update(OutboxJob)
        .where(OutboxJob.dedupe_key == dedupe_key, OutboxJob.status == DEAD)
        .values(status=QUEUED, attempts=0, run_after_at=clock_now(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def statuses_by_key(session: AsyncSession, dedupe_keys: list[str]) -> dict[str, str]:
    """The status (queued, running, done, dead) of the jobs with these ``dedupe_key``s; a key
    with no job (never enqueued, or done and purged) is absent. Lets a domain page tell a
    push that is still being retried from one the outbox gave up on."""
    if not dedupe_keys:
        return {}
    rows = await session.execute(
        select(OutboxJob.dedupe_key, OutboxJob.status).where(OutboxJob.dedupe_key.in_(dedupe_keys))
    )
    return {str(key): str(status) for key, status in rows.all()}


async def purge_done(
    session: AsyncSession, *, finished_before: datetime, limit: int = 10_000
) -> int:
    """Delete finished (done) jobs and their attempt rows older than ``finished_before``.

    Dead letters are kept until staff deal with them. Deletes in bounded batches so a
    large backlog never holds one long transaction.
    """
    ids = (
        select(OutboxJob.id)
        .where(OutboxJob.status == DONE, OutboxJob.finished_at < finished_before)
        .limit(limit)
    )
    chosen = [row[0] for row in (await session.execute(ids)).all()]
    if not chosen:
        return 0
    await session.execute(
        delete(OutboxAttempt)
        .where(OutboxAttempt.job_id.in_(chosen))
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(OutboxJob)
        .where(OutboxJob.id.in_(chosen))
        .execution_options(synchronize_session=False)
    )
    return len(chosen)


async def counts_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(OutboxJob.status, func.count()).group_by(OutboxJob.status))
    counts = {QUEUED: 0, RUNNING: 0, DONE: 0, DEAD: 0}
    counts.update({status: int(n) for status, n in rows.all()})
    return counts


async def dead_letters(session: AsyncSession, *, limit: int = 50) -> list[OutboxJob]:
    rows = await session.execute(
        select(OutboxJob)
        .where(OutboxJob.status == DEAD)
        .order_by(OutboxJob.finished_at.desc())
        .limit(limit)
    )
    return list(rows.scalars())


__all__ = [
    "DEAD",
    "DONE",
    "QUEUED",
    "RUNNING",
    "ClaimedJob",
    "JobContext",
    "OutboxAttempt",
    "OutboxJob",
    "PermanentFailure",
    "RetryLater",
    "WorkerConfig",
    "claim",
    "enqueue",
    "job",
    "registry",
    "retry_dead",
    "retry_dead_by_key",
    "run_claimed",
    "statuses_by_key",
]
