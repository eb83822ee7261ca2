"""Test fixtures: one migrated database per run, one rolled-back transaction per test.

The database is SQLite (a temporary file) unless ``FRONTDESK_TEST_DATABASE_URL`` names a
PostgreSQL database, which is wiped (schema ``public`` dropped) at the start of the run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from frontdesk.container import Container, build_container
from frontdesk.core import migrate
from frontdesk.core.clock import FrozenClock, set_clock
from frontdesk.core.database import Database, create_engine
from frontdesk.core.models import Base
from frontdesk.core.settings import Settings
from frontdesk.web.app import create_app

# 2026-11-27 09:00 in Shanghai: a Friday morning clinic.
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def pytest_report_header() -> str:
    return f"frontdesk test database: {_redacted(test_database_url_or_none() or 'sqlite')}"


def _redacted(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def test_database_url_or_none() -> str | None:
    return os.environ.get("FRONTDESK_TEST_DATABASE_URL") or None


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = test_database_url_or_none()
    if url:
        return url
    path: Path = tmp_path_factory.mktemp("db") / "frontdesk-test.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        secret_key="t" * 40,
        worker_backoff_base_seconds=0.01,
        worker_backoff_max_seconds=0.05,
        _env_file=None,
    )


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=10, max_overflow=20)
    if database_url.startswith("postgresql"):
        async with eng.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            await outer.rollback()


@pytest.fixture
async def db(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction; its commits are savepoints, all rolled back."""
    session = AsyncSession(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    frozen = FrozenClock(T0, tz="Asia/Shanghai")
    previous = set_clock(frozen)
    try:
        yield frozen
    finally:
        set_clock(previous)


@pytest.fixture
async def committed(engine: AsyncEngine, database_url: str) -> AsyncIterator[Database]:
    """A real Database whose transactions commit (for concurrency, workers and crashes).

    Every table is emptied afterwards, the append-only audit log included (its guard is
    lifted for the cleanup only, inside the same transaction).
    """
    database = Database(database_url, pool_size=10, max_overflow=20)
    try:
        yield database
    finally:
        await database.dispose()
        async with engine.begin() as conn:
            await wipe_all_tables(conn)


# Tables whose migrations install triggers refusing UPDATE and DELETE (core/audit.py,
# 0920_billing_event_append_only): emptied with the guard lifted, in the same transaction.
APPEND_ONLY_TABLES = ("audit_log", "billing_event")


async def wipe_all_tables(conn: AsyncConnection) -> None:
    """Empty every table, the append-only ones included (their guards lifted for this only)."""
    for table in reversed(Base.metadata.sorted_tables):
        if table.name not in APPEND_ONLY_TABLES:
            await conn.execute(delete(table))
    for name in APPEND_ONLY_TABLES:
        await _wipe_append_only(conn, name)


async def _wipe_audit_log(conn: AsyncConnection) -> None:
    await _wipe_append_only(conn, "audit_log")


async def _wipe_append_only(conn: AsyncConnection, table: str) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_change"))
        await conn.execute(text(f"DELETE FROM {table}"))
        await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_no_change"))
        return
    await conn.execute(text(f"DROP TRIGGER {table}_no_delete"))
    await conn.execute(text(f"DELETE FROM {table}"))
    await conn.execute(
        text(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
    )


@pytest.fixture
def container(settings: Settings, committed: Database, clock: FrozenClock) -> Container:
    return build_container(settings, clock=clock, db=committed)


@pytest.fixture
def app(settings: Settings, db: AsyncSession, clock: FrozenClock, engine: AsyncEngine) -> Any:
    """The web app on the test's rolled-back transaction."""
    container = build_container(settings, clock=clock, db=Database.from_engine(engine))

    @asynccontextmanager
    async def provider() -> AsyncIterator[AsyncSession]:
        async with db.begin_nested():
            yield db

    return create_app(settings, container=container, session_provider=provider)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


# --- HIS bridge: the demo HIS and the real client wired to it (issue 3) -----------------
HIS_KEY_ID = "test-key"


@pytest.fixture
def his_secret() -> str:
    import secrets

    return secrets.token_hex(24)


@pytest.fixture
async def his_sim(tmp_path: Path, clock: FrozenClock, his_secret: str) -> AsyncIterator[Any]:
    """A seeded small demo HIS (its own SQLite file) as an ASGI app, at the clock's date."""
    from frontdesk.sims.his_sim.app import create_his_sim_app, seed, sim_state

    sim = create_his_sim_app(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'his.db'}",
        seed=1,
        size="small",
        key_id=HIS_KEY_ID,
        secret=his_secret,
    )
    await seed(sim, today=clock.today())
    yield sim
    await sim_state(sim).engine.dispose()


@pytest.fixture
async def his_gateway(his_sim: Any, his_secret: str) -> AsyncIterator[Any]:
    """The real ``HttpHisGateway`` talking to ``his_sim`` through ``httpx.ASGITransport``."""
    from frontdesk.his.bridge import HttpHisGateway

    transport = httpx.ASGITransport(app=his_sim)
    async with httpx.AsyncClient(transport=transport, base_url="http://his-sim") as http:
        yield HttpHisGateway(
            base_url="http://his-sim",
            key_id=HIS_KEY_ID,
            secret=his_secret,
            timeout_seconds=2.0,
            backoff_seconds=0.01,
            client=http,
        )


SMS_KEY_ID, SMS_SECRET = "test-sms-key", "test-sms-secret"


@pytest.fixture
def sms_sim() -> Any:
    """The SMS provider simulator (Alibaba Cloud SendSms) as an ASGI app."""
    from frontdesk.sims.sms_sim import create_sms_sim_app

    return create_sms_sim_app(access_key_id=SMS_KEY_ID, access_key_secret=SMS_SECRET)


@pytest.fixture
async def sms_sender(sms_sim: Any) -> AsyncIterator[Any]:
    """The real ``AliyunSms`` adapter talking to ``sms_sim`` through ASGITransport."""
    from frontdesk.sms.aliyun import AliyunSms

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sms_sim)) as http:
        yield AliyunSms(
            base_url="http://sms-sim",
            access_key_id=SMS_KEY_ID,
            access_key_secret=SMS_SECRET,
            sign_name="南京市第二医院",
            template_code="SMS_000001",
            client=http,
        )


