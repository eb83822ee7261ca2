"""Dashboard tiles: today's bookings, payments, refunds, messages waiting, reconciliation.

Like the health panels, each tile is filled by a provider that the owning area's
presentation code registers; until then the tile shows "—" and says the area is not built
yet. Each tile names the roles that may see it (a cashier does not need the message queue).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.models import Role

log = logging.getLogger("frontdesk.console.dashboard")


@dataclass(frozen=True)
class TileValue:
    value: str  # formatted for display, e.g. "128" or "¥1,234.50"
    note_key: str | None = None  # an optional catalog key shown under the value


TileProvider = Callable[[AsyncSession, Any], Awaitable[TileValue]]


@dataclass(frozen=True)
class TileSpec:
    key: str
    title_key: str
    roles: frozenset[Role]


@dataclass(frozen=True)
class TileView:
    key: str
    title_key: str
    value: str
    note_key: str | None


NOT_YET = "console.dashboard.not_yet"
FAILED = "console.dashboard.failed"
EMPTY = "—"

TILES: tuple[TileSpec, ...] = (
    TileSpec(
        "bookings_today",
        "console.dashboard.bookings_today",
        frozenset({Role.scheduling, Role.customer_service, Role.admin}),
    ),
    TileSpec(
        "payments_today",
        "console.dashboard.payments_today",
        frozenset({Role.cashier, Role.finance, Role.admin}),
    ),
    TileSpec(
        "refunds_today",
        "console.dashboard.refunds_today",
        frozenset({Role.cashier, Role.finance, Role.admin}),
    ),
    TileSpec(
        "messages_waiting",
        "console.dashboard.messages_waiting",
        frozenset({Role.customer_service, Role.admin}),
    ),
    TileSpec(
        "reconciliation", "console.dashboard.reconciliation", frozenset({Role.finance, Role.admin})
    ),
)

_providers: dict[str, TileProvider] = {}


def register_dashboard_tile(key: str, provider: TileProvider) -> None:
    """Fill the tile ``key`` (one of ``TILES``)."""
    if key not in {spec.key for spec in TILES}:
        raise ValueError(f"unknown dashboard tile {key!r}")
    _providers[key] = provider


def unregister_dashboard_tile(key: str) -> None:
    _providers.pop(key, None)


async def collect(session: AsyncSession, container: Any, role: Role) -> list[TileView]:
    views: list[TileView] = []
    for spec in TILES:
        if role not in spec.roles:
            continue
        provider = _providers.get(spec.key)
        if provider is None:
            views.append(TileView(spec.key, spec.title_key, EMPTY, NOT_YET))
            continue
        try:
            tile = await provider(session, container)
        except Exception:  # a broken tile must not take the dashboard down
            log.exception("dashboard tile %s failed", spec.key)
            views.append(TileView(spec.key, spec.title_key, EMPTY, FAILED))
            continue
        views.append(TileView(spec.key, spec.title_key, tile.value, tile.note_key))
    return views
