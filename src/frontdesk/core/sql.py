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


async def pg_connection(session: AsyncSession) -> Any | None:
    """The asyncpg connection under the session's transaction on PostgreSQL, or None on
    SQLite (callers then run their portable statements).

    For the few statements run thousands of times a second at the booking release time:
    SQLAlchemy adds ~0.2 ms of Python per statement, asyncpg's own prepared statements a
    tenth of that. The transaction is SQLAlchemy's (begun here if no statement has run
    yet), so these statements commit or roll back with everything else of the session.
    It relies on SQLAlchemy's asyncpg adapter beginning its transaction lazily; should an
    upgrade change that, this raises rather than run outside the transaction."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return None
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    start = getattr(adapted, "_start_transaction", None)
    if conn.dialect.driver != "asyncpg" or start is None or not hasattr(adapted, "_transaction"):
        raise RuntimeError("the booking hot path needs SQLAlchemy's asyncpg adapter (2.x)")
    if adapted._transaction is None:
        if getattr(adapted, "isolation_level", None) == "autocommit":
            raise RuntimeError("pg_connection needs a transaction, not autocommit")
        await start()
    return raw.driver_connection
