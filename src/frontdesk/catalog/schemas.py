"""What the catalog gives out: plain frozen views, money in fen, times aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class DepartmentView:
    code: str
    name: str
    intro: str
    group: str  # the department list is grouped by this (first character of the intro area)


@dataclass(frozen=True)
class DoctorView:
    code: str
    name: str
    department_code: str
    title: str
    specialty: str
    intro: str
    photo_url: str
    next_available_on: date | None


@dataclass(frozen=True)
class ScheduleView:
    schedule_id: int  # local id
    his_schedule_id: str
    doctor_code: str
    department_code: str
    on_date: date
    period: str
    level: str
    fee_fen: int
    status: str
    slots_total: int
    slots_left: int
    suspension_reason: str | None = None  # the HIS's words, when it gave any

    @property
    def suspended(self) -> bool:
        return self.status == "suspended"

    @property
    def full(self) -> bool:
        return self.slots_left == 0


@dataclass(frozen=True)
class SlotView:
    slot_id: int
    sequence_no: int
    starts_at: datetime
    ends_at: datetime
    free: bool


@dataclass(frozen=True)
class SlotForBooking:
    """A slot with its schedule, as booking needs it (read without locking)."""

    slot_id: int
    sequence_no: int
    starts_at: datetime
    ends_at: datetime
    free: bool
    schedule_id: int
    his_schedule_id: str
    doctor_code: str
    department_code: str
    on_date: date
    period: str
    level: str
    fee_fen: int
    status: str


@dataclass(frozen=True)
class SyncResult:
    departments: int = 0
    doctors: int = 0
    schedules: int = 0
    pools: int = 0
    suspended: tuple[int, ...] = ()  # local ids of schedules newly seen as suspended
