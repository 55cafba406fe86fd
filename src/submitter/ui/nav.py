"""The console's navigation bar, built from the `NAV` item each page module declares.

A page module adds itself to the bar with `NAV = NavItem("Workers", "/ui/workers", 50)`;
nothing else lists the pages (see `submitter.ui.pages`).
"""

from __future__ import annotations

from dataclasses import dataclass

from submitter.roles import Role


@dataclass(frozen=True)
class NavItem:
    """One link of the bar: its label, where it goes, its place (lower first) and the
    lowest role that sees it."""

    label: str
    href: str
    order: int = 100
    role: Role = Role.viewer


_items: list[NavItem] = []


def register(item: NavItem) -> None:
    if item not in _items:
        _items.append(item)
        _items.sort(key=lambda i: (i.order, i.label))


def nav_for(role: Role | None) -> list[NavItem]:
    """The links a caller with `role` sees (none before sign-in)."""
    if role is None:
        return []
    return [item for item in _items if role.allows(item.role)]
