"""The SQL of the booking hot path, built once.

At the release time every attempt runs these statements, so they are Core statements with
bind parameters made at import (SQLAlchemy compiles each once and caches it) and executed on
the session's connection, not through the ORM unit of work. Everything else in booking uses
the ORM through ``service``.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
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


# --------------------------------------------------------------------------- PostgreSQL
# The same statements for asyncpg directly (``core.sql.pg_connection``): at the release
# time SQLAlchemy's per-statement Python costs more than PostgreSQL's work. Kept next to
# the Core versions above; the whole suite runs on both databases, so both are tested.

NEXT_BOOKING_ID_SQL = "nextval(pg_get_serial_sequence('booking', 'id'))"

LOCK_KEYS_PG = "SELECT pg_advisory_xact_lock($1, $2)::text, pg_advisory_xact_lock($1, $3)::text"

CHECKS_PG = """
SELECT
  (SELECT max(blocked_until_at) FROM credit_block
    WHERE card_id = $1 AND lifted_at IS NULL AND blocked_until_at > $2) AS blocked_until_at,
  (SELECT count(*) FROM booking
    WHERE card_id = $1 AND status = 'booked' AND on_date >= $3) AS open_bookings,
  (SELECT count(DISTINCT card_id) FROM booking
    WHERE openid = $4 AND schedule_id = $5 AND status IN ('booked', 'checked_in')
      AND card_id <> $1) AS other_cards_in_session,
  (SELECT count(*) FROM booking
    WHERE openid = $4 AND schedule_id = $5 AND status IN ('booked', 'checked_in')
      AND card_id = $1) AS card_in_session
"""

BOOKING_COLUMNS = (
    "id",
    "booking_ref",
    "openid",
    "card_id",
    "card_no",
    "slot_id",
    "schedule_id",
    "his_schedule_id",
    "doctor_code",
    "department_code",
    "on_date",
    "period",
    "level",
    "fee_fen",
    "sequence_no",
    "starts_at",
    "ends_at",
    "status",
    "active_day_key",
    "his_state",
    "created_at",
)
# Built from the constant column list above (no input reaches it).
INSERT_BOOKING_PG = (
    f"INSERT INTO booking ({', '.join(BOOKING_COLUMNS)}) VALUES "  # noqa: S608
    f"({', '.join(f'${n}' for n in range(1, len(BOOKING_COLUMNS) + 1))}) "
    "ON CONFLICT (active_day_key) DO NOTHING RETURNING id"
)

CLAIM_PG = (
    "INSERT INTO booking_request (openid, idempotency_key, request_hash, state, created_at,"
    " updated_at) VALUES ($1, $2, $3, 'in_flight', $4, $4)"
    " ON CONFLICT (openid, idempotency_key) DO NOTHING RETURNING 1"
)

FINISH_PG = (
    "UPDATE booking_request SET state = 'done', booking_id = $3, updated_at = $4"
    " WHERE openid = $1 AND idempotency_key = $2"
)
