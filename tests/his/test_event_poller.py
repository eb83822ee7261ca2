"""The HIS event poller applies every event exactly once, across failures and restarts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from frontdesk.container import Container, build_container
from frontdesk.core import inbox, outbox, scheduler
from frontdesk.core.worker import Worker
from frontdesk.his import events, jobs
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.models import HisFeedCursor
from tests.sims.his_helpers import client_for

EFFECT_JOB = "histest.effect"


class Recorder:
    """A domain handler whose effect is a row in the front server's database."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_on: set[str] = set()

    async def __call__(self, ctx: events.EventContext) -> None:
        self.calls.append(ctx.event.event_id)
        await outbox.enqueue(
            ctx.session, EFFECT_JOB, event_id=ctx.event.event_id, event_type=ctx.event.type
        )
        if ctx.event.event_id in self.fail_on:
            self.fail_on.discard(ctx.event.event_id)
            raise RuntimeError("the domain failed on this event once")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    handler = Recorder()
    for kind in ("order.created", "report.reviewed"):
        events.register(kind, handler)
    yield handler
    for kind in ("order.created", "report.reviewed"):
        events.unregister(kind, handler)


async def _make_orders(his_sim: Any, count: int, card_no: str = "6100000001") -> None:
    async with client_for(his_sim) as staff:
        for n in range(count):
            response = await staff.post(
                "/operator/orders",
                json={
                    "card_no": card_no,
                    "kind": "lab",
                    "title": f"检验{n}",
                    "items": [{"name": "空腹血糖", "quantity": 1, "unit_price_fen": 500}],
                },
            )
            assert response.status_code == 200


async def _poll(container: Container, worker_id: str) -> None:
    async with container.db.session() as session:
        await outbox.enqueue(session, jobs.POLL_JOB)
    await Worker(container, worker_id=worker_id).drain()


async def _effects(container: Container) -> list[str]:
    async with container.db.session() as session:
        rows = await session.execute(
            select(outbox.OutboxJob.payload)
            .where(outbox.OutboxJob.name == EFFECT_JOB)
            .order_by(outbox.OutboxJob.id)
        )
        return [payload["event_id"] for payload in rows.scalars()]


async def _feed_ids(gateway: HttpHisGateway) -> list[str]:
    page = await gateway.events(after=None, limit=500)
    return [e.event_id for e in page.events]


async def test_the_poll_is_a_recurring_job() -> None:
    assert scheduler.recurring_registry[jobs.POLL_JOB].schedule.spec == "every 5s"
    assert outbox.registry.get(jobs.POLL_JOB) is not None


async def test_events_are_applied_once_in_order_and_the_cursor_is_stored(
    his_container: Container, his_sim: Any, his_gateway: HttpHisGateway, recorder: Recorder
) -> None:
    await _make_orders(his_sim, 3)
    await _poll(his_container, "w1")
    feed = await _feed_ids(his_gateway)
    assert len(feed) == 3
    assert await _effects(his_container) == feed
    assert recorder.calls == feed
    async with his_container.db.session() as session:
        cursor = await jobs.current_cursor(session)
        assert cursor == (await his_gateway.events(after=None)).next_cursor
        stored = [await inbox.get(session, source="his", external_id=e) for e in feed]
        assert all(m is not None and m.processed_at is not None for m in stored)

    # Nothing new: polling again does nothing.
    await _poll(his_container, "w1")
    assert await _effects(his_container) == feed


async def test_a_restart_neither_misses_nor_repeats(
    his_container: Container,
    his_sim: Any,
    his_gateway: HttpHisGateway,
    recorder: Recorder,
    settings: Any,
    clock: Any,
) -> None:
    await _make_orders(his_sim, 4)
    await _poll(his_container, "before-restart")
    await _make_orders(his_sim, 3)  # events that happen while the worker is down

    # A new process: a new container and worker on the same database, same HIS.
    restarted = build_container(settings, clock=clock, db=his_container.db)
    restarted.services["his"] = his_gateway
    await _poll(restarted, "after-restart")
    feed = await _feed_ids(his_gateway)
    assert len(feed) == 7
    assert await _effects(his_container) == feed


