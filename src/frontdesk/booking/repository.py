"""The SQL of the booking hot path, built once.

At the release time every attempt runs these statements, so they are Core statements with
bind parameters made at import (SQLAlchemy compiles each once and caches it) and executed on
the session's connection, not through the ORM unit of work. Everything else in booking uses
the ORM through ``service``.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from frontdesk.booking.models import (
    BOOKED,
    CHECKED_IN,
    Booking,
    BookingRequest,
    CreditBlock,
)

BOOKING = Booking.__table__
REQUEST = BookingRequest.__table__


def _insert_booking(dialect: str) -> Any:
    """INSERT a booking unless the card already holds that doctor's day (the unique
    ``active_day_key``): no row comes back then, and nothing was written."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(BOOKING)
        .on_conflict_do_nothing(index_elements=["active_day_key"])
        .returning(BOOKING.c.id)
    )


INSERT_BOOKING = {d: _insert_booking(d) for d in ("postgresql", "sqlite")}

# The id of the next booking, drawn before the row is written (PostgreSQL only): the slot
# is taken with it first, so a lost race costs one UPDATE and writes nothing.
NEXT_BOOKING_ID = text("nextval(pg_get_serial_sequence('booking', 'id'))")

DELETE_BOOKING = delete(Booking).where(Booking.id == bindparam("booking_id"))

# Everything the rules need before a booking, in one round trip: a credit block in force,
# the card's open bookings, and which of the account's cards are already in the session.
_card = bindparam("card_id")
CHECKS = select(
    select(func.max(CreditBlock.blocked_until_at))
    .where(
        CreditBlock.card_id == _card,
        CreditBlock.lifted_at.is_(None),
        CreditBlock.blocked_until_at > bindparam("now"),
    )
    .scalar_subquery()
    .label("blocked_until_at"),
    select(func.count())
    .where(
        Booking.card_id == _card,
        Booking.status == BOOKED,
        Booking.on_date >= bindparam("today"),
    )
    .scalar_subquery()
    .label("open_bookings"),
    select(func.count(func.distinct(Booking.card_id)))
    .where(
        Booking.openid == bindparam("openid"),
        Booking.schedule_id == bindparam("schedule_id"),
        Booking.status.in_((BOOKED, CHECKED_IN)),
        Booking.card_id != _card,
    )
    .scalar_subquery()
    .label("other_cards_in_session"),
    select(func.count())
    .where(
        Booking.openid == bindparam("openid"),
        Booking.schedule_id == bindparam("schedule_id"),
        Booking.status.in_((BOOKED, CHECKED_IN)),
        Booking.card_id == _card,
    )
    .scalar_subquery()
    .label("card_in_session"),
)

# PostgreSQL: serialise the bookings of one card, and of one account in one session, for
# the rest of the transaction. Under READ COMMITTED the next statement (CHECKS) takes a
# fresh snapshot after the lock is granted, so it sees the booking the previous holder
# committed: the count-then-insert of the caps cannot race. Keys are taken in ascending
# order, so two transactions never wait for each other in a circle. (SQLite needs none of
# this: BEGIN IMMEDIATE already lets one writer in at a time.)
LOCK_KEYS = text("SELECT pg_advisory_xact_lock(:ns, :k1), pg_advisory_xact_lock(:ns, :k2)")
LOCK_NAMESPACE = 7_007


def lock_keys(*, card_id: int, openid: str, schedule_id: int) -> dict[str, int]:
    keys = sorted(
        (
            _key32(f"card:{card_id}"),
            _key32(f"account-session:{openid}:{schedule_id}"),
        )
    )
    return {"ns": LOCK_NAMESPACE, "k1": keys[0], "k2": keys[1]}


def _key32(value: str) -> int:
    """A signed 32-bit key (a collision only makes two bookings wait for each other)."""
    n = zlib.crc32(value.encode())
    return n - 2**32 if n >= 2**31 else n


# --------------------------------------------------------------------------- idempotency


def _claim(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(REQUEST).on_conflict_do_nothing(index_elements=["openid", "idempotency_key"])


CLAIM = {d: _claim(d) for d in ("postgresql", "sqlite")}

REQUEST_BY_KEY = select(
    BookingRequest.request_hash,
    BookingRequest.state,
    BookingRequest.booking_id,
    BookingRequest.updated_at,
).where(
    BookingRequest.openid == bindparam("openid"),
    BookingRequest.idempotency_key == bindparam("key"),
)

FINISH = (
    update(BookingRequest)
    .where(
        BookingRequest.openid == bindparam("b_openid"),
        BookingRequest.idempotency_key == bindparam("b_key"),
    )
    .values(state="done", booking_id=bindparam("b_booking_id"), updated_at=bindparam("b_now"))
)
