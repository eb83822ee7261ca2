"""Masking of personal data for pages, API responses and logs.

name 张三丰 → 张*丰, 张三 → 张*; ID number 320102199001011234 → 3201**********1234;
phone 13812345678 → 138****5678.
"""

from __future__ import annotations

import logging
import re


def mask_name(name: str) -> str:
    name = name.strip()
    if len(name) <= 1:
        return "*" if name else ""
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_id_number(value: str) -> str:
    value = value.strip()
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str) -> str:
    digits = value.strip()
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


# 18-digit resident ID (last may be X) and 15-digit legacy ID; mainland mobile numbers.
_ID_RE = re.compile(r"(?<![0-9A-Za-z])([0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9A-Za-z])")
_PHONE_RE = re.compile(r"(?<![0-9])(1[3-9][0-9]{9})(?![0-9])")


def mask_text(text: str) -> str:
    """Mask every ID number and mobile number found in free text (for logs)."""
    text = _ID_RE.sub(lambda m: mask_id_number(m.group(1)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(1)), text)


class MaskingFilter(logging.Filter):
    """Masks ID and phone numbers in every log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        return True
