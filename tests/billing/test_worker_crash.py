"""A worker process killed between "paid" and "settled" (SIGKILL while its settlement call is
in flight to a real demo HIS server): after a restart the saga completes, and the HIS holds
exactly one settlement of the payment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from frontdesk.billing import jobs as _billing_jobs  # noqa: F401 - registers the jobs
from frontdesk.billing import models as bm
from frontdesk.billing import service
from frontdesk.container import Container
from frontdesk.core.clock import Clock, set_clock
from frontdesk.core.database import READ_ONLY
from frontdesk.core.outbox import OutboxJob
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.wechat.pay.port import Payment, TradeState

ROOT = Path(__file__).resolve().parents[2]
KEY_ID, SECRET = "crash-key", "c" * 40
CARD = "6100000002"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(database_url: str, his_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "FRONTDESK_ENV": "test",
        "FRONTDESK_DATABASE_URL": database_url,
        "FRONTDESK_HIS_BASE_URL": his_url,
        "FRONTDESK_HIS_KEY_ID": KEY_ID,
        "FRONTDESK_HIS_SECRET": SECRET,
        "FRONTDESK_WORKER_LEASE_SECONDS": "2",
        "FRONTDESK_WORKER_POLL_SECONDS": "0.1",
        "FRONTDESK_LOG_LEVEL": "WARNING",
    }


async def _wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_worker_killed_between_paid_and_settled_completes_after_restart(
    container: Container, database_url: str, tmp_path: Path
) -> None:
    set_clock(Clock("Asia/Shanghai"))  # real time: the subprocesses use it too
    port = _free_port()
    his_url = f"http://127.0.0.1:{port}"
    env = _env(database_url, his_url)
    his = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frontdesk",
            "his-sim",
            "--port",
            str(port),
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'his.db'}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with httpx.AsyncClient(base_url=his_url) as staff:

            async def his_up() -> bool:
                try:
                    return (await staff.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _wait_for(his_up, timeout=60, what="the demo HIS")
            gateway = HttpHisGateway(base_url=his_url, key_id=KEY_ID, secret=SECRET, client=staff)
            container.services["his"] = gateway
            [order, *_] = await gateway.unpaid_orders(card_no=CARD)
            # A paid payment (as the notify would leave it): the saga's job is queued.
            async with container.db.session() as s:
                view = await service.create_payment(
                    s,
                    his=gateway,
                    card_no=CARD,
                    order_ids=[order.order_id],
                    channel="NATIVE",
                    actor="test",
                    now=Clock().now(),
                )
                await service.apply_trade(
                    s,
                    payment_id=view.payment_id,
                    source="query",
                    now=Clock().now(),
                    observed=Payment(
                        out_trade_no=view.out_trade_no,
                        state=TradeState.SUCCESS,
                        state_desc="",
                        amount_fen=view.amount_fen,
                        transaction_id="4200000000000000001",
                    ),
                )
            # The HIS is slow to answer the settlement: the worker is killed while it waits.
            await staff.put(
                "/operator/faults",
                json={"mode": "latency", "latency_ms": 3000, "path_contains": "/settlements"},
            )
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "frontdesk", "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )

            async def settling() -> bool:
                # A plain read: on SQLite a session would wait for the job's transaction.
                engine = container.db.engine.execution_options(**{READ_ONLY: True})
                async with engine.connect() as conn:
                    status = await conn.scalar(
                        select(OutboxJob.status).where(OutboxJob.name == service.SETTLE_JOB)
                    )
                    return bool(status == "running")

            await _wait_for(settling, timeout=60, what="the worker to start settling")
            await asyncio.sleep(1.0)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            row = await _payment(container, view.payment_id)
            assert (row.state, row.his_state) == ("paid", "pending")  # paid, not settled

            await staff.delete("/operator/faults")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "frontdesk", "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )

            async def settled() -> bool:
                return (await _payment(container, view.payment_id)).his_state == "settled"

            await _wait_for(settled, timeout=60, what="the saga to finish after the restart")
            found = await gateway.settlement(view.out_trade_no)
            assert found is not None and found.self_pay_fen == view.amount_fen
            async with container.db.session() as s:
                done = await s.scalar(
                    select(func.count())
                    .select_from(bm.BillingEvent)
                    .where(
                        bm.BillingEvent.payment_id == view.payment_id,
                        bm.BillingEvent.kind == "settle.done",
                    )
                )
                refunds = await s.scalar(select(func.count()).select_from(bm.BillingRefund))
            assert (done, refunds) == (1, 0)
            assert (
                await _payment(container, view.payment_id)
            ).his_settlement_id == found.settlement_id
    finally:
        for process in [*workers, his]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


async def _payment(container: Container, payment_id: int) -> bm.BillingPayment:
    async with container.db.session() as s:
        row = await s.get(bm.BillingPayment, payment_id)
        assert isinstance(row, bm.BillingPayment)
        return row
