"""Errors of the catalog; words for people are in locale/booking.*.json."""

from __future__ import annotations

from frontdesk.core.errors import NotFound


class DepartmentNotFound(NotFound):
    code = "department_not_found"


class DoctorNotFound(NotFound):
    code = "doctor_not_found"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class SlotNotFound(NotFound):
    code = "slot_not_found"
