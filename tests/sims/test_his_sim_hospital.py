"""The demo HIS behaves like a hospital, deterministically from its seed."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.port import AppointmentStatus, ScheduleStatus
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim.app import create_his_sim_app, seed, sim_state
from tests.sims.his_helpers import client_for

TODAY = date(2026, 11, 27)


async def _dump(app: Any) -> dict[str, list[Any]]:
    state = sim_state(app)
    out: dict[str, list[Any]] = {}
    async with state.sessionmaker() as session:
        for table in (
            m.department,
            m.doctor,
            m.schedule,
            m.slot,
            m.patient,
            m.card,
            m.order,
            m.order_item,
            m.settlement,
            m.report,
        ):
            rows = await session.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in rows]
    return out


async def test_the_same_seed_gives_the_same_hospital(tmp_path: Path) -> None:
    apps = [
        create_his_sim_app(database_url=f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}", seed=seed_no)
        for n, seed_no in enumerate((7, 7, 8))
    ]
    try:
        for app in apps:
            await seed(app, today=TODAY)
        a, b, c = [await _dump(app) for app in apps]
        assert a == b
        assert a["his_patient"] != c["his_patient"]
    finally:
        for app in apps:
            await sim_state(app).engine.dispose()


async def test_the_small_hospital_has_its_shape(his_sim: Any) -> None:
    state = sim_state(his_sim)
    async with state.sessionmaker() as session:

        def count(table: Any) -> Any:
            return select(func.count()).select_from(table)

        assert (await session.execute(count(m.department))).scalar_one() == 20
        assert (await session.execute(count(m.doctor))).scalar_one() == 80
        types = (await session.execute(select(m.card.c.card_type).distinct())).scalars()
        assert set(types) == {"self_pay", "city_insurance", "provincial_insurance", "city_cadre"}
        days = (await session.execute(select(m.schedule.c.on_date).distinct())).scalars()
        assert set(days) <= {TODAY + timedelta(days=n) for n in range(14)}
        assert max(
            days_ := set((await session.execute(select(m.schedule.c.on_date).distinct())).scalars())
        ) >= TODAY + timedelta(days=12)
        assert min(days_) == TODAY
        oldest = (await session.execute(select(func.min(m.report.c.reviewed_at)))).scalar_one()
        assert oldest.date() >= TODAY - timedelta(days=3 * 365 + 2)
        assert oldest.date() < TODAY - timedelta(days=365)
        levels = set((await session.execute(select(m.schedule.c.level).distinct())).scalars())
        assert levels == {"ordinary", "expert", "special_needs"}


async def test_staff_actions_append_ordered_events(
    his_sim: Any, his_gateway: HttpHisGateway
) -> None:
    schedules = await his_gateway.schedules(start=TODAY, end=TODAY)
    first, second = schedules[0], schedules[1]
    booked = await his_gateway.register_appointment(
        schedule_id=first.schedule_id, sequence_no=1, card_no="6100000001", booking_ref="BK-EV-001"
    )
    kept = await his_gateway.register_appointment(
        schedule_id=second.schedule_id, sequence_no=1, card_no="6100000002", booking_ref="BK-EV-002"
    )
    missed = await his_gateway.register_appointment(
        schedule_id=second.schedule_id, sequence_no=2, card_no="6100000003", booking_ref="BK-EV-003"
    )
    async with client_for(his_sim) as staff:
        order = (
            await staff.post(
                "/operator/orders",
                json={
                    "card_no": "6100000001",
                    "kind": "lab",
                    "title": "血常规",
                    "items": [{"name": "血常规（五分类）", "quantity": 1, "unit_price_fen": 2000}],
                },
            )
        ).json()
        report = (
            await staff.post("/operator/reports", json={"card_no": "6100000001", "kind": "lab"})
        ).json()
        assert (
            await staff.post(f"/operator/reports/{report['report_id']}/review")
        ).status_code == 200
        suspended = (
            await staff.post(
                f"/operator/schedules/{first.schedule_id}/suspend", json={"reason": "专家外出会诊"}
            )
        ).json()
        assert (
            await staff.post(f"/operator/appointments/{kept.appointment_id}/check-in")
        ).status_code == 200
        assert (
            await staff.post(f"/operator/schedules/{second.schedule_id}/slots", json={"count": 2})
        ).status_code == 200
        end = (await staff.post("/operator/end-of-day", json={"on_date": TODAY.isoformat()})).json()
        twice = await staff.post(f"/operator/reports/{report['report_id']}/review")
    assert twice.status_code == 409
    assert suspended["cancelled_appointment_ids"] == [booked.appointment_id]
    assert end["no_show_appointment_ids"] == [missed.appointment_id]
    assert order["total_fen"] == 2000

    assert (
        await his_gateway.appointment(booked.appointment_id)
    ).status is AppointmentStatus.cancelled_by_suspension
    assert (
        await his_gateway.appointment(kept.appointment_id)
    ).status is AppointmentStatus.checked_in
    assert (
        await his_gateway.appointment(missed.appointment_id)
    ).status is AppointmentStatus.no_show
    suspended_schedule = next(
        s
        for s in await his_gateway.schedules(start=TODAY, end=TODAY)
        if s.schedule_id == first.schedule_id
    )
    assert suspended_schedule.status is ScheduleStatus.suspended
    assert not any(s.available for s in (await his_gateway.slot_pool(first.schedule_id)).slots)

    page = await his_gateway.events(after=None, limit=3)
    rest = await his_gateway.events(after=page.next_cursor, limit=100)
    events = [*page.events, *rest.events]
    assert page.has_more is True
    assert rest.has_more is False
    assert [e.type for e in events] == [
        "order.created",
        "report.reviewed",
        "schedule.suspended",
        "appointment.checked_in",
        "slot_pool.changed",
        "appointment.no_show",
    ]
    cursors = [int(e.cursor) for e in events]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    assert len({e.event_id for e in events}) == len(events)
    assert events[1].data["report_id"] == report["report_id"]
    nothing_new = await his_gateway.events(after=rest.next_cursor)
    assert nothing_new.events == ()
    assert nothing_new.next_cursor == rest.next_cursor


async def test_operator_page_and_bad_operator_input(his_sim: Any) -> None:
    async with client_for(his_sim) as staff:
        page = await staff.get("/operator")
        bad = await staff.post(
            "/operator/orders",
            json={
                "card_no": "6100000001",
                "kind": "lab",
                "title": "x",
                "items": [{"name": "x", "quantity": 1, "unit_price_fen": "20"}],
            },
        )
    assert page.status_code == 200
    assert "停诊" in page.text
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"


async def test_doctor_photos_are_served(his_sim: Any, his_gateway: HttpHisGateway) -> None:
    doctor = (await his_gateway.doctors())[0]
    async with client_for(his_sim) as browser:
        photo = await browser.get(doctor.photo_url)
    assert photo.status_code == 200
    assert photo.headers["content-type"] == "image/svg+xml"
    assert photo.text.startswith("<svg")


async def test_window_refund_and_latency_fault(his_sim: Any, his_gateway: HttpHisGateway) -> None:
    card = "6100000003"
    paid = await his_gateway.refundable_items(card_no=card)
    assert paid  # the seed's paid, unexecuted orders
    async with client_for(his_sim) as staff:
        refunded = await staff.post(
            "/operator/window-refunds", json={"card_no": card, "item_ids": [paid[0].item_id]}
        )
        again = await staff.post(
            "/operator/window-refunds", json={"card_no": card, "item_ids": [paid[0].item_id]}
        )
    assert refunded.status_code == 200
    assert refunded.json()["amount_fen"] == paid[0].self_pay_fen
    assert again.status_code == 409
    assert again.json()["code"] == "not_refundable"
    remaining = {i.item_id for i in await his_gateway.refundable_items(card_no=card)}
    assert paid[0].item_id not in remaining
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "latency", "latency_ms": 150, "count": 1})
    started = time.perf_counter()
    page = await his_gateway.events(after=None)  # the one delayed call
    assert time.perf_counter() - started >= 0.15
    assert [(e.type, e.data["amount_fen"]) for e in page.events] == [
        ("window.refunded", paid[0].self_pay_fen)
    ]
    # Window refunds are not WeChat money: not in the day's settlements.
    assert await his_gateway.day_settlements(TODAY) == []
