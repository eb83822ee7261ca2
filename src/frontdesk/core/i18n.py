"""Message catalogs: zh-CN first, English available. Keys are stable codes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"
_DIR = Path(__file__).resolve().parent.parent / "locale"


@cache
def catalog(locale: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(_DIR.glob(f"*.{locale}.json")):
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def pick_locale(accept_language: str | None, explicit: str | None = None) -> str:
    """An explicit choice (cookie or ?lang=) wins; then the Accept-Language header."""
    if explicit in LOCALES:
        return explicit
    header = (accept_language or "").lower()
    for part in header.split(","):
        tag = part.split(";")[0].strip()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


def translate(key: str, locale: str = DEFAULT_LOCALE, **params: Any) -> str:
    text = catalog(locale).get(key) or catalog(DEFAULT_LOCALE).get(key) or key
    try:
        return text.format(**params) if params else text
    except (KeyError, IndexError, ValueError):
        return text
