"""Booking rules: take a slot once, cancel until the deadline, no-shows and credit, clinic
suspension, and the idempotency of booking requests.

Every function takes the session first and never commits. Patient-facing functions take the
caller's ``PatientScope`` (from ``accounts.service.scope_for``): a booking or card outside it
is "not found". A refusal raises a ``DomainError`` and leaves nothing behind: the writes of
``book`` and ``cancel`` run in a savepoint rolled back on refusal.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, NoReturn

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.schemas import BoundCard, PatientScope
from frontdesk.billing import service as billing
from frontdesk.billing.schemas import PlacedOrder
from frontdesk.booking import errors
from frontdesk.booking import repository as repo
from frontdesk.booking.models import (
    BOOKED,
    CANCELLED,
    CANCELLED_BY_HOSPITAL,
    CHECKED_IN,
    FEE_PAID,
    FEE_PENDING,
    FEE_REFUNDED,
    HELD,
    HIS_CANCELLED,
    HIS_PENDING,
    HIS_REFUSED,
    HIS_REGISTERED,
    HIS_SKIPPED,
    HOLD_EXPIRED,
    NO_SHOW,
    REFUSED_BY_HIS,
    SUSPENSION_DONE,
    SUSPENSION_PENDING,
    SUSPENSION_REFUSED,
    Booking,
    BookingRequest,
    CreditBlock,
    ScheduleSuspension,
)
from frontdesk.booking.schemas import (
    BlockView,
    BookingPolicy,
    BookingView,
    CreditStatus,
    SuspensionView,
)
from frontdesk.catalog import service as catalog
from frontdesk.catalog.schemas import SlotForBooking
from frontdesk.core import audit, outbox, ratelimit
from frontdesk.core.clock import get_clock
from frontdesk.core.errors import DomainError, TooManyRequests
from frontdesk.core.i18n import translate
from frontdesk.core.money import format_fen
from frontdesk.core.sql import pg_connection
from frontdesk.wechat.oa.templates import queue_template

log = logging.getLogger("frontdesk.booking")

REGISTER_JOB = "booking.register"
CANCEL_IN_HIS_JOB = "booking.cancel_in_his"
EXPIRE_HOLD_JOB = "booking.expire_hold"  # at_booking: release an unpaid hold at its end
FEE_PAID_JOB = billing.REGISTRATION_PAID_JOB  # billing queues it when a fee is paid
HOLDING = (BOOKED, CHECKED_IN, NO_SHOW)  # statuses that keep the card's day for the doctor
IN_FLIGHT_STALE = timedelta(seconds=30)


# --------------------------------------------------------------------------- time rules


def release_at(on_date: date, policy: BookingPolicy) -> datetime:
    """When booking opens for a visit day: N days before, at the release time (local)."""
    return get_clock().at_local(on_date - timedelta(days=policy.release_days), policy.release_time)


def cancel_deadline(on_date: date, policy: BookingPolicy) -> datetime:
    """The last instant a patient may cancel: the set hour of the day before the visit
    (24 = the end of that day, i.e. midnight when the visit day starts)."""
    clock = get_clock()
    if policy.cancel_deadline_hour >= 24:
        return clock.start_of_day(on_date)
    return clock.at_local(on_date - timedelta(days=1), time(policy.cancel_deadline_hour))


def _day_key(card_id: int, doctor_code: str, on_date: date) -> str:
    return f"{card_id}:{doctor_code}:{on_date.isoformat()}"


def _new_ref() -> str:
    """The patient's booking reference: 20 characters, so it survives WeChat cutting every
    template value at 20 (72 random bits; the column is unique)."""
    return "WX" + secrets.token_hex(9).upper()


# --------------------------------------------------------------------------- views


def _view(b: Booking, policy: BookingPolicy, now: datetime) -> BookingView:
    deadline = cancel_deadline(b.on_date, policy)
    reason: str | None = None
    if b.status not in (BOOKED, HELD):
        reason = "booking_not_cancellable"
    elif now >= deadline:
        reason = "booking_cancel_deadline_passed"
    return BookingView(
        booking_id=b.id,
        booking_ref=b.booking_ref,
        card_id=b.card_id,
        card_no=b.card_no,
        schedule_id=b.schedule_id,
        doctor_code=b.doctor_code,
        department_code=b.department_code,
        on_date=b.on_date,
        period=b.period,
        level=b.level,
        fee_fen=b.fee_fen,
        sequence_no=b.sequence_no,
        starts_at=b.starts_at,
        ends_at=b.ends_at,
        status=b.status,
        his_state=b.his_state,
        created_at=b.created_at,
        cancel_deadline_at=deadline,
        cancellable=reason is None,
        not_cancellable_reason=reason,
        hold_expires_at=b.hold_expires_at,
        fee_payment_id=b.fee_payment_id,
        fee_state=b.fee_state,
    )


async def bookings_of(
    session: AsyncSession, *, scope: PatientScope, policy: BookingPolicy, now: datetime
) -> list[BookingView]:
    """Every booking of the caller's bound cards, newest visit first."""
    if not scope.card_ids:
        return []
    rows = (
        await session.execute(
            select(Booking)
            .where(Booking.card_id.in_(sorted(scope.card_ids)))
            .order_by(Booking.on_date.desc(), Booking.starts_at.desc(), Booking.id.desc())
            .limit(200)
        )
    ).scalars()
    return [_view(b, policy, now) for b in rows]


