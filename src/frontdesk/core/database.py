"""Async SQLAlchemy engine and sessions for SQLite (embedded default) and PostgreSQL.

Both databases run the same code. SQLite gets WAL, foreign keys, a busy timeout and
``BEGIN IMMEDIATE`` transactions: writers queue on the database lock instead of failing on
a read-to-write upgrade, which is what makes guarded ``UPDATE ... WHERE`` claims safe there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 15_000
# Execution option marking a connection's work as read-only (a deferred BEGIN on SQLite).
READ_ONLY = "frontdesk_read_only"


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def create_engine(
    url: str,
    *,
    pool_size: int = 8,
    max_overflow: int = 4,
    echo: bool = False,
    pre_ping: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """Create the engine with the per-database settings this project relies on."""
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        **kwargs,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN/SAVEPOINT behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only work (readiness checks, pages that only read) asks for a deferred
        # transaction so it never waits behind a writer: WAL readers see the last commit.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class Database:
    """The engine and session factory of one process, built from settings."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        max_overflow: int = 4,
        echo: bool = False,
        pre_ping: bool = False,
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, echo=echo, pre_ping=pre_ping
        )
        self.sessionmaker = create_sessionmaker(self.engine)

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> Database:
        """Wrap an engine made elsewhere (tests share one engine across the run)."""
        database = cls.__new__(cls)
        database.url = str(engine.url)
        database.engine = engine
        database.sessionmaker = create_sessionmaker(engine)
        return database

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
