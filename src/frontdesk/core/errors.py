"""The base of every domain error: a stable code, an HTTP status, and safe parameters.

The code is what clients and tests match on; the words shown to people come from the
message catalogs (``frontdesk/locale``), looked up by code, so services stay free of UI text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, detail: str | None = None, **params: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.params = params


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class Conflict(DomainError):
    code = "conflict"
    status = 409


class Invalid(DomainError):
    code = "invalid"
    status = 422


class Unavailable(DomainError):
    """An outside system (HIS, WeChat) is down or slow: the person should try again later."""

    code = "unavailable"
    status = 503


class TooManyRequests(DomainError):
    code = "too_many_requests"
    status = 429

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **params: Any):
        super().__init__(detail, **params)
        self.retry_after = retry_after
