"""Integration-health panels: other areas contribute a panel; the console shows them.

The HIS bridge, WeChat and WeChat Pay each own the numbers worth showing (last successful
call, error rate, token age, pending queries). Their *presentation* code registers a provider
here at import time (domains themselves never import the console); a panel with no provider
is shown as "not configured", and a provider that fails shows as failed instead of breaking
the page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("frontdesk.console.health")

OK, WARN, BAD = "ok", "warn", "bad"


@dataclass(frozen=True)
class PanelRow:
    label_key: str  # a catalog key, e.g. "his.health.last_success"
    value: str  # already formatted for display (no personal data)
    status: str = OK


@dataclass(frozen=True)
class Panel:
    rows: tuple[PanelRow, ...]
    status: str = OK


# (session, container) -> Panel. The session is the request's read-only view; do not write.
PanelProvider = Callable[[AsyncSession, Any], Awaitable[Panel]]


@dataclass(frozen=True)
class PanelView:
    key: str
    title_key: str
    configured: bool
    failed: bool = False
    panel: Panel | None = None


# The panels the console always shows, in order; others may register more after these.
EXPECTED: tuple[tuple[str, str], ...] = (
    ("his", "console.health.his"),
    ("wechat", "console.health.wechat"),
    ("pay", "console.health.pay"),
)

_providers: dict[str, tuple[str, PanelProvider]] = {}


def register_health_panel(
    key: str,
    provider: PanelProvider,
    *,
    title_key: str | None = None,
) -> None:
    """Contribute the panel ``key`` ("his", "wechat", "pay" or a new one); last one wins."""
    expected = dict(EXPECTED)
    _providers[key] = (title_key or expected.get(key) or key, provider)


def unregister_health_panel(key: str) -> None:
    _providers.pop(key, None)


async def collect(session: AsyncSession, container: Any) -> list[PanelView]:
    keys = [key for key, _ in EXPECTED] + sorted(set(_providers) - {k for k, _ in EXPECTED})
    expected = dict(EXPECTED)
    views: list[PanelView] = []
    for key in keys:
        entry = _providers.get(key)
        if entry is None:
            views.append(PanelView(key=key, title_key=expected[key], configured=False))
            continue
        title_key, provider = entry
        try:
            panel = await provider(session, container)
        except Exception:  # one broken panel must not hide the others
            log.exception("health panel %s failed", key)
            views.append(PanelView(key=key, title_key=title_key, configured=True, failed=True))
            continue
        views.append(PanelView(key=key, title_key=title_key, configured=True, panel=panel))
    return views