async def test_a_failing_handler_rolls_back_the_page_and_the_retry_applies_it_once(
    his_container: Container,
    his_sim: Any,
    his_gateway: HttpHisGateway,
    recorder: Recorder,
    clock: Any,
) -> None:
    await _make_orders(his_sim, 5)
    feed = await _feed_ids(his_gateway)
    recorder.fail_on = {feed[3]}
    async with his_container.db.session() as session:
        await outbox.enqueue(session, jobs.POLL_JOB)
    worker = Worker(his_container, worker_id="w")
    await worker.run_once()  # the 4th event fails: the whole page rolls back
    assert await _effects(his_container) == []
    async with his_container.db.session() as session:
        assert await jobs.current_cursor(session) is None  # even its first row rolled back
        assert (
            await session.execute(select(func.count()).select_from(inbox.InboxMessage))
        ).scalar_one() == 0
    # The handler saw events 1-4 in the failed attempt; their effects were rolled back.
    assert recorder.calls == feed[:4]

    clock.advance(seconds=1)  # past the (tiny, in tests) backoff
    await worker.drain()
    assert await _effects(his_container) == feed


async def test_a_rewound_cursor_is_caught_by_the_inbox(
    his_container: Container, his_sim: Any, his_gateway: HttpHisGateway, recorder: Recorder
) -> None:
    await _make_orders(his_sim, 2)
    await _poll(his_container, "w")
    async with his_container.db.session() as session:
        # As if the HIS re-sent old events (or an operator rewound the cursor).
        await session.execute(update(HisFeedCursor).values(cursor=""))
    await _poll(his_container, "w")
    assert await _effects(his_container) == await _feed_ids(his_gateway)


async def test_an_unavailable_his_changes_nothing_and_leaves_no_dead_letter(
    his_container: Container, his_sim: Any, his_gateway: HttpHisGateway, recorder: Recorder
) -> None:
    await _make_orders(his_sim, 2)
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "error"})
    await _poll(his_container, "w")
    assert await _effects(his_container) == []
    async with his_container.db.session() as session:
        assert await jobs.current_cursor(session) is None
        assert (await outbox.counts_by_status(session))[outbox.DEAD] == 0
    async with client_for(his_sim) as staff:
        await staff.delete("/operator/faults")
    await _poll(his_container, "w")  # the next scheduled poll
    assert await _effects(his_container) == await _feed_ids(his_gateway)


async def test_a_rejecting_his_fails_the_poll_loudly(
    his_container: Container, his_sim: Any, his_gateway: HttpHisGateway, recorder: Recorder
) -> None:
    await _make_orders(his_sim, 1)
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "refuse"})
    await _poll(his_container, "w")
    async with his_container.db.session() as session:
        dead = await outbox.dead_letters(session)
    assert [(j.name, j.attempts) for j in dead] == [(jobs.POLL_JOB, 1)]
    assert "refused" in (dead[0].last_error or "")
    assert await _effects(his_container) == []


async def test_a_long_feed_is_read_page_by_page_to_the_end(
    his_container: Container,
    his_sim: Any,
    his_gateway: HttpHisGateway,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "PAGE_SIZE", 2)
    await _make_orders(his_sim, 7)
    await _poll(his_container, "w")  # one poll job chains the next pages itself
    assert await _effects(his_container) == await _feed_ids(his_gateway)
    async with his_container.db.session() as session:
        polls = (
            await session.execute(
                select(func.count())
                .select_from(outbox.OutboxJob)
                .where(
                    outbox.OutboxJob.name == jobs.POLL_JOB, outbox.OutboxJob.status == outbox.DONE
                )
            )
        ).scalar_one()
    assert polls == 4  # pages of 2, 2, 2, 1


async def test_a_page_applied_by_another_worker_is_not_applied_again(
    his_container: Container, his_sim: Any, his_gateway: HttpHisGateway, recorder: Recorder
) -> None:
    await _make_orders(his_sim, 3)
    page = await his_gateway.events(after=None)
    async with his_container.db.session() as session:
        assert await jobs.apply_page(session, page, seen="") == 3
    # A second worker fetched the same page before the first committed.
    async with his_container.db.session() as session:
        assert await jobs.apply_page(session, page, seen="") is None
    assert len(await _effects(his_container)) == 3
