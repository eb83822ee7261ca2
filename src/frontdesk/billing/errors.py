"""Errors of the billing domain; words for people are in locale/billing.*.json."""

from __future__ import annotations

from frontdesk.core.errors import Conflict, Invalid, NotFound, Unavailable


class OrderNotFound(NotFound):
    """No such order for this card (it does not exist or is another card's: same answer)."""

    code = "billing_order_not_found"


class PaymentNotFound(NotFound):
    code = "billing_payment_not_found"


class RefundNotFound(NotFound):
    code = "billing_refund_not_found"


class NothingSelected(Invalid):
    code = "billing_nothing_selected"


class SelectionInvalid(Invalid):
    """Order or item ids that are malformed, repeated or too many."""

    code = "billing_selection_invalid"


class ChannelInvalid(Invalid):
    code = "billing_channel_invalid"


class AmountInvalid(Invalid):
    """An amount that is not a positive whole number of fen within bounds."""

    code = "billing_amount_invalid"


class OrdersNotPayable(Conflict):
    """An order is not (or no longer) unpaid for this card, per the HIS."""

    code = "billing_orders_not_payable"


class NothingToPay(Conflict):
    """The HIS's self-pay share is zero: insurance covers it all, nothing to charge."""

    code = "billing_nothing_to_pay"


class PaymentNotPaid(Conflict):
    code = "billing_payment_not_paid"


class RefundExceedsPayment(Conflict):
    """The refund would take back more than the payment has left."""

    code = "billing_refund_exceeds_payment"


class ItemsNotRefundable(Conflict):
    """The HIS does not list these items as refundable (executed, refunded, not ours)."""

    code = "billing_items_not_refundable"


class BillingUnavailable(Unavailable):
    """The HIS or WeChat Pay did not answer: nothing was charged or changed; try again."""

    code = "billing_unavailable"


class PayRefused(Conflict):
    """WeChat Pay refused to create the order (see ``reason``)."""

    code = "billing_pay_refused"


# --- the cashier API, the console cashier and paper QR codes (billing/cashier.py) ---------


class RequestIdReused(Invalid):
    """A cashier ``request_id`` already used for another request (another body)."""

    code = "billing_request_id_reused"


class AmountMismatch(Conflict):
    """The amount the cashier station showed is not the HIS's pre-settlement now."""

    code = "billing_amount_mismatch"


class AuthCodeInvalid(Invalid):
    """A payment code (付款码) is 18 digits starting with 10-15."""

    code = "billing_auth_code_invalid"


class ReasonRequired(Invalid):
    """A window or staff refund needs a reason (2-200 characters)."""

    code = "billing_reason_required"


class RefundTargetInvalid(Invalid):
    """A refund names either items or an amount, not both and not neither."""

    code = "billing_refund_target_invalid"


class PaperLinkInvalid(NotFound):
    """A paper QR link that is forged, altered or expired."""

    code = "billing_paper_link_invalid"
