"""Errors of the reports domain; words for people are in locale/reports.*.json."""

from __future__ import annotations

from frontdesk.core.errors import DomainError, Forbidden, Invalid, NotFound, Unavailable


class ReportNotFound(NotFound):
    """No such report for this caller: it does not exist, is not reviewed yet, is held, is
    older than the history shown, or belongs to a card the caller has not bound. The
    answer is the same in every case, so ids cannot be probed."""

    code = "report_not_found"


class ReportItemNotFound(NotFound):
    code = "report_item_not_found"


class ReportFilterInvalid(Invalid):
    code = "report_filter_invalid"


class ReportLinkInvalid(Forbidden):
    """A download link that was not signed by us for this account and report."""

    code = "report_link_invalid"


class ReportLinkExpired(DomainError):
    code = "report_link_expired"
    status = 410


class ReportsUnavailable(Unavailable):
    """The HIS did not answer; nothing was shown from a stale copy."""

    code = "reports_unavailable"
