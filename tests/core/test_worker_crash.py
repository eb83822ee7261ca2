"""A worker process killed with SIGKILL mid-job loses nothing: the job completes once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from frontdesk.container import Container
from frontdesk.core import outbox
from frontdesk.core.clock import Clock, set_clock
from frontdesk.core.inbox import InboxMessage
from frontdesk.core.outbox import OutboxAttempt, OutboxJob

ROOT = Path(__file__).resolve().parents[2]


def _start_worker(database_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "FRONTDESK_ENV": "test",
        "FRONTDESK_DATABASE_URL": database_url,
        "FRONTDESK_WORKER_JOB_MODULES": json.dumps(["tests.core.jobs_for_tests"]),
        "FRONTDESK_WORKER_LEASE_SECONDS": "2",
        "FRONTDESK_WORKER_POLL_SECONDS": "0.1",
        "FRONTDESK_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "frontdesk", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_for(predicate, *, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_killed_worker_loses_nothing_and_runs_the_job_once(
    container: Container, database_url: str, tmp_path: Path
) -> None:
    set_clock(Clock("Asia/Shanghai"))  # real time: the subprocesses use it too
    async with container.db.session() as s:
        job_id = await outbox.enqueue(
            s, "testing.crash_once", marker_dir=str(tmp_path), label="crash"
        )
    first = _start_worker(database_url)
    try:

        async def started() -> bool:
            return any(tmp_path.glob(f"started-{job_id}-*"))

        await _wait_for(started, timeout=30, what="the first worker to start the job")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)

    async with container.db.session() as s:
        job = (await s.execute(select(OutboxJob).where(OutboxJob.id == job_id))).scalar_one()
        assert (job.status, job.attempts) == ("running", 1)

    second = _start_worker(database_url)
    try:

        async def done() -> bool:
            async with container.db.session() as s:
                status = (
                    await s.execute(select(OutboxJob.status).where(OutboxJob.id == job_id))
                ).scalar_one()
                return bool(status == "done")

        await _wait_for(done, timeout=30, what="the second worker to finish the job")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)

    async with container.db.session() as s:
        effects = (
            await s.execute(
                select(func.count())
                .select_from(InboxMessage)
                .where(InboxMessage.external_id.like("crash:%"))
            )
        ).scalar_one()
        attempts = (
            await s.execute(
                select(OutboxAttempt.attempt, OutboxAttempt.outcome)
                .where(OutboxAttempt.job_id == job_id)
                .order_by(OutboxAttempt.attempt)
            )
        ).all()
    assert effects == 1
    assert [tuple(a) for a in attempts] == [(1, "lost"), (2, "ok")]
    assert second.returncode == 0
