"""The integration-health panels show real numbers from the shared database."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console import integrations
from frontdesk.console.health import BAD, OK
from frontdesk.console.models import Role
from frontdesk.container import Container
from frontdesk.core import inbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.his import jobs as his_jobs
from tests.console.conftest import create_staff, sign_in


def _rows(panel: Any) -> dict[str, tuple[str, str]]:
    return {row.label_key: (row.value, row.status) for row in panel.rows}


async def test_his_panel_before_and_after_polls(
    his_container: Container, clock: FrozenClock
) -> None:
    async with his_container.db.session() as s:
        before = _rows(await integrations.his_panel(s, his_container))
    assert before["console.health.his.last_success"] == ("—", BAD)
    # One real poll of the demo HIS's event feed through the bridge.
    async with his_container.db.session() as s:
        from frontdesk.core import outbox

        await outbox.enqueue(s, his_jobs.POLL_JOB)
    await Worker(his_container).drain()
    clock.advance(seconds=30)
    async with his_container.db.session() as s:
        panel = await integrations.his_panel(s, his_container)
    rows = _rows(panel)
    assert rows["console.health.his.last_success"] == ("2026-11-27 09:00:00", OK)
    assert rows["console.health.his.error_rate"][0].startswith("0% (0/")
    assert rows["console.health.his.lag"] == ("30 s", OK)
    clock.advance(minutes=10)
    async with his_container.db.session() as s:
        late = await integrations.his_panel(s, his_container)
    assert _rows(late)["console.health.his.lag"] == ("630 s", BAD)
    assert late.status == BAD


async def test_wechat_and_pay_panels(wechat_sim: Any, clock: FrozenClock) -> None:
    container = wechat_sim.container
    await wechat_sim.tokens.get()  # the shared token, fetched from the simulator
    async with container.db.session() as s:
        await inbox.receive(s, source="wxpay", external_id="n-1", at=clock.now())
        wechat = _rows(await integrations.wechat_panel(s, container))
        pay = _rows(await integrations.pay_panel(s, container))
    assert wechat["console.health.wechat.token_age"] == ("0 min", OK)
    assert wechat["console.health.wechat.templates"] == (
        "queued 0 · sent 0 · delivered 0 · failed 0",
        OK,
    )
    assert pay == {
        "console.health.pay.last_notify": ("2026-11-27 09:00:00", OK),
        "console.health.pay.notifies": ("1", OK),
        "console.health.pay.pending_queries": ("0", OK),
    }


async def test_the_health_page_shows_the_three_panels(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock, username="ada", role=Role.admin)
    await sign_in(client, clock, admin)
    page = await client.get("/console/health")
    for key, label in (
        ("his", "最近一次成功轮询"),
        ("wechat", "access_token 已用时长"),
        ("pay", "最近一次支付通知"),
    ):
        section = page.text.split(f'data-panel="{key}"')[1].split("</section>")[0]
        assert label in section
        assert "未配置" not in section
