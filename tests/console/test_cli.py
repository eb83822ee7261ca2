"""``frontdesk staff create``: the first admin of a new installation is made here."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from frontdesk.cli import app as cli_app
from frontdesk.console import service
from frontdesk.console.models import StaffUser
from frontdesk.core import migrate
from frontdesk.core.audit import AuditEntry
from frontdesk.core.database import Database

PASSWORD = "cli test password"
T = TypeVar("T")


def _in_thread(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # These helpers call asyncio.run: keep them off any running test loop.
    box: dict[str, T] = {}

    def run() -> None:
        box["value"] = asyncio.run(coro_factory())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box["value"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"

    async def migrated() -> None:
        database = Database(url)
        try:
            await migrate.upgrade(database.engine)
        finally:
            await database.dispose()

    _in_thread(migrated)
    return {
        "FRONTDESK_DATABASE_URL": url,
        "FRONTDESK_ENV": "test",
        "FRONTDESK_CONSOLE_TOTP_ISSUER": "二院门诊",
    }


def _rows(url: str) -> tuple[list[StaffUser], list[AuditEntry]]:
    async def read() -> tuple[list[StaffUser], list[AuditEntry]]:
        database = Database(url)
        try:
            async with database.session() as session:
                staff = list((await session.execute(select(StaffUser))).scalars())
                entries = list((await session.execute(select(AuditEntry))).scalars())
                return staff, entries
        finally:
            await database.dispose()

    return _in_thread(read)


def _run(env: dict[str, str], *args: str, password: str = PASSWORD) -> Result:
    return CliRunner().invoke(
        cli_app, ["staff", "create", *args], input=f"{password}\n{password}\n", env=env
    )


def test_staff_create_prints_the_enrolment_uri_once_and_audits(cli_env: dict[str, str]) -> None:
    result = _run(cli_env, "--username", "root", "--role", "admin", "--display-name", "信息科")

    assert result.exit_code == 0, result.output
    output: str = result.output
    uri = next(line for line in output.splitlines() if line.startswith("otpauth://"))
    query = parse_qs(urlsplit(uri).query)
    assert query["issuer"] == ["二院门诊"]
    [staff], [entry] = _rows(cli_env["FRONTDESK_DATABASE_URL"])
    assert (staff.username, staff.display_name, staff.role) == ("root", "信息科", "admin")
    assert query["secret"] == [staff.totp_secret]
    assert service.verify_password(staff.password_hash, PASSWORD)
    assert PASSWORD not in output
    assert (entry.actor, entry.action, entry.record_id) == ("cli", "staff.create", str(staff.id))


@pytest.mark.parametrize(
    ("args", "password", "field"),
    [
        (("--username", "root", "--role", "god"), PASSWORD, "role"),
        (("--username", "Root!", "--role", "admin"), PASSWORD, "username"),
        (("--username", "root", "--role", "admin"), "short", "password"),
    ],
)
def test_staff_create_refuses_bad_input_and_writes_nothing(
    cli_env: dict[str, str], args: tuple[str, ...], password: str, field: str
) -> None:
    result = _run(cli_env, *args, password=password)

    assert result.exit_code == 2
    assert f"console.bad_input: {field}" in result.output
    assert _rows(cli_env["FRONTDESK_DATABASE_URL"]) == ([], [])


def test_staff_create_refuses_a_taken_username(cli_env: dict[str, str]) -> None:
    assert _run(cli_env, "--username", "root", "--role", "admin").exit_code == 0

    again = _run(cli_env, "--username", "root", "--role", "auditor")

    assert again.exit_code == 2
    assert "console.username_taken" in again.output
    staff, entries = _rows(cli_env["FRONTDESK_DATABASE_URL"])
    assert [(s.username, s.role) for s in staff] == [("root", "admin")]
    assert len(entries) == 1
