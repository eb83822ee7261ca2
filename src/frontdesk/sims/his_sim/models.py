"""The demo HIS's own tables: its own metadata, never part of Frontdesk's migrations.

The demo HIS stands for the hospital's database, which the front server never touches, so
it lives in a separate database (a SQLite file, or its own PostgreSQL database/schema) and
its tables are made with ``metadata.create_all``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from frontdesk.core.models import BigId, UTCDateTime

metadata = MetaData()

department = Table(
    "his_department",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("intro", Text, nullable=False),
    Column("position", Integer, nullable=False),
)

doctor = Table(
    "his_doctor",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("department_code", String(16), nullable=False, index=True),
    Column("name", String(32), nullable=False),
    Column("title", String(32), nullable=False),
    Column("specialty", String(200), nullable=False),
    Column("intro", Text, nullable=False),
    Column("photo_url", String(200), nullable=False),
)

schedule = Table(
    "his_schedule",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("doctor_code", String(16), nullable=False),
    Column("department_code", String(16), nullable=False),
    Column("on_date", Date, nullable=False),
    Column("period", String(4), nullable=False),
    Column("level", String(16), nullable=False),
    Column("fee_fen", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("pool_version", Integer, nullable=False),
    Index("ix_his_schedule_on_date", "on_date"),
)

slot = Table(
    "his_slot",
    metadata,
    Column("schedule_id", String(32), primary_key=True),
    Column("sequence_no", Integer, primary_key=True),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("ends_at", UTCDateTime(), nullable=False),
    Column("appointment_id", String(32), nullable=True),
)

patient = Table(
    "his_patient",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(32), nullable=False),
    Column("id_number", String(18), nullable=False),
    Column("phone", String(11), nullable=False),
)

card = Table(
    "his_card",
    metadata,
    Column("card_no", String(20), primary_key=True),
    Column("patient_id", BigId, nullable=False),
    Column("card_type", String(32), nullable=False),
)

# Cards the hospital cancelled or merged (a side table, so a demo database made before it
# existed gains it on start).
card_change = Table(
    "his_card_change",
    metadata,
    Column("card_no", String(20), primary_key=True),
    Column("status", String(16), nullable=False),  # voided | merged
    Column("merged_into", String(20), nullable=True),
)

appointment = Table(
    "his_appointment",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("schedule_id", String(32), nullable=False),
    Column("sequence_no", Integer, nullable=False),
    Column("card_no", String(20), nullable=False),
    Column("booking_ref", String(64), nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    Column("registered_at", UTCDateTime(), nullable=False),
)

order = Table(
    "his_order",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("card_no", String(20), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("title", String(100), nullable=False),
    Column("ordering_department", String(64), nullable=False),
    Column("executing_department", String(64), nullable=False),
    Column("doctor_name", String(32), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("settlement_id", String(32), nullable=True),
    Column("execution", String(16), nullable=False),
    Column("executed_at", UTCDateTime(), nullable=True),
    # The visit (就诊) the order was written in (added later: a demo database made before it
    # gains the column on start, with "" for its old orders).
    Column("visit_no", String(32), nullable=False, server_default=""),
)

order_item = Table(
    "his_order_item",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(32), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("unit_price_fen", Integer, nullable=False),
    # Share of the amount that insurance covers at all (A=100, B=80, C=0 in the catalogue).
    Column("eligible_pct", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("insurance_fen", Integer, nullable=True),  # fixed at settlement
    Column("self_pay_fen", Integer, nullable=True),
    Column("refund_id", String(32), nullable=True),
)

settlement = Table(
    "his_settlement",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("payment_ref", String(64), nullable=False, unique=True),
    Column("card_no", String(20), nullable=False),
    Column("order_ids", JSON, nullable=False),
    Column("total_fen", Integer, nullable=False),
    Column("insurance_fen", Integer, nullable=False),
    Column("self_pay_fen", Integer, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("settled_at", UTCDateTime(), nullable=False, index=True),
)

refund = Table(
    "his_refund",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("refund_ref", String(64), nullable=False, unique=True),
    Column("card_no", String(20), nullable=False),
    Column("item_ids", JSON, nullable=False),
    Column("amount_fen", Integer, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("refunded_at", UTCDateTime(), nullable=False, index=True),
)

report = Table(
    "his_report",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("card_no", String(20), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("title", String(100), nullable=False),
    Column("department", String(64), nullable=False),
    Column("reviewed", Boolean, nullable=False),
    Column("has_abnormal", Boolean, nullable=False),
    Column("reported_at", UTCDateTime(), nullable=False),
    Column("reviewed_at", UTCDateTime(), nullable=True),
    Column("body", JSON, nullable=False),  # the kind-specific part (items, findings...)
    Index("ix_his_report_card_no_reviewed_at", "card_no", "reviewed_at"),
)

event = Table(
    "his_event",
    metadata,
    Column("cursor", BigId, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
)

nonce = Table(
    "his_nonce",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("seen_at", UTCDateTime(), nullable=False, index=True),
)

idempotency = Table(
    "his_idempotency",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
