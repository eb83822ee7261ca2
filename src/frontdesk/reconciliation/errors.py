"""Errors of reconciliation; words for people are in locale/console.*.json (``recon.error.*``)."""

from __future__ import annotations

from typing import ClassVar

from frontdesk.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound


class BillRejected(DomainError):
    """The day's bill cannot be used: the run stops, nothing is written but the error.

    ``reason`` is one of REASONS; ``detail`` says where (line number, column, values)."""

    code = "recon_bill_rejected"
    status = 422
    REASONS: ClassVar[tuple[str, ...]] = (
        "hash",  # the SHA-1 of the file is not the one WeChat announced
        "gzip",  # the gzip stream is corrupt or cut short
        "encoding",  # not UTF-8
        "truncated",  # no summary at the end / an incomplete row
        "layout",  # the header is not a known trade-bill layout
        "row",  # a row has the wrong number of fields or an unreadable value
        "decimals",  # an amount with the wrong number of decimals
        "summary",  # the summary row disagrees with the detail rows
        "duplicate",  # the same movement appears twice in the bill
        "merchant",  # a row of another merchant
        "no_statement",  # WeChat has not published the bill (retried until the deadline)
        # WeChat says there is no bill for the day although our ledger recorded WeChat
        # payments or refunds on it (given up after the deadline)
        "no_statement_but_paid",
        "fetch",  # WeChat Pay could not be reached
        "his",  # the HIS could not give the day's settlements
        "ledger",  # no payments ledger is configured (billing not wired)
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise ValueError(reason)
        super().__init__(f"{reason}: {detail}" if detail else reason, reason=reason)
        self.reason = reason
        self.where = detail


class RunNotFound(NotFound):
    code = "recon_run_not_found"


class DifferenceNotFound(NotFound):
    code = "recon_difference_not_found"


class ProposalNotFound(NotFound):
    code = "recon_proposal_not_found"


class ActionInvalid(Invalid):
    """The action does not fit the difference (e.g. a refund larger than what was paid)."""

    code = "recon_action_invalid"


class AlreadyProposed(Conflict):
    """The difference already has an open proposal, or is closed."""

    code = "recon_not_open"


class OwnProposal(Forbidden):
    """Maker-checker: the person who proposed an action may not approve it."""

    code = "recon_own_proposal"
