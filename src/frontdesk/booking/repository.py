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
    HELD,
    NO_SHOW,
    Booking,
    BookingRequest,
    CreditBlock,
)

BOOKING: Any = Booking.__table__
REQUEST: Any = BookingRequest.__table__


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

# A hold awaiting its fee counts like a booking for the caps (else holds would scalp).
OPEN = (BOOKED, HELD)
IN_SESSION = (BOOKED, HELD, CHECKED_IN)

# Everything the rules need before a booking, in one round trip: a credit block in force,
# the card's open bookings, and which of the account's cards are already in the session.
_card: Any = bindparam("card_id")
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
        Booking.status.in_(OPEN),
        Booking.on_date >= bindparam("today"),
    )
    .scalar_subquery()
    .label("open_bookings"),
    select(func.count(func.distinct(Booking.card_id)))
    .where(
        Booking.openid == bindparam("openid"),
        Booking.schedule_id == bindparam("schedule_id"),
        Booking.status.in_(IN_SESSION),
        Booking.card_id != _card,
    )
    .scalar_subquery()
    .label("other_cards_in_session"),
    select(func.count())
    .where(
        Booking.openid == bindparam("openid"),
        Booking.schedule_id == bindparam("schedule_id"),
        Booking.status.in_(IN_SESSION),
        Booking.card_id == _card,
    )
    .scalar_subquery()
    .label("card_in_session"),
)

# A card's credit (every schedule page shows it): its latest block, and its no-shows in the
# window, all of them or only those after that block began.
LAST_BLOCK = (
    select(
        CreditBlock.id,
        CreditBlock.blocked_at,
        CreditBlock.blocked_until_at,
        CreditBlock.lifted_at,
    )
    .where(CreditBlock.card_id == bindparam("card_id"))
    .order_by(CreditBlock.blocked_at.desc(), CreditBlock.id.desc())
    .limit(1)
)
_NO_SHOWS = select(func.count()).where(
    Booking.card_id == bindparam("card_id"),
    Booking.status == NO_SHOW,
    Booking.on_date > bindparam("since"),
)
NO_SHOWS = _NO_SHOWS
NO_SHOWS_AFTER = _NO_SHOWS.where(Booking.no_show_at > bindparam("after"))

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

LOCK_KEYS_PG = "SELECT pg_advisory_xact_lock($1, $2)::text, pg_advisory_xact_lock($1, $3)::text"

# One attempt on PostgreSQL in two statements after the scope read.
#
# ATTEMPT_PG counts the attempt for the account (core's rate_counter row), claims the
# idempotency key only if the count is within the limit, and, only if it claimed it, takes
# the transaction-scoped locks of the card and of the account's session. It returns the
# count and whether the key was claimed.
#
# BOOK_PG then (with a snapshot taken after the locks were granted) checks the credit
# block and the caps, takes the slot with the next booking id only if they pass (catalog's
# guarded UPDATE, the same WHERE as ``catalog.service.claim_slot``), writes the booking
# only if it took the slot, and only if it wrote the booking queues its HIS registration
# (core's outbox row, as ``outbox.enqueue`` writes it), appends the audit row (as
# ``audit.append``) and records the booking under the key; if it wrote none, it drops the
# key's claim (a retry is judged afresh). It returns the checks, the id
# the slot was taken with and the id of the booking written. The same rules as the
# portable path (``service._book_core`` and the per-domain statements it calls), which
# SQLite runs; the whole suite runs on both databases.
#
# Writing other packages' tables from here is a deliberate exception to the layering:
# at the release time each round trip costs the web process more CPU than the work it
# carries (see bench/results/booking_rush.md).

ATTEMPT_PG = """
WITH rc AS (
  INSERT INTO rate_counter (key, window_start, count, expires_at)
  VALUES ($1, $2, 1, $3)
  ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counter.count + 1
  RETURNING count
), cl AS (
  INSERT INTO booking_request (openid, idempotency_key, request_hash, state, created_at,
                               updated_at)
  SELECT $5::varchar, $6::varchar, $7::varchar, 'in_flight', $8::timestamptz, $8::timestamptz
  FROM rc WHERE rc.count <= $4
  ON CONFLICT (openid, idempotency_key) DO NOTHING
  RETURNING 1
)
SELECT rc.count AS count,
       EXISTS (SELECT 1 FROM cl) AS claimed,
       CASE WHEN EXISTS (SELECT 1 FROM cl)
            THEN pg_advisory_xact_lock($9, $10)::text || pg_advisory_xact_lock($9, $11)::text
       END AS locked
FROM rc
"""

