"""Money is an integer number of fen (1 yuan = 100 fen). Never a float.

``parse_yuan`` reads what a person types ("12.5", "12.50", "¥1,234.00") and refuses floats,
negatives, more than two decimals and absurd sizes. ``format_fen`` shows ``¥12.50``.
"""

from __future__ import annotations

import re

MAX_FEN = 10_000_000_000  # 100 million yuan: far above any single outpatient payment

_YUAN = re.compile(r"^(?P<int>[0-9]{1,9})(?:\.(?P<frac>[0-9]{1,2}))?$")


class MoneyError(ValueError):
    """An amount that is not a valid, non-negative number of yuan with at most 2 decimals."""


def parse_yuan(text: str) -> int:
    """Parse a yuan amount written as text into integer fen.

    >>> parse_yuan("12.5")
    1250
    """
    if not isinstance(text, str):
        raise MoneyError("amounts must be given as text, e.g. '12.50', never as a float")
    cleaned = text.strip().removeprefix("¥").removeprefix("￥").replace(",", "").strip()
    if cleaned.startswith("-"):
        raise MoneyError("amount must not be negative")
    match = _YUAN.match(cleaned)
    if match is None:
        raise MoneyError(f"not an amount in yuan with at most 2 decimals: {text!r}")
    frac = (match.group("frac") or "").ljust(2, "0")
    fen = int(match.group("int")) * 100 + int(frac or "0")
    return check_fen(fen)


def check_fen(value: object, *, allow_zero: bool = True) -> int:
    """Validate an integer amount in fen (booleans and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError("amount in fen must be an integer")
    if value < 0:
        raise MoneyError("amount must not be negative")
    if value == 0 and not allow_zero:
        raise MoneyError("amount must be greater than zero")
    if value > MAX_FEN:
        raise MoneyError("amount is too large")
    return value


def format_fen(fen: int, *, symbol: bool = True) -> str:
    """``1250`` → ``¥12.50``; negative amounts (refunds in reports) keep their sign."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise MoneyError("amount in fen must be an integer")
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{'¥' if symbol else ''}{yuan:,}.{cents:02d}"


def fen_to_yuan_text(fen: int) -> str:
    """``1250`` → ``12.50`` (no symbol, no grouping): the form vendor files use."""
    return format_fen(fen, symbol=False).replace(",", "")
