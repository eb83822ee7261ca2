"""What the demo HIS does: the hospital's side of each bridge operation and of each staff
action. Every change appends to the event feed in the same transaction.

Functions take an ``AsyncSession`` inside a transaction and return plain JSON-ready dicts
shaped like the protocol's objects. Refusals raise ``SimRejected`` with a protocol code.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.clock import now as clock_now
from frontdesk.core.masking import mask_id_number, mask_name, mask_phone
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim.seed import INSURANCE_PCT, TZ


class SimRejected(Exception):
    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8).upper()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --------------------------------------------------------------------------- events


async def append_event(session: AsyncSession, event_type: str, **data: Any) -> None:
    """Append an event. On PostgreSQL appends are serialised by a transaction lock so that
    cursors become visible in order: a poller that saw cursor N never later finds N-1."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(424242)"))
    await session.execute(
        m.event.insert().values(
            id=_new_id("E"), type=event_type, occurred_at=clock_now(), data=data
        )
    )


async def events_after(session: AsyncSession, *, after: int, limit: int) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(m.event)
            .where(m.event.c.cursor > after)
            .order_by(m.event.c.cursor)
            .limit(limit + 1)
        )
    ).all()
    page = rows[:limit]
    events = [
        {
            "event_id": r.id,
            "cursor": str(r.cursor),
            "type": r.type,
            "occurred_at": r.occurred_at.isoformat(),
            "data": r.data,
        }
        for r in page
    ]
    next_cursor = str(page[-1].cursor) if page else str(after)
    return {"events": events, "next_cursor": next_cursor, "has_more": len(rows) > limit}


# --------------------------------------------------------------------------- catalog


async def departments(session: AsyncSession) -> list[dict[str, Any]]:
    rows = (await session.execute(select(m.department).order_by(m.department.c.position))).all()
    return [{"code": r.code, "name": r.name, "intro": r.intro} for r in rows]


async def doctors(session: AsyncSession, department_code: str | None) -> list[dict[str, Any]]:
    stmt = select(m.doctor).order_by(m.doctor.c.code)
    if department_code:
        stmt = stmt.where(m.doctor.c.department_code == department_code)
    return [
        {
            "code": r.code,
            "name": r.name,
            "department_code": r.department_code,
            "title": r.title,
            "specialty": r.specialty,
            "intro": r.intro,
            "photo_url": r.photo_url,
        }
        for r in (await session.execute(stmt)).all()
    ]


def _schedule_dict(r: Any, quota: int) -> dict[str, Any]:
    return {
        "schedule_id": r.id,
        "doctor_code": r.doctor_code,
        "department_code": r.department_code,
        "on_date": r.on_date.isoformat(),
        "period": r.period,
        "level": r.level,
        "fee_fen": r.fee_fen,
        "status": r.status,
        "wechat_quota": quota,
    }


async def schedules(
    session: AsyncSession, *, start: date, end: date, department_code: str | None
) -> list[dict[str, Any]]:
    if end < start or (end - start).days > 31:
        raise SimRejected("invalid_request", "the range must be 0-31 days, start <= end")
    quota = (
        select(m.slot.c.schedule_id, func.count().label("n"))
        .group_by(m.slot.c.schedule_id)
        .subquery()
    )
    stmt = (
        select(m.schedule, func.coalesce(quota.c.n, 0).label("quota"))
        .outerjoin(quota, quota.c.schedule_id == m.schedule.c.id)
        .where(m.schedule.c.on_date >= start, m.schedule.c.on_date <= end)
        .order_by(m.schedule.c.on_date, m.schedule.c.period, m.schedule.c.id)
    )
    if department_code:
        stmt = stmt.where(m.schedule.c.department_code == department_code)
    return [_schedule_dict(r, r.quota) for r in (await session.execute(stmt)).all()]


async def slot_pool(session: AsyncSession, schedule_id: str) -> dict[str, Any]:
    sched = (
        await session.execute(select(m.schedule).where(m.schedule.c.id == schedule_id))
    ).one_or_none()
    if sched is None:
        raise SimRejected("not_found", "no such schedule", 404)
    rows = (
        await session.execute(
            select(m.slot).where(m.slot.c.schedule_id == schedule_id).order_by(m.slot.c.sequence_no)
        )
    ).all()
    open_ = sched.status == "open"
    return {
        "schedule_id": schedule_id,
        "version": sched.pool_version,
        "slots": [
            {
                "sequence_no": r.sequence_no,
                "starts_at": _iso(r.starts_at),
                "ends_at": _iso(r.ends_at),
                "available": open_ and r.appointment_id is None,
            }
            for r in rows
        ],
    }


