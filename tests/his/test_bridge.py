"""The real HIS adapter against the demo HIS over httpx.ASGITransport (no sockets)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.port import (
    AbnormalFlag,
    AppointmentStatus,
    CardType,
    ExamReport,
    ExecutionState,
    HisGateway,
    HisRejected,
    HisUnavailable,
    LabReport,
    OrderStatus,
    Period,
    ScheduleStatus,
)
from tests.sims.his_helpers import card_holder, client_for, snapshot

TODAY = date(2026, 11, 27)  # the clock fixture's hospital date


def test_the_adapter_implements_the_port(his_gateway: HttpHisGateway) -> None:
    assert isinstance(his_gateway, HisGateway)


async def test_catalog_reads(his_gateway: HttpHisGateway) -> None:
    departments = await his_gateway.departments()
    assert len(departments) == 20
    assert [d.name for d in departments[:3]] == ["全科医学科", "肝病科", "感染科"]

    doctors = await his_gateway.doctors()
    assert len(doctors) == 80
    hepatology = await his_gateway.doctors(department_code="HEP")
    assert {d.department_code for d in hepatology} == {"HEP"}
    assert len(hepatology) == 4

    schedules = await his_gateway.schedules(start=TODAY, end=TODAY + timedelta(days=13))
    assert {s.on_date for s in schedules} <= {TODAY + timedelta(days=n) for n in range(14)}
    assert {s.period for s in schedules} == {Period.am, Period.pm}
    assert all(s.status is ScheduleStatus.open and s.fee_fen > 0 for s in schedules)
    assert {s.level.value for s in schedules} == {"ordinary", "expert", "special_needs"}

    pool = await his_gateway.slot_pool(schedules[0].schedule_id)
    assert len(pool.slots) == schedules[0].wechat_quota
    assert [s.sequence_no for s in pool.slots] == list(range(1, len(pool.slots) + 1))
    first = pool.slots[0]
    assert first.ends_at - first.starts_at == timedelta(minutes=15)
    assert first.starts_at.utcoffset() == timedelta(0)


async def test_verify_card_by_id_or_phone_and_refusals(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    name, id_number, phone, card_type = await card_holder(his_sim, "6100000003")
    by_id = await his_gateway.verify_card(
        card_no="6100000003", holder_name=name, id_or_phone_last4=id_number[-4:]
    )
    assert by_id.card_type is CardType(card_type) is CardType.provincial_insurance
    assert by_id.id_number_masked == id_number[:4] + "*" * 10 + id_number[-4:]
    assert by_id.phone_masked == phone[:3] + "****" + phone[-4:]
    assert by_id.holder_name_masked[0] == name[0]
    assert "*" in by_id.holder_name_masked
    by_phone = await his_gateway.verify_card(
        card_no="6100000003", holder_name=name, id_or_phone_last4=phone[-4:]
    )
    assert by_phone == by_id

    with pytest.raises(HisRejected) as wrong:
        await his_gateway.verify_card(
            card_no="6100000003", holder_name=name + "子", id_or_phone_last4=id_number[-4:]
        )
    assert wrong.value.code == "card_mismatch"
    with pytest.raises(HisRejected) as missing:
        await his_gateway.verify_card(
            card_no="6199999999", holder_name=name, id_or_phone_last4="1234"
        )
    assert missing.value.code == "card_not_found"


async def test_the_four_card_types_exist(his_gateway: HttpHisGateway, his_sim: Any) -> None:
    seen = set()
    for n in range(1, 5):
        card_no = f"61{n:08d}"
        name, id_number, _phone, _type = await card_holder(his_sim, card_no)
        verified = await his_gateway.verify_card(
            card_no=card_no, holder_name=name, id_or_phone_last4=id_number[-4:]
        )
        seen.add(verified.card_type)
    assert seen == set(CardType)


async def test_appointment_register_is_idempotent_and_slot_is_given_once(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    schedule = (await his_gateway.schedules(start=TODAY, end=TODAY))[0]
    first = await his_gateway.register_appointment(
        schedule_id=schedule.schedule_id, sequence_no=2, card_no="6100000001", booking_ref="BK-0001"
    )
    assert first.status is AppointmentStatus.booked
    again = await his_gateway.register_appointment(
        schedule_id=schedule.schedule_id, sequence_no=2, card_no="6100000001", booking_ref="BK-0001"
    )
    assert again == first  # the first result, nothing done twice
    pool = await his_gateway.slot_pool(schedule.schedule_id)
    assert [s.available for s in pool.slots if s.sequence_no == 2] == [False]

    before = await snapshot(his_sim)
    with pytest.raises(HisRejected) as taken:
        await his_gateway.register_appointment(
            schedule_id=schedule.schedule_id,
            sequence_no=2,
            card_no="6100000002",
            booking_ref="BK-0002",
        )
    assert taken.value.code == "slot_taken"
    after = await snapshot(his_sim)
    assert after["appointment"] == before["appointment"]
    assert after["taken_slots"] == before["taken_slots"] == 1

    cancelled = await his_gateway.cancel_appointment(
        appointment_id=first.appointment_id, reason="patient"
    )
    assert cancelled.status is AppointmentStatus.cancelled
    assert (
        await his_gateway.appointment(first.appointment_id)
    ).status is AppointmentStatus.cancelled
    with pytest.raises(HisRejected) as gone:
        await his_gateway.appointment("ANOSUCH")
    assert gone.value.code == "not_found"


async def test_pre_settle_settle_once_and_refund(his_gateway: HttpHisGateway, his_sim: Any) -> None:
    card = "6100000002"  # city insurance: 70% of the insurable amount
    orders = await his_gateway.unpaid_orders(card_no=card)
    assert len(orders) == 2
    assert all(o.status is OrderStatus.unpaid and o.items for o in orders)
    assert all(o.total_fen == sum(i.amount_fen for i in o.items) for o in orders)
    ids = [o.order_id for o in orders]
    pre = await his_gateway.pre_settle(card_no=card, order_ids=ids)
    assert pre.card_type is CardType.city_insurance
    assert pre.total_fen == sum(o.total_fen for o in orders)
    assert pre.insurance_fen + pre.self_pay_fen == pre.total_fen
    assert 0 < pre.insurance_fen < pre.total_fen

    with pytest.raises(HisRejected) as mismatch:
        await his_gateway.settle(
            card_no=card, order_ids=ids, payment_ref="PAYWRONG01", self_pay_fen=pre.self_pay_fen + 1
        )
    assert mismatch.value.code == "amount_mismatch"
    assert len(await his_gateway.unpaid_orders(card_no=card)) == 2

    settled = await his_gateway.settle(
        card_no=card, order_ids=ids, payment_ref="PAY0000001", self_pay_fen=pre.self_pay_fen
    )
    assert (settled.total_fen, settled.insurance_fen, settled.self_pay_fen) == (
        pre.total_fen,
        pre.insurance_fen,
        pre.self_pay_fen,
    )
    before = await snapshot(his_sim)
    repeat = await his_gateway.settle(
        card_no=card, order_ids=ids, payment_ref="PAY0000001", self_pay_fen=pre.self_pay_fen
    )
    assert repeat == settled
    assert await snapshot(his_sim) == before
    assert await his_gateway.unpaid_orders(card_no=card) == []

    with pytest.raises(HisRejected) as twice:
        await his_gateway.settle(
            card_no=card, order_ids=ids, payment_ref="PAY0000002", self_pay_fen=pre.self_pay_fen
        )
    assert twice.value.code == "order_not_unpaid"

    refundable = [
        i for i in await his_gateway.refundable_items(card_no=card) if i.payment_ref == "PAY0000001"
    ]
    assert sum(i.self_pay_fen for i in refundable) == pre.self_pay_fen
    refund = await his_gateway.refund(
        card_no=card, item_ids=[refundable[0].item_id], refund_ref="REF0000001"
    )
    assert refund.amount_fen == refundable[0].self_pay_fen
    with pytest.raises(HisRejected) as again:
        await his_gateway.refund(
            card_no=card, item_ids=[refundable[0].item_id], refund_ref="REF0000002"
        )
    assert again.value.code == "not_refundable"

    # The day's WeChat-channel money for reconciliation (01:00 UTC is 09:00 in Shanghai).
    day = await his_gateway.day_settlements(TODAY)
    assert [(r.kind, r.reference, r.amount_fen) for r in day] == [
        ("payment", "PAY0000001", pre.self_pay_fen),
        ("refund", "REF0000001", refundable[0].self_pay_fen),
    ]


async def test_window_payment_makes_wechat_settlement_fail(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    card = "6100000001"
    orders = await his_gateway.unpaid_orders(card_no=card)
    pre = await his_gateway.pre_settle(card_no=card, order_ids=[orders[0].order_id])
    assert pre.insurance_fen == 0
    assert pre.self_pay_fen == pre.total_fen
    async with client_for(his_sim) as staff:
        paid = await staff.post(
            "/operator/window-payments", json={"card_no": card, "order_ids": [orders[0].order_id]}
        )
        assert paid.status_code == 200
        executed = await staff.post(f"/operator/orders/{orders[0].order_id}/execute")
        assert executed.status_code == 200
    with pytest.raises(HisRejected) as refused:
        await his_gateway.settle(
            card_no=card,
            order_ids=[orders[0].order_id],
            payment_ref="PAYLATE001",
            self_pay_fen=pre.self_pay_fen,
        )
    assert refused.value.code == "order_not_unpaid"
    status = await his_gateway.execution_status(orders[0].order_id)
    assert status.state in {
        ExecutionState.dispensed,
        ExecutionState.sample_taken,
        ExecutionState.exam_done,
    }
    page = await his_gateway.events(after=None)
    assert [e.type for e in page.events] == ["window.paid", "order.executed"]


async def test_reports_three_years_lab_and_exam(his_gateway: HttpHisGateway) -> None:
    reports = await his_gateway.reports(card_no="6100000001", since=TODAY - timedelta(days=3 * 365))
    assert len(reports) == 6
    assert reports == sorted(reports, key=lambda r: r.reviewed_at, reverse=True)
    kinds = set()
    for summary in reports:
        report = await his_gateway.report(summary.report_id)
        kinds.add(type(report))
        if isinstance(report, LabReport):
            assert report.items
            assert report.reviewer
            assert report.specimen
            for item in report.items:
                assert item.reference_range
                assert item.result
                assert item.abnormal in set(AbnormalFlag)
        else:
            assert isinstance(report, ExamReport)
            assert report.modality in {"CT", "MR", "US", "DR"}
            assert report.findings
            assert report.impression
    assert kinds == {LabReport, ExamReport}
    recent = await his_gateway.reports(card_no="6100000001", since=TODAY - timedelta(days=30))
    assert all(
        r.reviewed_at >= datetime(2026, 10, 27, tzinfo=UTC) - timedelta(hours=8) for r in recent
    )


async def test_injected_error_is_retried_with_the_same_idempotency_key(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    schedule = (await his_gateway.schedules(start=TODAY, end=TODAY))[0]
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "error", "count": 2})
    appointment = await his_gateway.register_appointment(
        schedule_id=schedule.schedule_id,
        sequence_no=3,
        card_no="6100000001",
        booking_ref="BK-RETRY1",
    )
    assert appointment.status is AppointmentStatus.booked
    assert (await snapshot(his_sim))["appointment"] == 1


async def test_outage_is_unavailable_after_the_retries(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "error"})
    with pytest.raises(HisUnavailable) as down:
        await his_gateway.departments()
    assert down.value.code == "his_unavailable"
    assert down.value.retryable is True


async def test_refusal_fault_is_rejected_without_retry(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "refuse", "count": 1})
    with pytest.raises(HisRejected) as refused:
        await his_gateway.departments()
    assert refused.value.code == "refused"
    assert len(await his_gateway.departments()) == 20  # the one refusal was used up


async def test_timeout_is_unavailable(his_sim: Any, his_secret: str) -> None:
    async with client_for(his_sim) as http, client_for(his_sim) as staff:
        gateway = HttpHisGateway(
            base_url="http://his-sim",
            key_id="test-key",
            secret=his_secret,
            timeout_seconds=0.2,
            attempts=2,
            backoff_seconds=0.01,
            client=http,
        )
        await staff.put("/operator/faults", json={"mode": "timeout", "timeout_seconds": 5})
        with pytest.raises(HisUnavailable) as slow:
            await gateway.departments()
    assert slow.value.code == "timeout"


async def test_malformed_response_is_unavailable_never_a_crash(
    his_gateway: HttpHisGateway, his_sim: Any
) -> None:
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "malformed"})
    with pytest.raises(HisUnavailable) as bad:
        await his_gateway.doctors()
    assert bad.value.code == "malformed_response"


async def test_every_call_is_logged_without_personal_data(
    his_gateway: HttpHisGateway, his_sim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name, id_number, phone, _ = await card_holder(his_sim, "6100000001")
    with caplog.at_level(logging.INFO, logger="frontdesk.his.bridge"):
        await his_gateway.verify_card(
            card_no="6100000001", holder_name=name, id_or_phone_last4=phone[-4:]
        )
        with pytest.raises(HisRejected):
            await his_gateway.verify_card(
                card_no="6100000001", holder_name="王五", id_or_phone_last4=id_number[-4:]
            )
    records = [r for r in caplog.records if r.name == "frontdesk.his.bridge"]
    assert [getattr(r, "outcome", None) for r in records] == ["ok", "rejected:card_mismatch"]
    assert all(getattr(r, "operation", None) == "his.verify_card" for r in records)
    assert all(isinstance(getattr(r, "duration_ms", None), float) for r in records)
    text = " ".join(r.getMessage() for r in records)
    for secret in (name, id_number, phone, "6100000001"):
        assert secret not in text
