"""Errors of the Official Account side, with stable codes (texts in locale/wechat.*.json)."""

from __future__ import annotations

from frontdesk.core.errors import DomainError, Invalid


class CallbackRefused(DomainError):
    """Signature missing/wrong, stale timestamp, or plaintext where safe mode is required."""

    code = "wechat_callback_refused"
    status = 403


class CallbackMalformed(DomainError):
    """The body is not a well-formed, safe, UTF-8 WeChat XML message."""

    code = "wechat_callback_malformed"
    status = 400


class CallbackTooLarge(DomainError):
    code = "body_too_large"
    status = 413


class UnknownTemplateKind(Invalid):
    code = "wechat_unknown_template_kind"