# --------------------------------------------------------------------------- cards


async def _card(session: AsyncSession, card_no: str) -> Any:
    row = (
        await session.execute(
            select(m.card, m.patient.c.name, m.patient.c.id_number, m.patient.c.phone)
            .join(m.patient, m.patient.c.id == m.card.c.patient_id)
            .where(m.card.c.card_no == card_no)
        )
    ).one_or_none()
    if row is None:
        raise SimRejected("card_not_found", "no such card", 404)
    return row


async def change_card(
    session: AsyncSession, card_no: str, *, status: str, merged_into: str | None = None
) -> dict[str, Any]:
    """Operator: cancel a card (``voided``) or merge it into another (``merged``)."""
    await _card(session, card_no)
    if status == "merged":
        if not merged_into or merged_into == card_no:
            raise SimRejected("invalid_request", "merged_into must name another card")
        await _card(session, merged_into)
    already = (
        await session.execute(
            select(m.card_change.c.status).where(m.card_change.c.card_no == card_no)
        )
    ).scalar_one_or_none()
    if already is not None:
        raise SimRejected("card_already_changed", f"the card was already {already}", 409)
    await session.execute(
        m.card_change.insert().values(card_no=card_no, status=status, merged_into=merged_into)
    )
    data: dict[str, Any] = {"card_no": card_no}
    if merged_into:
        data["merged_into"] = merged_into
    await append_event(session, f"card.{status}", **data)
    return {"card_no": card_no, "status": status, "merged_into": merged_into}


async def verify_card(
    session: AsyncSession, *, card_no: str, holder_name: str, last4: str
) -> dict[str, Any]:
    changed = (
        await session.execute(
            select(m.card_change.c.status).where(m.card_change.c.card_no == card_no)
        )
    ).scalar_one_or_none()
    if changed is not None:
        raise SimRejected("card_not_found", f"the card was {changed}", 404)
    row = await _card(session, card_no)
    last4 = last4.upper()
    if row.name != holder_name.strip() or last4 not in {row.id_number[-4:].upper(), row.phone[-4:]}:
        # One code for either mistake: the HIS does not help guess which part was wrong.
        raise SimRejected("card_mismatch", "holder details do not match the card")
    return {
        "card_no": card_no,
        "card_type": row.card_type,
        "holder_name_masked": mask_name(row.name),
        "id_number_masked": mask_id_number(row.id_number),
        "phone_masked": mask_phone(row.phone),
        "sms_phone": row.phone,
    }


# --------------------------------------------------------------------------- appointments


def _appointment_dict(r: Any) -> dict[str, Any]:
    return {
        "appointment_id": r.id,
        "schedule_id": r.schedule_id,
        "sequence_no": r.sequence_no,
        "card_no": r.card_no,
        "booking_ref": r.booking_ref,
        "status": r.status,
        "registered_at": _iso(r.registered_at),
    }


async def appointment(session: AsyncSession, appointment_id: str) -> dict[str, Any]:
    row = (
        await session.execute(select(m.appointment).where(m.appointment.c.id == appointment_id))
    ).one_or_none()
    if row is None:
        raise SimRejected("not_found", "no such appointment", 404)
    return _appointment_dict(row)


