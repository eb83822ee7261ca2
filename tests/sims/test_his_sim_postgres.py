"""The demo HIS on PostgreSQL, in its own schema beside (never inside) Frontdesk's."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from frontdesk.core.clock import FrozenClock
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.conformance import Target, run_checks
from frontdesk.his.port import HisRejected
from frontdesk.sims.his_sim.app import PG_SCHEMA, create_his_sim_app, seed, sim_state
from tests.sims.his_helpers import client_for


async def test_the_demo_his_on_its_own_postgres_schema(
    is_postgres: bool, database_url: str, engine: AsyncEngine, clock: FrozenClock, his_secret: str
) -> None:
    if not is_postgres:
        pytest.skip("needs PostgreSQL (FRONTDESK_TEST_DATABASE_URL)")
    sim = create_his_sim_app(
        database_url=database_url, seed=3, key_id="test-key", secret=his_secret
    )
    try:
        await seed(sim, today=clock.today())
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT table_name, table_schema FROM information_schema.tables "
                    "WHERE table_name LIKE 'his_%'"
                )
            )
            schemas = {row.table_name: row.table_schema for row in rows}
        assert schemas["his_department"] == PG_SCHEMA
        assert schemas["his_feed_cursor"] == "public"  # Frontdesk's own table stays apart

        async with client_for(sim) as http:
            results = await run_checks(http, Target(key_id="test-key", secret=his_secret))
            assert [r.name for r in results if not r.passed] == []

            gateway = HttpHisGateway(
                base_url="http://his-sim",
                key_id="test-key",
                secret=his_secret,
                client=http,
                backoff_seconds=0.01,
            )
            schedule = (await gateway.schedules(start=date(2026, 11, 27), end=date(2026, 11, 27)))[
                -1
            ]

            async def book(n: int) -> str:
                try:
                    await gateway.register_appointment(
                        schedule_id=schedule.schedule_id,
                        sequence_no=1,
                        card_no=f"61{n + 1:08d}",
                        booking_ref=f"BK-PG-{n:03d}",
                    )
                except HisRejected as exc:
                    return exc.code
                return "ok"

            outcomes = await asyncio.gather(*(book(n) for n in range(10)))
        assert sorted(outcomes) == ["ok"] + ["slot_taken"] * 9
    finally:
        await sim_state(sim).engine.dispose()
