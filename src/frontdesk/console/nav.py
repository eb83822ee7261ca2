"""The console's left navigation: each page registers itself with the roles that may use it.

The nav only shows what the role may use; the page's own ``require_role`` is what enforces
it (a hidden link is not a permission).
"""

from __future__ import annotations

from dataclasses import dataclass

from frontdesk.console.models import Role


@dataclass(frozen=True)
class NavItem:
    href: str
    title_key: str
    roles: frozenset[Role]
    order: int = 100


_items: dict[str, NavItem] = {}


def register_nav_item(
    href: str, title_key: str, roles: set[Role] | frozenset[Role], *, order: int = 100
) -> None:
    _items[href] = NavItem(href=href, title_key=title_key, roles=frozenset(roles), order=order)


def items_for(role: Role) -> list[NavItem]:
    return sorted(
        (item for item in _items.values() if role in item.roles),
        key=lambda item: (item.order, item.href),
    )