async def register_appointment(
    session: AsyncSession, *, schedule_id: str, sequence_no: int, card_no: str, booking_ref: str
) -> dict[str, Any]:
    await _card(session, card_no)
    sched = (
        await session.execute(select(m.schedule).where(m.schedule.c.id == schedule_id))
    ).one_or_none()
    if sched is None:
        raise SimRejected("not_found", "no such schedule", 404)
    if sched.status != "open":
        raise SimRejected("schedule_suspended", "the clinic is suspended")
    existing = (
        await session.execute(
            select(m.appointment).where(m.appointment.c.booking_ref == booking_ref)
        )
    ).one_or_none()
    if existing is not None:
        raise SimRejected("booking_ref_used", "this booking reference was already used")
    appointment_id = _new_id("A")
    taken = await session.execute(
        update(m.slot)
        .where(
            m.slot.c.schedule_id == schedule_id,
            m.slot.c.sequence_no == sequence_no,
            m.slot.c.appointment_id.is_(None),
        )
        .values(appointment_id=appointment_id)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        exists = (
            await session.execute(
                select(m.slot.c.sequence_no).where(
                    m.slot.c.schedule_id == schedule_id, m.slot.c.sequence_no == sequence_no
                )
            )
        ).one_or_none()
        if exists is None:
            raise SimRejected("slot_not_found", "no such slot in the pool", 404)
        raise SimRejected("slot_taken", "the slot is already taken", 409)
    now = clock_now()
    await session.execute(
        m.appointment.insert().values(
            id=appointment_id,
            schedule_id=schedule_id,
            sequence_no=sequence_no,
            card_no=card_no,
            booking_ref=booking_ref,
            status="booked",
            registered_at=now,
        )
    )
    return await appointment(session, appointment_id)


async def cancel_appointment(session: AsyncSession, appointment_id: str) -> dict[str, Any]:
    current = await appointment(session, appointment_id)
    done = await session.execute(
        update(m.appointment)
        .where(m.appointment.c.id == appointment_id, m.appointment.c.status == "booked")
        .values(status="cancelled")
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SimRejected(
            "appointment_not_cancellable", f"the appointment is {current['status']}", 409
        )
    await session.execute(
        update(m.slot).where(m.slot.c.appointment_id == appointment_id).values(appointment_id=None)
    )
    return await appointment(session, appointment_id)


# --------------------------------------------------------------------------- orders


async def _items_of(session: AsyncSession, order_ids: Sequence[str]) -> dict[str, list[Any]]:
    rows = (
        await session.execute(
            select(m.order_item)
            .where(m.order_item.c.order_id.in_(list(order_ids)))
            .order_by(m.order_item.c.id)
        )
    ).all()
    by_order: dict[str, list[Any]] = {}
    for r in rows:
        by_order.setdefault(r.order_id, []).append(r)
    return by_order


def _order_dict(o: Any, items: list[Any]) -> dict[str, Any]:
    return {
        "order_id": o.id,
        "card_no": o.card_no,
        "kind": o.kind,
        "title": o.title,
        "ordering_department": o.ordering_department,
        "executing_department": o.executing_department,
        "doctor_name": o.doctor_name,
        "created_at": _iso(o.created_at),
        "status": o.status,
        "visit_no": o.visit_no or "",
        "total_fen": sum(i.quantity * i.unit_price_fen for i in items),
        "items": [
            {
                "item_id": i.id,
                "name": i.name,
                "quantity": i.quantity,
                "unit": i.unit,
                "unit_price_fen": i.unit_price_fen,
                "amount_fen": i.quantity * i.unit_price_fen,
                "status": i.status,
            }
            for i in items
        ],
    }


async def unpaid_orders(session: AsyncSession, card_no: str) -> list[dict[str, Any]]:
    await _card(session, card_no)
    orders = (
        await session.execute(
            select(m.order)
            .where(m.order.c.card_no == card_no, m.order.c.status == "unpaid")
            .order_by(m.order.c.created_at, m.order.c.id)
        )
    ).all()
    items = await _items_of(session, [o.id for o in orders])
    return [_order_dict(o, items.get(o.id, [])) for o in orders]


async def _unpaid_for(
    session: AsyncSession, card_no: str, order_ids: list[str]
) -> tuple[Any, list[Any], dict[str, list[Any]]]:
    card = await _card(session, card_no)
    if len(set(order_ids)) != len(order_ids):
        raise SimRejected("invalid_request", "order ids repeat")
    orders = (await session.execute(select(m.order).where(m.order.c.id.in_(order_ids)))).all()
    found = {o.id: o for o in orders}
    for order_id in order_ids:
        order = found.get(order_id)
        if order is None or order.card_no != card_no:
            raise SimRejected("not_found", f"no order {order_id} for this card", 404)
        if order.status != "unpaid":
            raise SimRejected("order_not_unpaid", f"order {order_id} is {order.status}", 409)
    return card, [found[i] for i in order_ids], await _items_of(session, order_ids)


def _shares(items: list[Any], card_type: str) -> list[tuple[Any, int, int]]:
    pct = INSURANCE_PCT[card_type]
    out = []
    for item in items:
        amount = item.quantity * item.unit_price_fen
        insurance = amount * item.eligible_pct * pct // 10_000
        out.append((item, insurance, amount - insurance))
    return out


async def pre_settle(
    session: AsyncSession, *, card_no: str, order_ids: list[str]
) -> dict[str, Any]:
    card, _orders, items = await _unpaid_for(session, card_no, order_ids)
    shares = _shares([i for oid in order_ids for i in items.get(oid, [])], card.card_type)
    insurance = sum(s[1] for s in shares)
    self_pay = sum(s[2] for s in shares)
    return {
        "card_no": card_no,
        "card_type": card.card_type,
        "order_ids": order_ids,
        "total_fen": insurance + self_pay,
        "insurance_fen": insurance,
        "self_pay_fen": self_pay,
    }


def _settlement_dict(r: Any) -> dict[str, Any]:
    return {
        "settlement_id": r.id,
        "payment_ref": r.payment_ref,
        "card_no": r.card_no,
        "order_ids": list(r.order_ids),
        "total_fen": r.total_fen,
        "insurance_fen": r.insurance_fen,
        "self_pay_fen": r.self_pay_fen,
        "channel": r.channel,
        "settled_at": _iso(r.settled_at),
    }


async def settle(
    session: AsyncSession,
    *,
    card_no: str,
    order_ids: list[str],
    payment_ref: str,
    self_pay_fen: int | None,
    channel: str,
) -> dict[str, Any]:
    """Settle unpaid orders once. ``self_pay_fen`` None: a window payment (staff took the
    amount the HIS computed)."""
    used = (
        await session.execute(select(m.settlement).where(m.settlement.c.payment_ref == payment_ref))
    ).one_or_none()
    if used is not None:
        raise SimRejected("already_settled", "this payment reference was already settled", 409)
    card, _orders, items = await _unpaid_for(session, card_no, order_ids)
    shares = _shares([i for oid in order_ids for i in items.get(oid, [])], card.card_type)
    insurance = sum(s[1] for s in shares)
    self_pay = sum(s[2] for s in shares)
    if self_pay_fen is not None and self_pay_fen != self_pay:
        raise SimRejected(
            "amount_mismatch", f"the self-pay share is {self_pay} fen, not {self_pay_fen}"
        )
    settlement_id = _new_id("T")
    for order_id in order_ids:
        # Guarded: a concurrent settlement of the same order loses here, not later.
        won = await session.execute(
            update(m.order)
            .where(m.order.c.id == order_id, m.order.c.status == "unpaid")
            .values(status="paid", settlement_id=settlement_id)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise SimRejected("order_not_unpaid", f"order {order_id} was just paid", 409)
    for item, ins, own in shares:
        await session.execute(
            update(m.order_item)
            .where(m.order_item.c.id == item.id)
            .values(status="paid", insurance_fen=ins, self_pay_fen=own)
        )
    await session.execute(
        m.settlement.insert().values(
            id=settlement_id,
            payment_ref=payment_ref,
            card_no=card_no,
            order_ids=order_ids,
            total_fen=insurance + self_pay,
            insurance_fen=insurance,
            self_pay_fen=self_pay,
            channel=channel,
            settled_at=clock_now(),
        )
    )
    row = (
        await session.execute(select(m.settlement).where(m.settlement.c.id == settlement_id))
    ).one()
    return _settlement_dict(row)


async def settlement_by_ref(session: AsyncSession, payment_ref: str) -> dict[str, Any]:
    row = (
        await session.execute(select(m.settlement).where(m.settlement.c.payment_ref == payment_ref))
    ).one_or_none()
    if row is None:
        raise SimRejected("not_found", "no settlement for this payment reference", 404)
    return _settlement_dict(row)


async def refundable_items(session: AsyncSession, card_no: str) -> list[dict[str, Any]]:
    await _card(session, card_no)
    rows = (
        await session.execute(
            select(m.order_item, m.order.c.settlement_id, m.settlement.c.payment_ref)
            .join(m.order, m.order.c.id == m.order_item.c.order_id)
            .join(m.settlement, m.settlement.c.id == m.order.c.settlement_id)
            .where(
                m.order.c.card_no == card_no,
                m.order_item.c.status == "paid",
                m.order.c.execution == "pending",
            )
            .order_by(m.order_item.c.id)
        )
    ).all()
    return [
        {
            "item_id": r.id,
            "order_id": r.order_id,
            "name": r.name,
            "quantity": r.quantity,
            "amount_fen": r.quantity * r.unit_price_fen,
            "self_pay_fen": r.self_pay_fen or 0,
            "settlement_id": r.settlement_id,
            "payment_ref": r.payment_ref,
        }
        for r in rows
    ]


def _refund_dict(r: Any) -> dict[str, Any]:
    return {
        "refund_id": r.id,
        "refund_ref": r.refund_ref,
        "card_no": r.card_no,
        "item_ids": list(r.item_ids),
        "amount_fen": r.amount_fen,
        "channel": r.channel,
        "refunded_at": _iso(r.refunded_at),
    }


async def refund(
    session: AsyncSession, *, card_no: str, item_ids: list[str], refund_ref: str, channel: str
) -> dict[str, Any]:
    used = (
        await session.execute(select(m.refund).where(m.refund.c.refund_ref == refund_ref))
    ).one_or_none()
    if used is not None:
        raise SimRejected("refund_ref_used", "this refund reference was already used", 409)
    if len(set(item_ids)) != len(item_ids):
        raise SimRejected("invalid_request", "item ids repeat")
    refundable = {r["item_id"]: r for r in await refundable_items(session, card_no)}
    missing = [i for i in item_ids if i not in refundable]
    if missing:
        raise SimRejected("not_refundable", f"not refundable: {', '.join(missing)}", 409)
    refund_id = _new_id("F")
    amount = 0
    for item_id in item_ids:
        won = await session.execute(
            update(m.order_item)
            .where(m.order_item.c.id == item_id, m.order_item.c.status == "paid")
            .values(status="refunded", refund_id=refund_id)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise SimRejected("not_refundable", f"item {item_id} was just refunded", 409)
        amount += refundable[item_id]["self_pay_fen"]
    # An order whose every item went back is refunded as a whole.
    for order_id in {refundable[i]["order_id"] for i in item_ids}:
        left = (
            await session.execute(
                select(func.count())
                .select_from(m.order_item)
                .where(m.order_item.c.order_id == order_id, m.order_item.c.status != "refunded")
            )
        ).scalar_one()
        if left == 0:
            await session.execute(
                update(m.order).where(m.order.c.id == order_id).values(status="refunded")
            )
    await session.execute(
        m.refund.insert().values(
            id=refund_id,
            refund_ref=refund_ref,
            card_no=card_no,
            item_ids=item_ids,
            amount_fen=amount,
            channel=channel,
            refunded_at=clock_now(),
        )
    )
    row = (await session.execute(select(m.refund).where(m.refund.c.id == refund_id))).one()
    return _refund_dict(row)


_EXECUTED = {"prescription": "dispensed", "lab": "sample_taken", "exam": "exam_done"}


async def execution_status(session: AsyncSession, order_id: str) -> dict[str, Any]:
    row = (await session.execute(select(m.order).where(m.order.c.id == order_id))).one_or_none()
    if row is None:
        raise SimRejected("not_found", "no such order", 404)
    state = _EXECUTED[row.kind] if row.execution == "done" else "pending"
    return {"order_id": order_id, "state": state, "executed_at": _iso(row.executed_at)}


# --------------------------------------------------------------------------- reports


async def reports(session: AsyncSession, *, card_no: str, since: date) -> list[dict[str, Any]]:
    await _card(session, card_no)
    since_at = datetime.combine(since, datetime.min.time(), tzinfo=TZ)
    rows = (
        await session.execute(
            select(
                m.report.c.id,
                m.report.c.card_no,
                m.report.c.kind,
                m.report.c.title,
                m.report.c.department,
                m.report.c.reviewed_at,
                m.report.c.has_abnormal,
            )
            .where(
                m.report.c.card_no == card_no,
                m.report.c.reviewed.is_(True),
                m.report.c.reviewed_at >= since_at,
            )
            .order_by(m.report.c.reviewed_at.desc(), m.report.c.id)
        )
    ).all()
    return [
        {
            "report_id": r.id,
            "card_no": r.card_no,
            "kind": r.kind,
            "title": r.title,
            "department": r.department,
            "reviewed_at": _iso(r.reviewed_at),
            "has_abnormal": r.has_abnormal,
        }
        for r in rows
    ]


async def report_bodies(session: AsyncSession, report_ids: list[str]) -> list[dict[str, Any]]:
    """Several reviewed reports at once, in the order asked, with one query; unknown or
    unreviewed ids are left out."""
    wanted = list(dict.fromkeys(report_ids))
    rows = (
        await session.execute(
            select(m.report).where(m.report.c.id.in_(wanted), m.report.c.reviewed.is_(True))
        )
    ).all()
    by_id = {r.id: r for r in rows}
    return [_report_envelope(by_id[i]) for i in wanted if i in by_id]


async def report(session: AsyncSession, report_id: str) -> dict[str, Any]:
    r = (
        await session.execute(
            select(m.report).where(m.report.c.id == report_id, m.report.c.reviewed.is_(True))
        )
    ).one_or_none()
    if r is None:
        raise SimRejected("not_found", "no such reviewed report", 404)
    return _report_envelope(r)


def _report_envelope(r: Any) -> dict[str, Any]:
    body = dict(r.body)
    common = {
        "report_id": r.id,
        "card_no": r.card_no,
        "title": r.title,
        "requesting_department": r.department,
        "reported_at": _iso(r.reported_at),
        "reviewed_at": _iso(r.reviewed_at),
    }
    if r.kind == "lab":
        lab = {
            **common,
            "specimen": body["specimen"],
            "clinical_diagnosis": body["clinical_diagnosis"],
            "tester": body["tester"],
            "reviewer": body["reviewer"],
            "sampled_at": body["sampled_at"],
            # The demo LIS receives each specimen 40 minutes after it was taken.
            "received_at": _iso(datetime.fromisoformat(body["sampled_at"]) + timedelta(minutes=40)),
            "items": body["items"],
        }
        return {"kind": "lab", "lab": lab, "exam": None}
    exam = {
        **common,
        **{
            k: body[k]
            for k in (
                "modality",
                "body_part",
                "method",
                "findings",
                "impression",
                "reporting_doctor",
                "reviewing_doctor",
                "examined_at",
            )
        },
    }
    return {"kind": "exam", "lab": None, "exam": exam}


# --------------------------------------------------------------------------- settlements


async def day_settlements(session: AsyncSession, on_date: date) -> list[dict[str, Any]]:
    start = datetime.combine(on_date, datetime.min.time(), tzinfo=TZ)
    end = start + timedelta(days=1)
    pays = (
        await session.execute(
            select(m.settlement)
            .where(
                m.settlement.c.channel == "wechat",
                m.settlement.c.settled_at >= start,
                m.settlement.c.settled_at < end,
            )
            .order_by(m.settlement.c.settled_at)
        )
    ).all()
    refunds = (
        await session.execute(
            select(m.refund)
            .where(
                m.refund.c.channel == "wechat",
                m.refund.c.refunded_at >= start,
                m.refund.c.refunded_at < end,
            )
            .order_by(m.refund.c.refunded_at)
        )
    ).all()
    out = [
        {
            "kind": "payment",
            "reference": p.payment_ref,
            "his_id": p.id,
            "card_no": p.card_no,
            "amount_fen": p.self_pay_fen,
            "at": _iso(p.settled_at),
        }
        for p in pays
    ]
    out += [
        {
            "kind": "refund",
            "reference": f.refund_ref,
            "his_id": f.id,
            "card_no": f.card_no,
            "amount_fen": f.amount_fen,
            "at": _iso(f.refunded_at),
        }
        for f in refunds
    ]
    return sorted(out, key=lambda row: (row["at"], row["kind"], row["his_id"]))


# --------------------------------------------------------------------------- staff actions


async def write_order(
    session: AsyncSession,
    *,
    card_no: str,
    kind: str,
    title: str,
    ordering_department: str,
    executing_department: str,
    doctor_name: str,
    items: list[dict[str, Any]],
    visit_no: str = "",
) -> dict[str, Any]:
    await _card(session, card_no)
    order_id = _new_id("O")
    if not visit_no:
        # The doctor writes into the card's visit of today if it has one, else a new visit.
        today_start = datetime.combine(clock_now().astimezone(TZ).date(), time(0), tzinfo=TZ)
        visit_no = (
            await session.execute(
                select(m.order.c.visit_no)
                .where(
                    m.order.c.card_no == card_no,
                    m.order.c.created_at >= today_start,
                    m.order.c.visit_no != "",
                )
                .order_by(m.order.c.created_at.desc(), m.order.c.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none() or _new_id("V")
    await session.execute(
        m.order.insert().values(
            id=order_id,
            card_no=card_no,
            kind=kind,
            title=title,
            ordering_department=ordering_department,
            executing_department=executing_department,
            doctor_name=doctor_name,
            created_at=clock_now(),
            status="unpaid",
            settlement_id=None,
            execution="pending",
            executed_at=None,
            visit_no=visit_no,
        )
    )
    for item in items:
        await session.execute(
            m.order_item.insert().values(
                id=_new_id("I"),
                order_id=order_id,
                name=item["name"],
                quantity=item["quantity"],
                unit=item.get("unit", "次"),
                unit_price_fen=item["unit_price_fen"],
                eligible_pct=item.get("eligible_pct", 100),
                status="billed",
            )
        )
    await append_event(session, "order.created", order_id=order_id, card_no=card_no)
    items_by = await _items_of(session, [order_id])
    row = (await session.execute(select(m.order).where(m.order.c.id == order_id))).one()
    return _order_dict(row, items_by.get(order_id, []))


async def execute_order(session: AsyncSession, order_id: str) -> dict[str, Any]:
    done = await session.execute(
        update(m.order)
        .where(
            m.order.c.id == order_id, m.order.c.status == "paid", m.order.c.execution == "pending"
        )
        .values(execution="done", executed_at=clock_now())
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SimRejected("not_executable", "only a paid, pending order can be executed", 409)
    card_no = (
        await session.execute(select(m.order.c.card_no).where(m.order.c.id == order_id))
    ).scalar_one()
    await append_event(session, "order.executed", order_id=order_id, card_no=card_no)
    return await execution_status(session, order_id)


async def add_report(
    session: AsyncSession, *, card_no: str, kind: str, seed_no: int
) -> dict[str, Any]:
    """A new unreviewed report for the card (lab or exam), generated like the seed's."""
    import random

    from frontdesk.sims.his_sim.seed import iter_reports

    await _card(session, card_no)
    docs = [{"department_name": "肝病科"}]
    rng = random.Random(seed_no)
    today = clock_now().astimezone(TZ).date()
    for row in iter_reports(rng, card_no, 50, today, docs, 0):
        if row["kind"] == kind:
            now = clock_now()
            row.update(id=_new_id("R"), reviewed=False, reported_at=now, reviewed_at=None)
            await session.execute(m.report.insert().values(**row))
            return {"report_id": row["id"], "kind": kind, "title": row["title"]}
    raise SimRejected("invalid_request", "could not make a report of that kind")


async def review_report(session: AsyncSession, report_id: str) -> dict[str, Any]:
    done = await session.execute(
        update(m.report)
        .where(m.report.c.id == report_id, m.report.c.reviewed.is_(False))
        .values(reviewed=True, reviewed_at=clock_now())
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SimRejected("not_reviewable", "no such report waiting for review", 409)
    r = (
        await session.execute(
            select(m.report.c.card_no, m.report.c.kind).where(m.report.c.id == report_id)
        )
    ).one()
    await append_event(
        session, "report.reviewed", report_id=report_id, card_no=r.card_no, kind=r.kind
    )
    return await report(session, report_id)


async def suspend_by_request(
    session: AsyncSession, schedule_id: str, *, reason: str, request_ref: str
) -> dict[str, Any]:
    """The bridge write: the front server's scheduling office suspends a session. Refused
    for an unknown, already suspended, past or started session (patients already seen)."""
    sched = (
        await session.execute(select(m.schedule).where(m.schedule.c.id == schedule_id))
    ).one_or_none()
    if sched is None:
        raise SimRejected("not_found", "no such schedule", 404)
    if not reason.strip():
        raise SimRejected("invalid_request", "a reason is required")
    if sched.status != "open":
        raise SimRejected("schedule_suspended", "the session is already suspended")
    if sched.on_date < clock_now().astimezone(TZ).date():
        raise SimRejected("schedule_past", "the session is over", 409)
    seen = (
        await session.execute(
            select(func.count()).where(
                m.appointment.c.schedule_id == schedule_id,
                m.appointment.c.status == "checked_in",
            )
        )
    ).scalar_one()
    if seen:
        raise SimRejected("schedule_started", "patients of this session were checked in", 409)
    await suspend_schedule(session, schedule_id, reason.strip(), request_ref=request_ref)
    quota = (
        await session.execute(select(func.count()).where(m.slot.c.schedule_id == schedule_id))
    ).scalar_one()
    fresh = (await session.execute(select(m.schedule).where(m.schedule.c.id == schedule_id))).one()
    return _schedule_dict(fresh, int(quota))


async def suspend_schedule(
    session: AsyncSession, schedule_id: str, reason: str, *, request_ref: str | None = None
) -> dict[str, Any]:
    done = await session.execute(
        update(m.schedule)
        .where(m.schedule.c.id == schedule_id, m.schedule.c.status == "open")
        .values(status="suspended", pool_version=m.schedule.c.pool_version + 1)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SimRejected("not_suspendable", "no such open schedule", 409)
    cancelled = (
        await session.execute(
            update(m.appointment)
            .where(m.appointment.c.schedule_id == schedule_id, m.appointment.c.status == "booked")
            .values(status="cancelled_by_suspension")
            .returning(m.appointment.c.id)
        )
    ).scalars()
    ids = sorted(cancelled)
    await append_event(
        session,
        "schedule.suspended",
        schedule_id=schedule_id,
        cancelled_appointments=len(ids),
        # Optional in the protocol: an operator who gives none sends none.
        **({"reason": reason.strip()} if reason.strip() else {}),
        # Set when the suspension came through the bridge (the front server's own request,
        # so it can recognise the echo); absent when entered at the HIS.
        **({"request_ref": request_ref} if request_ref else {}),
    )
    return {"schedule_id": schedule_id, "cancelled_appointment_ids": ids}


async def add_slots(session: AsyncSession, schedule_id: str, count: int) -> dict[str, Any]:
    last = (
        await session.execute(
            select(m.slot)
            .where(m.slot.c.schedule_id == schedule_id)
            .order_by(m.slot.c.sequence_no.desc())
            .limit(1)
        )
    ).one_or_none()
    if last is None:
        raise SimRejected("not_found", "no such schedule", 404)
    for n in range(1, count + 1):
        starts = last.ends_at + timedelta(minutes=15 * (n - 1))
        await session.execute(
            m.slot.insert().values(
                schedule_id=schedule_id,
                sequence_no=last.sequence_no + n,
                starts_at=starts,
                ends_at=starts + timedelta(minutes=15),
                appointment_id=None,
            )
        )
    await session.execute(
        update(m.schedule)
        .where(m.schedule.c.id == schedule_id)
        .values(pool_version=m.schedule.c.pool_version + 1)
    )
    await append_event(session, "slot_pool.changed", schedule_id=schedule_id)
    return await slot_pool(session, schedule_id)


async def check_in(session: AsyncSession, appointment_id: str) -> dict[str, Any]:
    done = await session.execute(
        update(m.appointment)
        .where(m.appointment.c.id == appointment_id, m.appointment.c.status == "booked")
        .values(status="checked_in")
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SimRejected("not_checkable", "no such booked appointment", 409)
    result = await appointment(session, appointment_id)
    await append_event(
        session,
        "appointment.checked_in",
        appointment_id=appointment_id,
        booking_ref=result["booking_ref"],
        card_no=result["card_no"],
    )
    return result


async def end_of_day(session: AsyncSession, on_date: date) -> dict[str, Any]:
    """Every appointment of ``on_date`` still booked becomes a no-show (违约)."""
    rows = (
        await session.execute(
            select(m.appointment.c.id, m.appointment.c.booking_ref, m.appointment.c.card_no)
            .join(m.schedule, m.schedule.c.id == m.appointment.c.schedule_id)
            .where(m.schedule.c.on_date == on_date, m.appointment.c.status == "booked")
            .order_by(m.appointment.c.id)
        )
    ).all()
    no_shows = []
    for r in rows:
        done = await session.execute(
            update(m.appointment)
            .where(and_(m.appointment.c.id == r.id, m.appointment.c.status == "booked"))
            .values(status="no_show")
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            no_shows.append(r.id)
            await append_event(
                session,
                "appointment.no_show",
                appointment_id=r.id,
                booking_ref=r.booking_ref,
                card_no=r.card_no,
            )
    return {"on_date": on_date.isoformat(), "no_show_appointment_ids": no_shows}


async def window_payment(
    session: AsyncSession, *, card_no: str, order_ids: list[str]
) -> dict[str, Any]:
    result = await settle(
        session,
        card_no=card_no,
        order_ids=order_ids,
        payment_ref=_new_id("WIN"),
        self_pay_fen=None,
        channel="window",
    )
    await append_event(
        session,
        "window.paid",
        settlement_id=result["settlement_id"],
        card_no=card_no,
        order_ids=",".join(order_ids),
        self_pay_fen=result["self_pay_fen"],
    )
    return result


async def window_refund(
    session: AsyncSession, *, card_no: str, item_ids: list[str]
) -> dict[str, Any]:
    result = await refund(
        session, card_no=card_no, item_ids=item_ids, refund_ref=_new_id("WRF"), channel="window"
    )
    await append_event(
        session,
        "window.refunded",
        refund_id=result["refund_id"],
        card_no=card_no,
        item_ids=",".join(item_ids),
        amount_fen=result["amount_fen"],
    )
    return result


async def prune_nonces(session: AsyncSession, *, older_than: datetime) -> None:
    await session.execute(m.nonce.delete().where(m.nonce.c.seen_at < older_than))
