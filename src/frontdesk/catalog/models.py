"""Local copies of the hospital's catalog: departments, doctors, schedules and slot pools.

The HIS is the source of truth; the worker keeps these rows in sync (``catalog.jobs``).
Booking takes slots from ``slot`` with one guarded statement (see ``service.take_slot``).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime


class Department(Base):
    __tablename__ = "catalog_department"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    intro: Mapped[str] = mapped_column(Text, nullable=False, default="")
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Doctor(Base):
    __tablename__ = "catalog_doctor"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    department_code: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    specialty: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    intro: Mapped[str] = mapped_column(Text, nullable=False, default="")
    photo_url: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Schedule(Base):
    """One clinic session (排班) as last seen from the HIS."""

    __tablename__ = "catalog_schedule"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    his_schedule_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    doctor_code: Mapped[str] = mapped_column(String(32), nullable=False)
    department_code: Mapped[str] = mapped_column(String(32), nullable=False)
    on_date: Mapped[date] = mapped_column(Date, nullable=False)
    period: Mapped[str] = mapped_column(String(8), nullable=False)
    level: Mapped[str] = mapped_column(String(32), nullable=False)
    fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # The HIS pool version last applied (0: no pool yet); an older pool is never applied.
    pool_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Why the session is suspended, as the HIS's ``schedule.suspended`` event said (the
    # reason typed at the HIS, or the one our console sent with its request). NULL while
    # open, and when the HIS gave none or the suspension was only seen by the sync.
    suspension_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)

    __table_args__ = (
        Index("ix_catalog_schedule_doctor_on", "doctor_code", "on_date"),
        Index("ix_catalog_schedule_dept_on", "department_code", "on_date"),
    )


class Slot(Base):
    """A numbered slot (号源) of the WeChat pool. ``booking_id`` is set by exactly one
    guarded ``UPDATE ... WHERE booking_id IS NULL``; ``his_available`` is false when the HIS
    took the slot back (another channel, removed from the pool)."""

    __tablename__ = "slot"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("catalog_schedule.id"), nullable=False
    )
    sequence_no: Mapped[int] = mapped_column(Integer, nullable=False)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    his_available: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    booking_id: Mapped[int | None] = mapped_column(BigId, nullable=True)

    __table_args__ = (UniqueConstraint("schedule_id", "sequence_no"),)
