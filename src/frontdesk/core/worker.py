"""The worker process: runs outbox jobs and enqueues recurring ones.

Several workers may run against one PostgreSQL database; claims use ``SKIP LOCKED`` and
recurring jobs are enqueued under a guarded update, so none is run twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from typing import Any

from frontdesk.core import outbox, scheduler
from frontdesk.core.clock import now as clock_now

log = logging.getLogger("frontdesk.worker")

# Every domain's jobs module, imported so its handlers and recurring jobs are registered.
JOB_MODULES: list[str] = [
    "frontdesk.core.jobs",
    "frontdesk.accounts.jobs",
    "frontdesk.his.jobs",
    "frontdesk.wechat.oa.jobs",
    "frontdesk.messaging.jobs",
    "frontdesk.reports.jobs",
    "frontdesk.catalog.jobs",
    "frontdesk.booking.jobs",
    "frontdesk.reconciliation.jobs",
    "frontdesk.billing.jobs",
]


def load_job_modules(extra: list[str] | None = None) -> None:
    for name in [*JOB_MODULES, *(extra or [])]:
        importlib.import_module(name)


class Worker:
    def __init__(self, container: Any, *, worker_id: str | None = None) -> None:
        settings = container.settings
        self.container = container
        self.sessionmaker = container.db.sessionmaker
        self.tz = settings.tz
        self.poll_seconds = settings.worker_poll_seconds
        self.batch_size = settings.worker_batch_size
        self.concurrency = settings.worker_concurrency
        self.config = outbox.WorkerConfig(
            worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
            lease_seconds=settings.worker_lease_seconds,
            job_timeout_seconds=settings.worker_job_timeout_seconds,
            backoff_base_seconds=settings.worker_backoff_base_seconds,
            backoff_max_seconds=settings.worker_backoff_max_seconds,
        )
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[str]] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def prepare(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            await scheduler.sync_definitions(
                session, now=clock_now(), tz=self.tz, settings=self.container.settings
            )

    async def tick_recurring(self) -> list[str]:
        async with self.sessionmaker() as session, session.begin():
            return await scheduler.enqueue_due(session, now=clock_now(), tz=self.tz)

    async def claim(self, limit: int) -> list[outbox.ClaimedJob]:
        async with self.sessionmaker() as session, session.begin():
            return await outbox.claim(session, config=self.config, limit=limit)

    async def run_once(self) -> int:
        """Claim and run one batch to completion; returns how many jobs ran (tests use it)."""
        await self.tick_recurring()
        claimed = await self.claim(self.batch_size)
        await asyncio.gather(*(self._run(c) for c in claimed))
        return len(claimed)

    async def drain(self, *, max_rounds: int = 100) -> int:
        """Run batches until nothing is due (tests and the demo's first start)."""
        total = 0
        for _ in range(max_rounds):
            ran = await self.run_once()
            total += ran
            if ran == 0:
                break
        return total

    async def _run(self, claimed: outbox.ClaimedJob) -> str:
        return await outbox.run_claimed(
            self.sessionmaker, claimed, config=self.config, container=self.container
        )

    async def run_forever(self) -> None:
        await self.prepare()
        log.info("worker %s started", self.config.worker_id)
        while not self._stopping.is_set():
            try:
                await self.tick_recurring()
                free = self.concurrency - len(self._running)
                claimed = await self.claim(min(free, self.batch_size)) if free > 0 else []
            except Exception:  # the database restarted or is unreachable: wait and go on
                log.exception("worker could not claim jobs; retrying")
                claimed = []
            for item in claimed:
                task = asyncio.create_task(self._run(item))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if claimed and len(claimed) == self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
        if self._running:
            log.info("worker waiting for %d running jobs", len(self._running))
            await asyncio.gather(*self._running, return_exceptions=True)
        log.info("worker %s stopped", self.config.worker_id)
