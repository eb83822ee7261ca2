"""The one place that knows WeChat Pay's error codes (spec §4.5, §4.9, §4.10, §4.11).

A v3 error is an HTTP 4xx/5xx with ``{"code": ..., "message": ..., "detail": ...}``. Retryable
codes become ``PayUnavailable`` (same parameters again later, or query); every other code is
``PayRejected`` with our own stable reason and WeChat's code kept as ``vendor_code``.
"""

from __future__ import annotations

from frontdesk.wechat.pay.port import PayRejected, PayUnavailable

# Outcome unknown or temporary: retry with the same merchant numbers, or query.
RETRYABLE: frozenset[str] = frozenset(
    {
        "SYSTEM_ERROR",
        "SYSTEMERROR",
        "BANK_ERROR",
        "BANKERROR",
        "FREQUENCY_LIMITED",
        "FREQUENCY_LIMIT_EXCEED",
        "RATELIMIT_EXCEED",
    }
)

# WeChat's code → our reason. Anything not here is rejected as "rejected".
REASONS: dict[str, str] = {
    "PARAM_ERROR": "invalid_request",
    "INVALID_REQUEST": "invalid_request",
    "SIGN_ERROR": "signature_refused",
    "APPID_MCHID_NOT_MATCH": "configuration",
    "MCH_NOT_EXISTS": "configuration",
    "NO_AUTH": "configuration",
    "ORDER_CLOSED": "order_closed",
    "ORDERCLOSED": "order_closed",
    "ORDERPAID": "order_paid",
    "ORDER_PAID": "order_paid",
    "ORDERREVERSED": "order_reversed",
    "OUT_TRADE_NO_USED": "out_trade_no_used",
    "ORDER_NOT_EXIST": "order_not_found",
    "ORDERNOTEXIST": "order_not_found",
    "RESOURCE_NOT_EXISTS": "not_found",
    "RULE_LIMIT": "rule_limit",
    "TRADE_ERROR": "trade_error",
    "NOT_ENOUGH": "insufficient_funds",
    "NOTENOUGH": "insufficient_funds",
    "AUTHCODEEXPIRE": "auth_code_invalid",
    "AUTH_CODE_EXPIRE": "auth_code_invalid",
    "AUTH_CODE_INVALID": "auth_code_invalid",
    "AUTH_CODE_ERROR": "auth_code_invalid",
    "NOTSUPORTCARD": "card_not_supported",
    "BUYER_MISMATCH": "buyer_mismatch",
    "USER_ACCOUNT_ABNORMAL": "user_account_abnormal",
    "NO_STATEMENT_EXIST": "no_statement",
    "STATEMENT_CREATING": "statement_not_ready",
}


def error_for(
    *, status: int, vendor_code: str, message: str, operation: str
) -> PayUnavailable | PayRejected:
    """The exception for an error answer of ``operation``."""
    detail = f"{operation}: {status} {vendor_code} {message}".strip()
    if vendor_code in RETRYABLE or (status >= 500 and vendor_code not in REASONS) or status == 429:
        return PayUnavailable(detail, vendor_code=vendor_code or None)
    if vendor_code == "STATEMENT_CREATING":
        # The bill is being generated: come back later.
        return PayUnavailable(detail, vendor_code=vendor_code)
    return PayRejected(
        REASONS.get(vendor_code, "rejected"), vendor_code=vendor_code or None, detail=detail
    )
