"""Errors of the staff console, with stable codes looked up in the console catalogs."""

from __future__ import annotations

from frontdesk.core.errors import Conflict, DomainError, Forbidden, Invalid


class CsrfRejected(Forbidden):
    code = "console.csrf_rejected"


class RoleRefused(Forbidden):
    code = "forbidden"


class UsernameTaken(Conflict):
    code = "console.username_taken"


class BadStaffInput(Invalid):
    """A staff form field is wrong; ``field`` names it (the page shows which)."""

    code = "console.bad_input"


class StaffNotFound(DomainError):
    code = "not_found"
    status = 404


class NotDeadLetter(Conflict):
    code = "console.not_dead_letter"
