"""Fixtures of the booking tests: the WeChat + demo HIS environment and a small world in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from frontdesk.booking import jobs as _booking_jobs  # noqa: F401 - registers handlers
from frontdesk.catalog import jobs as _catalog_jobs  # noqa: F401
from frontdesk.catalog import service as catalog_service
from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from tests.accounts.helpers import sim_patients
from tests.booking.helpers import bookable_days, free_slots, open_schedule, sync
from tests.booking.pages import phone, sign_in_staff
from tests.console.conftest import create_staff


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """The read-storm caches are per process; a test's ids (SQLite reuses them after the
    cleanup) must not meet the answers cached for the previous test's rows."""
    catalog_service.clear_caches()


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


@pytest.fixture
async def world(
    env: Any, his_sim: Any, sms_sim: Any, clock: FrozenClock
) -> AsyncIterator[dict[str, Any]]:
    async with env.container.db.session() as s:
        await sync(s, env.container.services["his"])
        days = await bookable_days(s)
        sched = await open_schedule(s, on_date=days[0], min_slots=3)
        slots = await free_slots(s, sched.id)
    patients = await sim_patients(his_sim, count=4)
    alice = await phone(env, "张三", sms_sim, patients[:2])
    bob = await phone(env, "李四", sms_sim, patients[2:3])
    yield {"alice": alice, "bob": bob, "sched": sched, "slots": slots, "days": days}
    await alice.aclose()
    await bob.aclose()


@pytest.fixture
async def office(env: Any, clock: FrozenClock) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A signed-in scheduling-office client on the front app: (client, csrf, actor)."""
    async with env.container.db.session() as s:
        staff = await create_staff(s, clock, username="sched1", role=Role.scheduling)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    )
    csrf = await sign_in_staff(client, clock, staff)
    yield client, csrf, f"staff:{staff.id}"
    await client.aclose()