BOOK_PG = """
WITH chk AS (
  SELECT
    (SELECT max(blocked_until_at) FROM credit_block
      WHERE card_id = $1 AND lifted_at IS NULL AND blocked_until_at > $2)
      AS blocked_until_at,
    (SELECT count(*) FROM booking
      WHERE card_id = $1 AND status IN ('booked', 'held') AND on_date >= $3)
      AS open_bookings,
    (SELECT count(DISTINCT card_id) FROM booking
      WHERE openid = $4 AND schedule_id = $5 AND status IN ('booked', 'held', 'checked_in')
        AND card_id <> $1) AS other_cards_in_session,
    (SELECT count(*) FROM booking
      WHERE openid = $4 AND schedule_id = $5 AND status IN ('booked', 'held', 'checked_in')
        AND card_id = $1) AS card_in_session
), ok AS (
  SELECT 1 FROM chk
  WHERE blocked_until_at IS NULL AND open_bookings < $6
    AND (card_in_session > 0 OR other_cards_in_session < $7)
), t AS (
  UPDATE slot SET booking_id = nextval(pg_get_serial_sequence('booking', 'id'))
  WHERE slot.id = $8 AND slot.booking_id IS NULL AND slot.his_available IS true
    AND NOT EXISTS (SELECT 1 FROM catalog_schedule
                    WHERE catalog_schedule.id = slot.schedule_id
                      AND catalog_schedule.status = 'suspended')
    AND EXISTS (SELECT 1 FROM ok)
  RETURNING slot.booking_id
), b AS (
  INSERT INTO booking (id, booking_ref, openid, card_id, card_no, slot_id, schedule_id,
                       his_schedule_id, doctor_code, department_code, on_date, period, level,
                       fee_fen, sequence_no, starts_at, ends_at, status, active_day_key,
                       his_state, created_at, hold_expires_at, fee_state)
  SELECT t.booking_id, $9::varchar, $4::varchar, $1::bigint, $10::varchar, $8::bigint,
         $5::bigint, $11::varchar, $12::varchar, $13::varchar, $14::date, $15::varchar,
         $16::varchar, $17::bigint, $18::integer, $19::timestamptz, $20::timestamptz,
         $26::varchar, $21::varchar, 'pending', $2::timestamptz, $27::timestamptz,
         $28::varchar
  FROM t
  ON CONFLICT (active_day_key) DO NOTHING
  RETURNING id
), o AS (
  INSERT INTO outbox_job (name, payload, dedupe_key, status, attempts, max_attempts,
                          created_at, run_after_at)
  SELECT $22::varchar, json_build_object('booking_id', b.id), $22::varchar || ':' || b.id,
         'queued', 0, $23::integer, $2::timestamptz, coalesce($27::timestamptz, $2)
  FROM b
  ON CONFLICT (dedupe_key) DO NOTHING
), a AS (
  INSERT INTO audit_log (at, actor, action, record_type, record_id, card_id, ip, outcome,
                         detail)
  SELECT $2::timestamptz, $4::varchar, 'booking.book', 'booking', b.id::text, $1::bigint,
         $24::varchar, 'ok', '{}'::json
  FROM b
), f AS (
  UPDATE booking_request SET state = 'done', booking_id = b.id, updated_at = $2::timestamptz
  FROM b
  WHERE booking_request.openid = $4 AND booking_request.idempotency_key = $25
), d AS (
  DELETE FROM booking_request
  WHERE openid = $4 AND idempotency_key = $25 AND state = 'in_flight'
    AND NOT EXISTS (SELECT 1 FROM b)
)
SELECT chk.blocked_until_at, chk.open_bookings, chk.other_cards_in_session,
       chk.card_in_session, (SELECT booking_id FROM t) AS taken, (SELECT id FROM b) AS booked
FROM chk
"""