async def _owned(session: AsyncSession, *, scope: PatientScope, booking_id: int) -> Booking:
    row = (
        await session.execute(
            select(Booking).where(
                Booking.id == booking_id, Booking.card_id.in_(sorted(scope.card_ids) or [-1])
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise errors.BookingNotFound
    return row


async def booking_of(
    session: AsyncSession,
    *,
    scope: PatientScope,
    booking_id: int,
    policy: BookingPolicy,
    now: datetime,
) -> BookingView:
    return _view(await _owned(session, scope=scope, booking_id=booking_id), policy, now)


# --------------------------------------------------------------------------- credit


async def credit_status(
    session: AsyncSession, *, card_id: int, policy: BookingPolicy, now: datetime
) -> CreditStatus:
    """The no-shows that count for a card and any block in force.

    No-shows count within the window and after the last block began (a block "uses up" the
    no-shows that caused it, so lifting it does not re-block at once)."""
    conn = await session.connection()
    last_block = (await conn.execute(repo.LAST_BLOCK, {"card_id": card_id})).one_or_none()
    since_day = get_clock().local_date_of(now) - timedelta(days=policy.no_show_window_days)
    if last_block is None:
        found = await conn.execute(repo.NO_SHOWS, {"card_id": card_id, "since": since_day})
    else:
        found = await conn.execute(
            repo.NO_SHOWS_AFTER,
            {"card_id": card_id, "since": since_day, "after": last_block.blocked_at},
        )
    count = int(found.scalar_one())
    in_force = (
        last_block is not None
        and last_block.lifted_at is None
        and last_block.blocked_until_at > now
    )
    return CreditStatus(
        card_id=card_id,
        no_shows=count,
        limit=policy.no_show_limit,
        window_days=policy.no_show_window_days,
        block_days=policy.block_days,
        blocked_until_at=last_block.blocked_until_at if in_force and last_block else None,
        block_id=last_block.id if in_force and last_block else None,
    )


async def _apply_credit_rule(
    session: AsyncSession, *, card_id: int, card_no: str, policy: BookingPolicy, now: datetime
) -> CreditBlock | None:
    status = await credit_status(session, card_id=card_id, policy=policy, now=now)
    if status.blocked or status.no_shows < policy.no_show_limit:
        return None
    block = CreditBlock(
        card_id=card_id,
        card_no=card_no,
        no_shows=status.no_shows,
        blocked_at=now,
        blocked_until_at=now + timedelta(days=policy.block_days),
    )
    session.add(block)
    await session.flush()
    await audit.record(
        session,
        at=now,
        actor="system",
        action="booking.block",
        record_type="credit_block",
        record_id=block.id,
        card_id=card_id,
        detail={"no_shows": status.no_shows},
    )
    return block


async def lift_block(
    session: AsyncSession, *, block_id: int, staff: str, reason: str, now: datetime
) -> BlockView:
    """Staff lift a block before its end; the reason is required and audited."""
    reason = reason.strip()
    if not reason or len(reason) > 500:
        raise errors.LiftReasonRequired
    done = await session.execute(
        update(CreditBlock)
        .where(CreditBlock.id == block_id, CreditBlock.lifted_at.is_(None))
        .values(lifted_at=now, lifted_by=staff, lift_reason=reason)
        .returning(CreditBlock.card_id)
    )
    card_id = done.scalar_one_or_none()
    if card_id is None:
        raise errors.BlockNotFound
    await audit.record(
        session,
        at=now,
        actor=staff,
        action="booking.block_lifted",
        record_type="credit_block",
        record_id=block_id,
        card_id=card_id,
        detail={"reason": reason},
    )
    row = (
        await session.execute(select(CreditBlock).where(CreditBlock.id == block_id))
    ).scalar_one()
    return _block_view(row)


def mask_card_no(card_no: str) -> str:
    return "*" * max(0, len(card_no) - 4) + card_no[-4:]


def _block_view(b: CreditBlock) -> BlockView:
    return BlockView(
        block_id=b.id,
        card_id=b.card_id,
        card_no_masked=mask_card_no(b.card_no),
        no_shows=b.no_shows,
        blocked_at=b.blocked_at,
        blocked_until_at=b.blocked_until_at,
        lifted_at=b.lifted_at,
        lifted_by=b.lifted_by,
        lift_reason=b.lift_reason,
    )


async def blocks(session: AsyncSession, *, now: datetime, limit: int = 200) -> list[BlockView]:
    """Blocks in force (for the scheduling office), newest first."""
    rows = (
        await session.execute(
            select(CreditBlock)
            .where(CreditBlock.lifted_at.is_(None), CreditBlock.blocked_until_at > now)
            .order_by(CreditBlock.blocked_at.desc())
            .limit(limit)
        )
    ).scalars()
    return [_block_view(b) for b in rows]


# --------------------------------------------------------------------------- idempotency


async def claim_request(
    session: AsyncSession, *, openid: str, key: str, request_hash: str, now: datetime
) -> int | None:
    """Claim an idempotency key before booking, in the booking's own transaction.

    Returns the booking id if this key already booked (the caller answers with it), or
    None if the caller now holds the key and should book. Raises ``IdempotencyKeyReused``
    (422) for the same key with another body and ``RequestInFlight`` (409) while another
    request holds a fresh claim. On PostgreSQL a concurrent request with the same key waits
    at the INSERT until the first commits, then finds its outcome. A claim left behind by
    a crashed request is taken over once stale."""
    conn = await session.connection()
    inserted = await conn.execute(
        repo.CLAIM[conn.dialect.name],
        {
            "openid": openid,
            "idempotency_key": key,
            "request_hash": request_hash,
            "state": "in_flight",
            "created_at": now,
            "updated_at": now,
        },
    )
    if int(getattr(inserted, "rowcount", 0)) == 1:
        return None
    return await _claimed_before(
        session, openid=openid, key=key, request_hash=request_hash, now=now
    )


async def _claimed_before(
    session: AsyncSession, *, openid: str, key: str, request_hash: str, now: datetime
) -> int | None:
    """The key was there already: its booking, or a refusal, or (stale) take it over."""
    conn = await session.connection()
    row = (await conn.execute(repo.REQUEST_BY_KEY, {"openid": openid, "key": key})).one()
    if row.request_hash != request_hash:
        raise errors.IdempotencyKeyReused
    if row.state == "done" and row.booking_id is not None:
        return int(row.booking_id)
    if row.state == "in_flight" and now - row.updated_at < IN_FLIGHT_STALE:
        raise errors.RequestInFlight
    taken = await session.execute(
        update(BookingRequest)
        .where(
            BookingRequest.openid == openid,
            BookingRequest.idempotency_key == key,
            BookingRequest.state == row.state,
            BookingRequest.updated_at == row.updated_at,
        )
        .values(state="in_flight", updated_at=now)
    )
    if int(getattr(taken, "rowcount", 0)) != 1:
        raise errors.RequestInFlight
    return None


async def replayed_booking(session: AsyncSession, *, openid: str, key: str) -> int | None:
    """The booking this key already made, if any (one primary-key read, no lock)."""
    conn = await session.connection()
    row = (await conn.execute(repo.REQUEST_BY_KEY, {"openid": openid, "key": key})).first()
    if row is None or row.state != "done" or row.booking_id is None:
        return None
    return int(row.booking_id)


async def finish_request(
    session: AsyncSession, *, openid: str, key: str, booking_id: int, now: datetime
) -> None:
    """Record the booking under the key, in the booking's own transaction."""
    conn = await session.connection()
    await conn.execute(
        repo.FINISH,
        {"b_openid": openid, "b_key": key, "b_booking_id": booking_id, "b_now": now},
    )


async def drop_request(session: AsyncSession, *, openid: str, key: str) -> None:
    """Forget the claim of a refused booking (in the request's transaction, which the route
    commits), so a retry with the key is judged afresh and a refusal leaves no row."""
    await session.execute(
        delete(BookingRequest).where(
            BookingRequest.openid == openid,
            BookingRequest.idempotency_key == key,
            BookingRequest.state == "in_flight",
        )
    )


async def booking_by_id(
    session: AsyncSession,
    *,
    scope: PatientScope,
    booking_id: int,
    policy: BookingPolicy,
    now: datetime,
) -> BookingView:
    return await booking_of(session, scope=scope, booking_id=booking_id, policy=policy, now=now)


# --------------------------------------------------------------------------- booking


def _check_times(slot: SlotForBooking, policy: BookingPolicy, now: datetime) -> None:
    if slot.status == catalog.SUSPENDED:
        raise errors.ScheduleSuspended
    clock = get_clock()
    if slot.on_date < clock.local_date_of(now) or slot.starts_at <= now:
        raise errors.SchedulePast
    opens = release_at(slot.on_date, policy)
    if now < opens:
        raise errors.ScheduleNotReleased(opens_at=opens.isoformat())
    if now > slot.starts_at - policy.cutoff:
        raise errors.BookingClosed


async def _usable_slot(
    session: AsyncSession,
    *,
    scope: PatientScope,
    card_id: int,
    slot: SlotForBooking | None,
    policy: BookingPolicy,
    now: datetime,
) -> tuple[BoundCard, SlotForBooking]:
    """The checks that need no database: the card is the caller's and usable; the slot
    exists; its schedule is open, released, not past and before the cut-off; its pool is
    not known to be empty."""
    card: BoundCard = scope.card(card_id)
    if not card.usable:
        raise errors.CardNotUsable
    if slot is None:
        raise errors.SlotUnknown
    _check_times(slot, policy, now)
    if catalog.known_full(slot.schedule_id):
        raise errors.ScheduleFull
    return card, slot


def _values(
    scope: PatientScope,
    card: BoundCard,
    slot: SlotForBooking,
    now: datetime,
    policy: BookingPolicy,
) -> dict[str, Any]:
    values = {
        "booking_ref": _new_ref(),
        "openid": scope.openid,
        "card_id": card.card_id,
        "card_no": card.card_no,
        "slot_id": slot.slot_id,
        "schedule_id": slot.schedule_id,
        "his_schedule_id": slot.his_schedule_id,
        "doctor_code": slot.doctor_code,
        "department_code": slot.department_code,
        "on_date": slot.on_date,
        "period": slot.period,
        "level": slot.level,
        "fee_fen": slot.fee_fen,
        "sequence_no": slot.sequence_no,
        "starts_at": slot.starts_at,
        "ends_at": slot.ends_at,
        "status": BOOKED,
        "active_day_key": _day_key(card.card_id, slot.doctor_code, slot.on_date),
        "his_state": HIS_PENDING,
        "created_at": now,
    }
    if policy.pay_at_booking:
        # The fee is paid online: the slot is held until paid (keys added only in this
        # mode, so the at_check_in statements stay exactly what they were).
        values.update(status=HELD, hold_expires_at=now + policy.hold, fee_state=FEE_PENDING)
    return values


async def book(
    session: AsyncSession,
    *,
    scope: PatientScope,
    card_id: int,
    slot_id: int,
    policy: BookingPolicy,
    now: datetime,
    ip: str | None = None,
) -> BookingView:
    """Book a slot for one of the caller's cards.

    Checks, in order: the card is the caller's and usable; the slot exists; its schedule is
    open, released, not past and before the cut-off; the pool is not known to be empty;
    the card is not blocked; it has fewer than K open bookings; fewer than M of the
    account's cards are in this session (on PostgreSQL under transaction-scoped locks of
    the card and of the account's session, so two racing requests cannot both pass the
    count). Then ONE guarded UPDATE takes the slot and one INSERT (whose unique
    ``active_day_key`` enforces one booking per card per doctor per day) writes the
    booking; the HIS registration is queued in the outbox. A refusal leaves nothing
    written (a lost step is undone by the statement after it, in the same transaction).

    The slot and schedule come from a cache a few seconds old
    (``catalog.slot_for_booking``), which is safe because the guarded UPDATE re-checks
    everything that can change. ``attempt`` is the same with the rate limit and the
    idempotency key around it, as the patient routes use it.
    """
    found = await catalog.slot_for_booking(session, slot_id=slot_id, cached=True)
    card, slot = await _usable_slot(
        session, scope=scope, card_id=card_id, slot=found, policy=policy, now=now
    )
    values = _values(scope, card, slot, now, policy)
    pg = await pg_connection(session)
    if pg is not None:
        keys = repo.lock_keys(
            card_id=card.card_id, openid=scope.openid, schedule_id=slot.schedule_id
        )
        await pg.fetchrow(repo.LOCK_KEYS_PG, keys["ns"], keys["k1"], keys["k2"])
        booking_id = await _book_pg(session, pg, slot, values, policy=policy, key=None, ip=ip)
    else:
        booking_id = await _book_core(session, slot, values, policy=policy, ip=ip)
    return _view_of_values(booking_id, values, policy, now)


async def attempt(
    session: AsyncSession,
    *,
    scope: PatientScope,
    key: str,
    request_hash: str,
    card_id: int,
    slot_id: int,
    limit: ratelimit.Limit,
    policy: BookingPolicy,
    now: datetime,
    ip: str | None = None,
) -> tuple[BookingView, bool]:
    """A patient's booking request, in the caller's one transaction: count it for the
    account, claim its idempotency key, ``book``, record the booking under the key.

    Returns (the booking, whether it is a replay of the key's earlier booking). Raises
    ``TooManyRequests`` over the limit, and the refusals of ``claim_request`` and
    ``book``. The caller commits a refusal too: the count must stay (a loop cannot reset
    its own counter by failing), and the key's claim is already dropped, so a retry with
    the key is judged afresh.

    On PostgreSQL the whole attempt is the scope read plus two statements (``ATTEMPT_PG``
    and ``BOOK_PG`` in ``booking.repository``); elsewhere the per-domain statements."""
    found = await catalog.slot_for_booking(session, slot_id=slot_id, cached=True)
    pg = await pg_connection(session)
    if pg is None:
        if await ratelimit.hit(session, limit, scope.openid, now=now) > limit.max_events:
            raise TooManyRequests(retry_after=ratelimit.retry_after(limit, now))
        existing = await claim_request(
            session, openid=scope.openid, key=key, request_hash=request_hash, now=now
        )
        if existing is not None:
            return await booking_of(
                session, scope=scope, booking_id=existing, policy=policy, now=now
            ), True
        try:
            card, slot = await _usable_slot(
                session, scope=scope, card_id=card_id, slot=found, policy=policy, now=now
            )
            values = _values(scope, card, slot, now, policy)
            booking_id = await _book_core(session, slot, values, policy=policy, ip=ip)
        except DomainError:
            await drop_request(session, openid=scope.openid, key=key)
            raise
        await finish_request(session, openid=scope.openid, key=key, booking_id=booking_id, now=now)
        return _view_of_values(booking_id, values, policy, now), False

    counter, window, expires = ratelimit.window_of(limit, scope.openid, now)
    keys = repo.lock_keys(
        card_id=card_id, openid=scope.openid, schedule_id=found.schedule_id if found else 0
    )
    first = await pg.fetchrow(
        repo.ATTEMPT_PG,
        counter,
        window,
        expires,
        limit.max_events,
        scope.openid,
        key,
        request_hash,
        now,
        keys["ns"],
        keys["k1"],
        keys["k2"],
    )
    if first["count"] > limit.max_events:
        raise TooManyRequests(retry_after=ratelimit.retry_after(limit, now))
    if not first["claimed"]:
        existing = await _claimed_before(
            session, openid=scope.openid, key=key, request_hash=request_hash, now=now
        )
        if existing is not None:
            return await booking_of(
                session, scope=scope, booking_id=existing, policy=policy, now=now
            ), True
        await pg.fetchrow(repo.LOCK_KEYS_PG, keys["ns"], keys["k1"], keys["k2"])
    try:
        card, slot = await _usable_slot(
            session, scope=scope, card_id=card_id, slot=found, policy=policy, now=now
        )
    except DomainError:
        await drop_request(session, openid=scope.openid, key=key)
        raise
    values = _values(scope, card, slot, now, policy)
    booking_id = await _book_pg(session, pg, slot, values, policy=policy, key=key, ip=ip)
    return _view_of_values(booking_id, values, policy, now), False


def _check_caps(checks: Any, policy: BookingPolicy) -> None:
    if checks["blocked_until_at"] is not None:
        raise errors.BookingBlocked(until=checks["blocked_until_at"])
    if checks["open_bookings"] >= policy.max_open_per_card:
        raise errors.TooManyOpenBookings(limit=policy.max_open_per_card)
    if not checks["card_in_session"] and checks["other_cards_in_session"] >= (
        policy.max_cards_per_session
    ):
        raise errors.TooManyCardsInSession(limit=policy.max_cards_per_session)


async def _book_pg(
    session: AsyncSession,
    pg: Any,
    slot: SlotForBooking,
    values: dict[str, Any],
    *,
    policy: BookingPolicy,
    key: str | None,
    ip: str | None,
) -> int:
    """PostgreSQL, under the locks of the card and the account's session: ``BOOK_PG``
    checks the caps, takes the slot with the next booking id, writes the booking, its
    outbox job and audit row, and records it under the key, or else drops the key's claim.
    A refusal wrote nothing (a slot taken for a booking the card already holds that day
    is given back here)."""
    v = values
    # A hold is registered in the HIS once paid; until then its job releases it at its end.
    job = EXPIRE_HOLD_JOB if v["status"] == HELD else REGISTER_JOB
    today = get_clock().local_date_of(v["created_at"])
    row = await pg.fetchrow(
        repo.BOOK_PG,
        v["card_id"],
        v["created_at"],
        today,
        v["openid"],
        v["schedule_id"],
        policy.max_open_per_card,
        policy.max_cards_per_session,
        v["slot_id"],
        v["booking_ref"],
        v["card_no"],
        v["his_schedule_id"],
        v["doctor_code"],
        v["department_code"],
        v["on_date"],
        v["period"],
        v["level"],
        v["fee_fen"],
        v["sequence_no"],
        v["starts_at"],
        v["ends_at"],
        v["active_day_key"],
        job,
        outbox.attempts_for(job),
        ip,
        key,
        v["status"],
        v.get("hold_expires_at"),
        v.get("fee_state"),
    )
    if row["booked"] is not None:
        return int(row["booked"])
    if row["taken"] is None:
        _check_caps(row, policy)
        await _refuse_taken(session, slot)
    await catalog.release_slot(session, slot_id=slot.slot_id, booking_id=int(row["taken"]))
    raise errors.DuplicateBooking


async def _book_core(
    session: AsyncSession,
    slot: SlotForBooking,
    values: dict[str, Any],
    *,
    policy: BookingPolicy,
    ip: str | None,
) -> int:
    """SQLite: BEGIN IMMEDIATE already lets one writer in at a time, so no lock is needed
    and the order costs nothing; the booking id comes from the INSERT."""
    conn = await session.connection()
    checks = (
        await conn.execute(
            repo.CHECKS,
            {
                "card_id": values["card_id"],
                "now": values["created_at"],
                "today": get_clock().local_date_of(values["created_at"]),
                "openid": values["openid"],
                "schedule_id": slot.schedule_id,
            },
        )
    ).one()
    _check_caps(checks._mapping, policy)
    dialect = conn.dialect.name
    new_id = (await conn.execute(repo.INSERT_BOOKING[dialect], values)).scalar_one_or_none()
    if new_id is None:
        raise errors.DuplicateBooking
    booking_id = int(new_id)
    if not await catalog.take_slot(session, slot_id=slot.slot_id, booking_id=booking_id):
        await conn.execute(repo.DELETE_BOOKING, {"booking_id": booking_id})
        await _refuse_taken(session, slot)
    if values["status"] == HELD:
        await outbox.enqueue(
            session,
            EXPIRE_HOLD_JOB,
            booking_id=booking_id,
            run_after=values["hold_expires_at"],
            dedupe_key=f"{EXPIRE_HOLD_JOB}:{booking_id}",
        )
    else:
        await outbox.enqueue(
            session,
            REGISTER_JOB,
            booking_id=booking_id,
            dedupe_key=f"{REGISTER_JOB}:{booking_id}",
        )
    await audit.append(
        session,
        at=values["created_at"],
        actor=values["openid"],
        action="booking.book",
        record_type="booking",
        record_id=booking_id,
        card_id=values["card_id"],
        ip=ip,
    )
    return booking_id


async def _refuse_taken(session: AsyncSession, cached: SlotForBooking) -> NoReturn:
    """The guarded UPDATE found the slot not free: say precisely why, from the database
    (the cached slot may be seconds old)."""
    slot = await catalog.slot_for_booking(session, slot_id=cached.slot_id)
    if slot is None:
        raise errors.SlotUnknown
    if slot.status == catalog.SUSPENDED:
        raise errors.ScheduleSuspended
    if not await catalog.has_free_slot(session, schedule_id=slot.schedule_id):
        catalog.mark_full(slot.schedule_id)
        raise errors.ScheduleFull
    raise errors.SlotTaken


def _view_of_values(
    booking_id: int, v: dict[str, Any], policy: BookingPolicy, now: datetime
) -> BookingView:
    deadline = cancel_deadline(v["on_date"], policy)
    open_ = now < deadline
    return BookingView(
        booking_id=booking_id,
        booking_ref=v["booking_ref"],
        card_id=v["card_id"],
        card_no=v["card_no"],
        schedule_id=v["schedule_id"],
        doctor_code=v["doctor_code"],
        department_code=v["department_code"],
        on_date=v["on_date"],
        period=v["period"],
        level=v["level"],
        fee_fen=v["fee_fen"],
        sequence_no=v["sequence_no"],
        starts_at=v["starts_at"],
        ends_at=v["ends_at"],
        status=v["status"],
        his_state=HIS_PENDING,
        created_at=now,
        cancel_deadline_at=deadline,
        cancellable=open_,
        not_cancellable_reason=None if open_ else "booking_cancel_deadline_passed",
        hold_expires_at=v.get("hold_expires_at"),
        fee_state=v.get("fee_state"),
    )


async def cancel(
    session: AsyncSession,
    *,
    scope: PatientScope,
    booking_id: int,
    policy: BookingPolicy,
    now: datetime,
) -> BookingView:
    """The patient cancels before the deadline: the slot goes back to the pool at once and
    the HIS cancellation is queued. Refused (nothing changed) after the deadline or twice."""
    b = await _owned(session, scope=scope, booking_id=booking_id)
    if b.status not in (BOOKED, HELD):
        raise errors.NotCancellable(current=b.status)
    if now >= cancel_deadline(b.on_date, policy):
        raise errors.CancelDeadlinePassed
    values: dict[str, Any] = {
        "status": CANCELLED,
        "cancelled_at": now,
        "cancel_reason": "patient",
        "active_day_key": None,
    }
    if b.status == HELD:
        values["his_state"] = HIS_SKIPPED  # never sent to the HIS
    done = await session.execute(
        update(Booking)
        .where(Booking.id == b.id, Booking.status == b.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        raise errors.NotCancellable(current="changed")
    await catalog.release_slot(session, slot_id=b.slot_id, booking_id=b.id)
    if b.status == HELD:
        if b.fee_payment_id is not None:
            # Nobody should pay it now; a payment already under way is refunded.
            await billing.close_payment_soon(session, payment_id=b.fee_payment_id, now=now)
    else:
        await outbox.enqueue(
            session, CANCEL_IN_HIS_JOB, booking_id=b.id, dedupe_key=f"{CANCEL_IN_HIS_JOB}:{b.id}"
        )
        if b.fee_state == FEE_PAID:
            await _refund_fee(session, b, reason="booking_cancelled", now=now)
    await audit.record(
        session,
        at=now,
        actor=scope.openid,
        action="booking.cancel",
        record_type="booking",
        record_id=b.id,
        card_id=b.card_id,
    )
    await _tell(session, b, kind="booking_cancelled", reason_key="msg_reason_patient", now=now)
    fresh = (await session.execute(select(Booking).where(Booking.id == b.id))).scalar_one()
    await session.refresh(fresh)
    return _view(fresh, policy, now)


# --------------------------------------------------------------------------- messages


async def _tell(
    session: AsyncSession,
    b: Booking,
    *,
    kind: str,
    reason_key: str | None = None,
    reason_text: str | None = None,
    url: str | None = None,
    now: datetime,
) -> None:
    """Queue a template message to the account that booked (nothing if they unfollowed).

    The data are the keywords of the hospital's booking templates (``TPL_BOOKING_*`` in the
    WeChat simulator; WeChat refuses a keyword the template does not have): ``thing1`` the
    doctor, ``time2`` the visit's date and time, ``thing3`` what matters for this kind (the
    number and fee; the reminder's hint; the reason of a cancellation or suspension) and,
    for a booking made, ``character_string4`` its reference. ``reason_text`` (words from
    outside, e.g. the HIS's suspension reason) wins over ``reason_key``. WeChat cuts every
    value at 20 characters, so each is cut here, what matters first."""
    names = await catalog.doctor_names(session, [b.doctor_code])
    doctor = names[b.doctor_code].name if b.doctor_code in names else b.doctor_code
    local = b.starts_at.astimezone(get_clock().tz)
    data = {"thing1": doctor[:20], "time2": f"{local:%Y-%m-%d %H:%M}"}
    if kind == "booking_made":
        data["thing3"] = translate(
            "msg_booking_number_fee", number=b.sequence_no, fee=format_fen(b.fee_fen)
        )[:20]
        data["character_string4"] = b.booking_ref
    elif kind == "visit_reminder":
        data["thing3"] = translate("msg_visit_reminder_hint", number=b.sequence_no)[:20]
    elif reason_text:
        data["thing3"] = reason_text[:20]
    elif reason_key:
        data["thing3"] = translate(reason_key)[:20]
    await queue_template(
        session,
        openid=b.openid,
        kind=kind,
        data=data,
        url=url or f"/h5/booking/appointments/{b.id}",
        now=now,
    )


# --------------------------------------------------------------------------- HIS outcomes


async def pending_registration(session: AsyncSession, booking_id: int) -> Booking | None:
    return (
        await session.execute(select(Booking).where(Booking.id == booking_id))
    ).scalar_one_or_none()


async def slot_has_pending_his_cancel(session: AsyncSession, *, slot_id: int, but: int) -> bool:
    """Another booking of this slot was cancelled here but not yet in the HIS."""
    found = await session.execute(
        select(Booking.id)
        .where(
            Booking.slot_id == slot_id,
            Booking.id != but,
            Booking.his_state == HIS_REGISTERED,
            Booking.status.in_((CANCELLED,)),
        )
        .limit(1)
    )
    return found.scalar_one_or_none() is not None


async def registered(
    session: AsyncSession, *, booking_id: int, appointment_id: str, now: datetime
) -> None:
    """The HIS registered the booking: remember its id and tell the patient (once)."""
    done = await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.his_state == HIS_PENDING)
        .values(his_state=HIS_REGISTERED, his_appointment_id=appointment_id)
        .returning(Booking.status)
    )
    status = done.scalar_one_or_none()
    if status is None:
        return
    b = (await session.execute(select(Booking).where(Booking.id == booking_id))).scalar_one()
    if status == BOOKED:
        await _tell(session, b, kind="booking_made", now=now)
    elif status == CANCELLED:
        # Cancelled by the patient while the registration was in flight: undo it in the HIS.
        await outbox.enqueue(
            session, CANCEL_IN_HIS_JOB, booking_id=b.id, dedupe_key=f"{CANCEL_IN_HIS_JOB}:{b.id}"
        )


async def refused_by_his(
    session: AsyncSession, *, booking_id: int, code: str, now: datetime
) -> None:
    """The HIS refused the registration: cancel the booking, give the slot back, tell why."""
    done = await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.his_state == HIS_PENDING)
        .values(his_state=HIS_REFUSED, his_refusal_code=code[:64])
        .returning(Booking.status)
    )
    status = done.scalar_one_or_none()
    if status != BOOKED:
        return
    await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.status == BOOKED)
        .values(
            status=REFUSED_BY_HIS, cancelled_at=now, cancel_reason=code[:64], active_day_key=None
        )
    )
    b = (await session.execute(select(Booking).where(Booking.id == booking_id))).scalar_one()
    # When the HIS gave this number elsewhere, keep it out of our pool until the next sync.
    await catalog.release_slot(
        session, slot_id=b.slot_id, booking_id=b.id, his_available=code != "slot_taken"
    )
    await _tell(
        session, b, kind="booking_cancelled", reason_key=f"msg_reason_his_{_reason(code)}", now=now
    )


