"""Merchant numbers for payments and refunds: unique forever, sortable by time, WeChat-safe.

Format: a 1-3 letter kind prefix, the UTC time to the millisecond (17 digits) and 10 random
characters from a Crockford-style base32 alphabet. At most 30 characters, only ``[0-9A-Z]``,
which WeChat Pay accepts for ``out_trade_no`` (6-32 chars) and ``out_refund_no`` (1-64).
Lexical order follows creation time to the millisecond; the random tail makes collisions
within a millisecond about 1 in 10^15, and a unique constraint backs it up.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFIX_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_LENGTH = 32


def _random_tail(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def merchant_number(prefix: str, *, at: datetime | None = None) -> str:
    if not prefix or len(prefix) > 3 or not set(prefix) <= _PREFIX_OK:
        raise ValueError("prefix must be 1-3 upper-case letters")
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}"
    value = f"{prefix}{stamp}{_random_tail(10)}"
    assert len(value) <= MAX_LENGTH
    return value


def is_merchant_number(value: str) -> bool:
    return (
        6 <= len(value) <= MAX_LENGTH
        and value.isascii()
        and value.isalnum()
        and value.upper() == value
    )