@pytest.fixture
async def wechat_sim(container: Container, clock: FrozenClock) -> AsyncIterator[Any]:
    """The WeChat simulator and our real OA client wired to it (see tests/sims/wechat_env)."""
    from tests.sims.wechat_env import build_wechat_env

    env = build_wechat_env(container, clock)
    try:
        yield env
    finally:
        await env.aclose()


# --- WeChat Pay simulator (wechat/pay) ------------------------------------------------------


@pytest.fixture(scope="session")
def pay_keys() -> Any:
    """Throw-away merchant and platform RSA-2048 keys, made once per run."""
    from frontdesk.wechat.pay.devkeys import make_keyset

    return make_keyset()


@pytest.fixture
async def pay_sim(pay_keys: Any, clock: FrozenClock) -> AsyncIterator[Any]:
    """The Pay simulator (``.sim``, ``.sim_app``) and our real client (``.pay``) wired to it
    over ASGITransport, on the test's frozen clock. ``.connect_notify(app)`` sends the
    simulator's notifications into a front-server app."""
    from tests.sims.pay_rig import build_pay_rig

    rig = build_pay_rig(pay_keys, clock)
    try:
        yield rig
    finally:
        await rig.aclose()


@pytest.fixture
def his_container(container: Container, his_gateway: Any) -> Container:
    """The ``container`` fixture whose ``services["his"]`` is the client wired to ``his_sim``."""
    container.services["his"] = his_gateway
    return container
