"""The only place that knows WeChat's errcodes (wechat.md §2.2, §2.3, §3.3)."""

from __future__ import annotations

from frontdesk.wechat.oa.port import WeChatError, WeChatRejected, WeChatUnavailable

SYSTEM_BUSY = -1
TOKEN_INVALID = frozenset({40001, 40014, 42001})
UNFOLLOWED = 43004
# Quotas and busy: the same request can succeed later.
RETRYABLE = frozenset({SYSTEM_BUSY, 45009, 45011})
OAUTH_CODE_INVALID = 40029
OAUTH_CODE_USED = 40163


def is_token_invalid(errcode: int) -> bool:
    return errcode in TOKEN_INVALID


def is_unfollowed(errcode: int) -> bool:
    return errcode == UNFOLLOWED


def is_retryable(errcode: int) -> bool:
    return errcode in RETRYABLE


def to_error(errcode: int, errmsg: str, *, operation: str) -> WeChatError:
    """Classify a non-zero errcode into the port's two families."""
    if is_retryable(errcode):
        return WeChatUnavailable(errcode, errmsg, operation=operation)
    return WeChatRejected(errcode, errmsg, operation=operation)
