"""Concurrent writes to the demo HIS: a slot is given once, an order is settled once."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.port import HisRejected
from tests.sims.his_helpers import snapshot

TODAY = date(2026, 11, 27)


async def test_one_slot_many_bookings_one_winner(his_sim: Any, his_gateway: HttpHisGateway) -> None:
    schedule = (await his_gateway.schedules(start=TODAY, end=TODAY))[0]

    async def book(n: int) -> str:
        try:
            await his_gateway.register_appointment(
                schedule_id=schedule.schedule_id,
                sequence_no=1,
                card_no=f"61{n + 1:08d}",
                booking_ref=f"BK-RACE-{n:03d}",
            )
        except HisRejected as exc:
            return exc.code
        return "ok"

    outcomes = await asyncio.gather(*(book(n) for n in range(12)))
    assert sorted(outcomes) == ["ok"] + ["slot_taken"] * 11
    assert (await snapshot(his_sim))["appointment"] == 1


async def test_one_order_many_payments_one_settlement(
    his_sim: Any, his_gateway: HttpHisGateway
) -> None:
    card = "6100000004"
    orders = [o.order_id for o in await his_gateway.unpaid_orders(card_no=card)]
    pre = await his_gateway.pre_settle(card_no=card, order_ids=orders)

    async def pay(n: int) -> str:
        try:
            await his_gateway.settle(
                card_no=card,
                order_ids=orders,
                payment_ref=f"PAYRACE{n:03d}",
                self_pay_fen=pre.self_pay_fen,
            )
        except HisRejected as exc:
            return exc.code
        return "ok"

    outcomes = await asyncio.gather(*(pay(n) for n in range(10)))
    assert sorted(outcomes) == ["ok"] + ["order_not_unpaid"] * 9
    assert (await snapshot(his_sim))["settlement"] == 1 + 24  # the seed's paid orders
