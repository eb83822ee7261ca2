"""Small dialect helpers so domain code stays the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_ignoring_conflict(
    session: AsyncSession, table: Any, values: dict[str, Any], *, conflict_columns: list[str]
) -> Any:
    """An INSERT that does nothing when the unique key already exists.

    Execute it and check ``rowcount`` (1 = inserted, 0 = already there). Both databases
    implement ``ON CONFLICT DO NOTHING``, so a race between two inserts is settled by the
    constraint, never by a read first.
    """
    if dialect_name(session) == "postgresql":
        return (
            postgresql.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=conflict_columns)
        )
    return (
        sqlite.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict_columns)
    )


def dialect_name(session: AsyncSession) -> str:
    bind = session.get_bind()
    return bind.dialect.name
