"""The SMS port: send a one-time verification code to a mobile number.

Adapters: ``aliyun.AliyunSms`` (Alibaba Cloud SMS, the common choice of Chinese hospitals)
and, for dev and tests, the same adapter pointed at ``frontdesk sms-sim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SmsReceipt:
    provider_id: str  # the provider's id of the message (BizId)


class SmsUnavailable(Exception):
    """The provider is down, slow or busy: try again later."""


class SmsRejected(Exception):
    """The provider refused this message (bad number, over its limit, misconfigured)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class SmsSender(Protocol):
    async def send_code(self, *, phone: str, code: str) -> SmsReceipt:
        """Send ``code`` to ``phone`` (11-digit mainland mobile number) using the
        hospital's approved verification template."""
        ...