def _reason(code: str) -> str:
    return code if code in {"schedule_suspended", "slot_taken", "card_not_found"} else "other"


async def skip_registration(session: AsyncSession, *, booking_id: int) -> None:
    await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.his_state == HIS_PENDING, Booking.status != BOOKED)
        .values(his_state=HIS_SKIPPED)
    )


async def cancelled_in_his(session: AsyncSession, *, booking_id: int) -> None:
    await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.his_state == HIS_REGISTERED)
        .values(his_state=HIS_CANCELLED)
    )


# --------------------------------------------------------------------------- HIS events


async def _by_ref(session: AsyncSession, booking_ref: str) -> Booking | None:
    return (
        await session.execute(select(Booking).where(Booking.booking_ref == booking_ref))
    ).scalar_one_or_none()


async def record_check_in(session: AsyncSession, *, booking_ref: str, now: datetime) -> bool:
    done = await session.execute(
        update(Booking)
        .where(Booking.booking_ref == booking_ref, Booking.status.in_((BOOKED, NO_SHOW)))
        .values(status=CHECKED_IN, checked_in_at=now, no_show_at=None)
    )
    return int(getattr(done, "rowcount", 0)) == 1


async def record_no_show(
    session: AsyncSession, *, booking_ref: str, policy: BookingPolicy, now: datetime
) -> bool:
    """A booked appointment not checked in by the end of its day becomes a no-show; the
    credit rule may then block the card."""
    done = await session.execute(
        update(Booking)
        .where(Booking.booking_ref == booking_ref, Booking.status == BOOKED)
        .values(status=NO_SHOW, no_show_at=now)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        return False
    b = await _by_ref(session, booking_ref)
    assert b is not None
    await _apply_credit_rule(session, card_id=b.card_id, card_no=b.card_no, policy=policy, now=now)
    return True


async def cancel_for_suspension(
    session: AsyncSession, *, schedule_id: int, now: datetime
) -> list[int]:
    """A clinic suspension (停诊): cancel the session's bookings without penalty and tell each
    patient, with a link to rebook this doctor (or a colleague). The notice gives the HIS's
    reason when it sent one, else the usual wording. Safe to run twice."""
    found = await catalog.schedules_by_ids(session, [schedule_id])
    his_reason = found[0].suspension_reason if found else None
    rows = list(
        (
            await session.execute(
                select(Booking).where(
                    Booking.schedule_id == schedule_id, Booking.status.in_((BOOKED, HELD))
                )
            )
        ).scalars()
    )
    cancelled: list[int] = []
    for b in rows:
        was_held = b.status == HELD
        done = await session.execute(
            update(Booking)
            .where(Booking.id == b.id, Booking.status == b.status)
            .values(
                status=CANCELLED_BY_HOSPITAL,
                cancelled_at=now,
                cancel_reason="clinic_suspended",
                active_day_key=None,
                **({"his_state": HIS_SKIPPED} if was_held else {}),
            )
        )
        if int(getattr(done, "rowcount", 0)) != 1:
            continue
        cancelled.append(b.id)
        if b.fee_state == FEE_PAID:
            # No penalty: the whole fee goes back.
            await _refund_fee(session, b, reason="clinic_suspended", now=now)
        elif was_held and b.fee_payment_id is not None:
            await billing.close_payment_soon(session, payment_id=b.fee_payment_id, now=now)
        # The session will not happen: the number is free again (bookable if the HIS ever
        # reopens the session with a new pool version).
        await catalog.release_slot(session, slot_id=b.slot_id, booking_id=b.id)
        await _tell(
            session,
            b,
            kind="clinic_suspended",
            reason_key="msg_reason_suspended",
            reason_text=his_reason,
            url=f"/h5/booking/doctors/{b.doctor_code}?rebook={b.id}",
            now=now,
        )
    return cancelled


# --------------------------------------------------------------------------- jobs' queries


async def due_for_reminder(session: AsyncSession, *, on_date: date) -> list[int]:
    rows = await session.execute(
        select(Booking.id).where(
            Booking.on_date == on_date, Booking.status == BOOKED, Booking.reminded_at.is_(None)
        )
    )
    return list(rows.scalars())


async def remind(session: AsyncSession, *, booking_id: int, now: datetime) -> bool:
    done = await session.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.status == BOOKED, Booking.reminded_at.is_(None))
        .values(reminded_at=now)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        return False
    b = (await session.execute(select(Booking).where(Booking.id == booking_id))).scalar_one()
    await _tell(session, b, kind="visit_reminder", now=now)
    return True


async def unfinished_before(session: AsyncSession, *, day: date) -> list[tuple[int, str, str]]:
    """(id, booking_ref, HIS appointment id) of registered bookings still 'booked' whose day
    ended before ``day``."""
    rows = await session.execute(
        select(Booking.id, Booking.booking_ref, Booking.his_appointment_id).where(
            Booking.on_date < day,
            Booking.status == BOOKED,
            Booking.his_state == HIS_REGISTERED,
        )
    )
    return [(i, r, a or "") for i, r, a in rows.all()]


# --------------------------------------------------------------------------- console


async def session_bookings(session: AsyncSession, *, schedule_id: int) -> list[Booking]:
    rows = await session.execute(
        select(Booking).where(Booking.schedule_id == schedule_id).order_by(Booking.sequence_no)
    )
    return list(rows.scalars())


async def counts_by_schedule(
    session: AsyncSession, *, schedule_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    if not schedule_ids:
        return {}
    rows = await session.execute(
        select(Booking.schedule_id, Booking.status, func.count())
        .where(Booking.schedule_id.in_(list(schedule_ids)))
        .group_by(Booking.schedule_id, Booking.status)
    )
    out: dict[int, dict[str, int]] = {}
    for sid, status, n in rows.all():
        out.setdefault(sid, {})[status] = int(n)
    return out


# --------------------------------------------------------------------------- suspension


SUSPEND_JOB = "booking.suspend_in_his"
SUSPENSION_REASON_MAX = 200


def _push_key(suspension_id: int) -> str:
    """The dedupe key of a suspension's push job: the one job row, retried in place."""
    return f"{SUSPEND_JOB}:{suspension_id}"


def _suspension_view(s: ScheduleSuspension, push_status: str | None = None) -> SuspensionView:
    return SuspensionView(
        suspension_id=s.id,
        request_ref=s.request_ref,
        schedule_id=s.schedule_id,
        reason=s.reason,
        requested_by=s.requested_by,
        requested_at=s.requested_at,
        booked_at_request=s.booked_at_request,
        state=s.state,
        refusal_code=s.refusal_code,
        finished_at=s.finished_at,
        his_unreached=s.state == SUSPENSION_PENDING and push_status == outbox.DEAD,
    )


async def suspensions(session: AsyncSession, *, schedule_id: int) -> list[SuspensionView]:
    """The suspension requests of a session, newest first. A pending one whose push job the
    outbox gave up on (dead: the HIS stayed unreachable through every attempt) is marked
    ``his_unreached``; one still being retried is not."""
    rows = list(
        (
            await session.execute(
                select(ScheduleSuspension)
                .where(ScheduleSuspension.schedule_id == schedule_id)
                .order_by(ScheduleSuspension.id.desc())
            )
        ).scalars()
    )
    pending = [_push_key(r.id) for r in rows if r.state == SUSPENSION_PENDING]
    statuses = await outbox.statuses_by_key(session, pending)
    return [_suspension_view(r, statuses.get(_push_key(r.id))) for r in rows]


async def booked_count(session: AsyncSession, *, schedule_id: int) -> int:
    """Patients booked in a session now, holds awaiting their fee included (whom a
    suspension would cancel and notify)."""
    found = await session.execute(
        select(func.count()).where(
            Booking.schedule_id == schedule_id, Booking.status.in_((BOOKED, HELD))
        )
    )
    return int(found.scalar_one())


async def check_suspendable(session: AsyncSession, *, schedule_id: int, now: datetime) -> int:
    """Refuse a session that cannot be suspended from the console (unknown, over, already
    suspended, a request on its way); else the number of patients booked in it."""
    found = await catalog.schedules_by_ids(session, [schedule_id])
    if not found:
        raise errors.SuspensionScheduleUnknown
    sched = found[0]
    if sched.suspended:
        raise errors.ScheduleSuspended
    today = get_clock().local_date_of(now)
    if sched.on_date < today:
        raise errors.SchedulePast
    if sched.on_date == today:
        ends = [s.ends_at for s in await catalog.slots(session, schedule_id=schedule_id)]
        if ends and max(ends) <= now:
            raise errors.SchedulePast
    pending = await session.execute(
        select(ScheduleSuspension.id).where(
            ScheduleSuspension.pending_key == f"pending:{schedule_id}"
        )
    )
    if pending.scalar_one_or_none() is not None:
        raise errors.SuspensionPending
    return await booked_count(session, schedule_id=schedule_id)


async def request_suspension(
    session: AsyncSession,
    *,
    schedule_id: int,
    reason: str,
    staff: str,
    booked_seen: int,
    now: datetime,
) -> SuspensionView:
    """The scheduling office suspends a session: checked, recorded (audited, with the
    reason) and pushed to the HIS through the outbox. Nothing changes locally until the HIS
    accepts; ``booked_seen`` is the count the confirmation showed (refused if it changed)."""
    reason = " ".join(reason.split())
    if not reason or len(reason) > SUSPENSION_REASON_MAX:
        raise errors.SuspensionReasonRequired
    booked = await check_suspendable(session, schedule_id=schedule_id, now=now)
    if booked != booked_seen:
        raise errors.SuspensionCountChanged(booked=booked)
    sched = await catalog.schedule(session, schedule_id)
    row = ScheduleSuspension(
        request_ref="SU" + secrets.token_hex(9).upper(),
        schedule_id=schedule_id,
        his_schedule_id=sched.his_schedule_id,
        reason=reason,
        requested_by=staff[:64],
        requested_at=now,
        booked_at_request=booked,
        state=SUSPENSION_PENDING,
        pending_key=f"pending:{schedule_id}",
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise errors.SuspensionPending from None
    await outbox.enqueue(session, SUSPEND_JOB, suspension_id=row.id, dedupe_key=_push_key(row.id))
    await audit.record(
        session,
        at=now,
        actor=staff,
        action="booking.suspension_requested",
        record_type="schedule",
        record_id=schedule_id,
        detail={"reason": reason, "booked": booked, "request_ref": row.request_ref},
    )
    return _suspension_view(row)


async def push_suspension_again(
    session: AsyncSession, *, suspension_id: int, staff: str, now: datetime
) -> SuspensionView:
    """Staff push again a suspension the HIS was never reached with (its push job gave up).
    The same job row runs again with a fresh set of attempts, so the HIS gets the same
    ``request_ref`` and, its write being idempotent on it, never suspends twice; here the
    effect is applied once whatever the HIS answers (accepted, or already suspended).
    Refused, with nothing changed, for an unknown id or a suspension not in that state (done,
    refused, or still being retried by the outbox)."""
    row = await suspension_to_push(session, suspension_id)
    if row is None:
        raise errors.SuspensionNotFound
    if row.state != SUSPENSION_PENDING:
        raise errors.SuspensionNotUnreached(schedule_id=row.schedule_id)
    # The guarded UPDATE is the check: of two staff pressing at once, one re-queues it.
    if not await outbox.retry_dead_by_key(session, _push_key(row.id)):
        raise errors.SuspensionNotUnreached(schedule_id=row.schedule_id)
    await audit.record(
        session,
        at=now,
        actor=staff,
        action="booking.suspension_pushed_again",
        record_type="schedule",
        record_id=row.schedule_id,
        detail={"suspension_id": row.id, "request_ref": row.request_ref},
    )
    return _suspension_view(row, outbox.QUEUED)


async def suspension_to_push(
    session: AsyncSession, suspension_id: int
) -> ScheduleSuspension | None:
    return (
        await session.execute(
            select(ScheduleSuspension).where(ScheduleSuspension.id == suspension_id)
        )
    ).scalar_one_or_none()


async def _finish_suspension(
    session: AsyncSession, *, where: Any, state: str, code: str | None, now: datetime
) -> ScheduleSuspension | None:
    done = await session.execute(
        update(ScheduleSuspension)
        .where(where, ScheduleSuspension.state == SUSPENSION_PENDING)
        .values(state=state, refusal_code=code, finished_at=now, pending_key=None)
        .returning(ScheduleSuspension.id)
        .execution_options(synchronize_session=False)
    )
    finished = done.scalar_one_or_none()
    if finished is None:
        return None
    return await suspension_to_push(session, int(finished))


async def suspension_accepted(session: AsyncSession, *, suspension_id: int, now: datetime) -> None:
    """The HIS suspended the session (or had already): the local effect, once."""
    row = await _finish_suspension(
        session,
        where=ScheduleSuspension.id == suspension_id,
        state=SUSPENSION_DONE,
        code=None,
        now=now,
    )
    if row is None:
        return
    await audit.record(
        session,
        at=now,
        actor="system",
        action="booking.suspension_accepted",
        record_type="schedule",
        record_id=row.schedule_id,
        detail={"request_ref": row.request_ref},
    )
    # The reason we sent is the one the HIS now holds (its event echoes it back).
    await apply_suspension(
        session, his_schedule_id=row.his_schedule_id, request_ref=None, now=now, reason=row.reason
    )


async def suspension_refused(
    session: AsyncSession, *, suspension_id: int, code: str, now: datetime
) -> None:
    """The HIS refused: keep its code for the page; nothing else changes."""
    row = await _finish_suspension(
        session,
        where=ScheduleSuspension.id == suspension_id,
        state=SUSPENSION_REFUSED,
        code=code[:64],
        now=now,
    )
    if row is not None:
        await audit.record(
            session,
            at=now,
            actor="system",
            action="booking.suspension_refused",
            record_type="schedule",
            record_id=row.schedule_id,
            outcome="refused",
            detail={"request_ref": row.request_ref, "code": code[:64]},
        )


async def apply_suspension(
    session: AsyncSession,
    *,
    his_schedule_id: str,
    request_ref: str | None,
    now: datetime,
    reason: str | None = None,
) -> list[int]:
    """A clinic suspension known to the HIS takes effect here: the schedule is marked
    suspended (its pool closes) and its bookings are cancelled without penalty, each patient
    told once. The one path for both the HIS's ``schedule.suspended`` event and our own
    console's request; safe to run again (the echo of our own request changes nothing).
    ``request_ref`` (from the event) finishes our request if the echo arrives first;
    ``reason`` (the HIS's, optional) is kept on the schedule and given to the patients."""
    if request_ref:
        await _finish_suspension(
            session,
            where=ScheduleSuspension.request_ref == request_ref,
            state=SUSPENSION_DONE,
            code=None,
            now=now,
        )
    await catalog.suspend(session, his_schedule_id=his_schedule_id, now=now, reason=reason)
    local = await catalog.local_schedule_id(session, his_schedule_id)
    if local is None:
        return []
    return await cancel_for_suspension(session, schedule_id=local, now=now)


# --------------------------------------------------------------------------- the fee
# (``booking_fee_mode = at_booking``; docs/billing.md "Registration fee")


async def start_fee_payment(
    session: AsyncSession,
    *,
    scope: PatientScope,
    booking_id: int,
    pay: Any,
    now: datetime,
    client_ip: str | None = None,
) -> PlacedOrder:
    """The pay step of a hold: the JSAPI order of the schedule's fee (``booking.fee_fen``,
    never an amount from the client), expiring with the hold. Asking again returns the same
    payment. Refused, with nothing written, for a booking that is not the caller's, not a
    hold awaiting payment, or whose hold has ended."""
    payment_id = await fee_payment_for(session, scope=scope, booking_id=booking_id, now=now)
    return await billing.place_wechat_order(
        session, pay=pay, payment_id=payment_id, now=now, client_ip=client_ip
    )


async def fee_payment_for(
    session: AsyncSession, *, scope: PatientScope, booking_id: int, now: datetime
) -> int:
    """The billing payment of a hold's fee, created and linked once (see
    ``start_fee_payment``); its id."""
    b = await _owned(session, scope=scope, booking_id=booking_id)
    if b.status != HELD or b.fee_state != FEE_PENDING or b.hold_expires_at is None:
        raise errors.NotAwaitingPayment
    if now >= b.hold_expires_at:
        raise errors.HoldExpired
    payment_id = b.fee_payment_id
    if payment_id is None:
        view = await billing.create_registration_payment(
            session,
            card_no=b.card_no,
            card_id=b.card_id,
            openid=scope.openid,
            amount_fen=b.fee_fen,
            description=translate("booking_fee_description", ref=b.booking_ref)[:120],
            expires_at=b.hold_expires_at,
            now=now,
        )
        linked = await session.execute(
            update(Booking)
            .where(Booking.id == b.id, Booking.fee_payment_id.is_(None), Booking.status == HELD)
            .values(fee_payment_id=view.payment_id)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(linked, "rowcount", 0)) != 1:
            raise errors.NotAwaitingPayment
        payment_id = view.payment_id
        await audit.record(
            session,
            at=now,
            actor=scope.openid,
            action="booking.fee_payment",
            record_type="booking",
            record_id=b.id,
            card_id=b.card_id,
            detail={"payment_id": payment_id, "amount_fen": b.fee_fen},
        )
    return payment_id


async def fee_paid(
    session: AsyncSession, *, payment_id: int, policy: BookingPolicy, now: datetime
) -> str:
    """The fee of a hold was paid (billing's ``booking.fee_paid`` job). Exactly once per
    payment (guarded ``fee_state`` pending → paid):

    - still held → booked, and the HIS registration is queued (as a booking at check-in);
    - the hold was released but its slot is still free (and the card has not booked that
      doctor's day since) → taken again with the guarded statement, booked, registered;
    - otherwise (slot taken, cancelled, suspended, too late) → the fee is refunded through
      billing's refund saga with the reason, and the patient is told.

    Returns what happened: ``booked``, ``rebooked``, ``refunded`` or ``none``."""
    b = (
        await session.execute(select(Booking).where(Booking.fee_payment_id == payment_id))
    ).scalar_one_or_none()
    if b is None:
        log.warning("fee payment %s has no booking", payment_id)
        return "none"
    done = await session.execute(
        update(Booking)
        .where(Booking.id == b.id, Booking.fee_state == FEE_PENDING)
        .values(fee_state=FEE_PAID)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        return "none"
    held = await session.execute(
        update(Booking)
        .where(Booking.id == b.id, Booking.status == HELD)
        .values(status=BOOKED)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(held, "rowcount", 0)) == 1:
        await _confirmed(session, b, action="booking.fee_paid", now=now)
        return "booked"
    fresh = (await session.execute(select(Booking).where(Booking.id == b.id))).scalar_one()
    await session.refresh(fresh)
    if fresh.status == HOLD_EXPIRED and now <= fresh.starts_at - policy.cutoff:
        if await _take_again(session, fresh):
            await _confirmed(session, fresh, action="booking.fee_paid_late", now=now)
            return "rebooked"
        reason = "hold_expired_slot_taken"
    elif fresh.status == HOLD_EXPIRED:
        reason = "hold_expired_too_late"
    else:
        reason = "booking_cancelled"
    await _refund_fee(session, fresh, reason=reason, now=now)
    return "refunded"


async def _take_again(session: AsyncSession, b: Booking) -> bool:
    """A late payment: book the released hold again if its slot is free (catalog's guarded
    statement) and the card's doctor-day key is free (unique); else change nothing."""
    try:
        async with session.begin_nested():
            done = await session.execute(
                update(Booking)
                .where(Booking.id == b.id, Booking.status == HOLD_EXPIRED)
                .values(
                    status=BOOKED,
                    active_day_key=_day_key(b.card_id, b.doctor_code, b.on_date),
                    his_state=HIS_PENDING,
                    cancelled_at=None,
                    cancel_reason=None,
                )
                .execution_options(synchronize_session=False)
            )
            if int(getattr(done, "rowcount", 0)) != 1:
                raise _NotTaken
            if not await catalog.take_slot(session, slot_id=b.slot_id, booking_id=b.id):
                raise _NotTaken
    except (_NotTaken, IntegrityError):
        return False
    return True


class _NotTaken(Exception):
    pass


async def _confirmed(session: AsyncSession, b: Booking, *, action: str, now: datetime) -> None:
    await outbox.enqueue(
        session, REGISTER_JOB, booking_id=b.id, dedupe_key=f"{REGISTER_JOB}:{b.id}"
    )
    await audit.record(
        session,
        at=now,
        actor="system:booking.fee_paid",
        action=action,
        record_type="booking",
        record_id=b.id,
        card_id=b.card_id,
        detail={"payment_id": b.fee_payment_id},
    )


async def _refund_fee(session: AsyncSession, b: Booking, *, reason: str, now: datetime) -> None:
    """Give a paid fee back (billing's refund saga: fixed refund number, WeChat through
    the outbox), once: guarded ``fee_state`` paid → refunded."""
    if b.fee_payment_id is None:
        return
    done = await session.execute(
        update(Booking)
        .where(Booking.id == b.id, Booking.fee_state == FEE_PAID)
        .values(fee_state=FEE_REFUNDED)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        return
    await billing.start_refund(
        session,
        payment_id=b.fee_payment_id,
        amount_fen=b.fee_fen,
        kind=billing.KIND_REGISTRATION,
        reason=reason,
        actor="system:booking",
        now=now,
    )
    await audit.record(
        session,
        at=now,
        actor="system:booking",
        action="booking.fee_refund",
        record_type="booking",
        record_id=b.id,
        card_id=b.card_id,
        detail={"payment_id": b.fee_payment_id, "reason": reason},
    )
    if reason.startswith("hold_expired"):
        await _tell(
            session, b, kind="booking_cancelled", reason_key=f"msg_reason_{reason}", now=now
        )


async def expire_hold(session: AsyncSession, *, booking_id: int, now: datetime) -> bool:
    """Release an unpaid hold at its end: the slot returns to the pool and the fee's WeChat
    order is closed (billing's query job; a payment that slipped through becomes the
    booking again or is refunded, by ``fee_paid``). False if it was not due or not held."""
    b = (
        await session.execute(select(Booking).where(Booking.id == booking_id))
    ).scalar_one_or_none()
    if b is None or b.status != HELD or b.hold_expires_at is None or now < b.hold_expires_at:
        return False
    done = await session.execute(
        update(Booking)
        .where(Booking.id == b.id, Booking.status == HELD, Booking.fee_state == FEE_PENDING)
        .values(
            status=HOLD_EXPIRED,
            cancelled_at=now,
            cancel_reason="hold_expired",
            active_day_key=None,
            his_state=HIS_SKIPPED,
        )
        .execution_options(synchronize_session=False)
    )
    if int(getattr(done, "rowcount", 0)) != 1:
        return False
    await catalog.release_slot(session, slot_id=b.slot_id, booking_id=b.id)
    if b.fee_payment_id is not None:
        await billing.close_payment_soon(session, payment_id=b.fee_payment_id, now=now)
    await audit.record(
        session,
        at=now,
        actor="system:booking.expire_hold",
        action="booking.hold_expired",
        record_type="booking",
        record_id=b.id,
        card_id=b.card_id,
    )
    return True
