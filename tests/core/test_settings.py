from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from frontdesk.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "s" * 40
PG = "postgresql+asyncpg://frontdesk@db.hospital.internal/frontdesk"


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults_run_locally_on_sqlite() -> None:
    settings = make()
    assert settings.is_sqlite
    assert settings.database_url == "sqlite+aiosqlite:///./var/frontdesk.db"
    assert settings.hospital_timezone == "Asia/Shanghai"
    assert settings.json_logs is False


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDESK_WORKER_CONCURRENCY", "16")
    monkeypatch.setenv("FRONTDESK_HOSPITAL_TIMEZONE", "Asia/Urumqi")
    settings = make()
    assert (settings.worker_concurrency, settings.hospital_timezone) == (16, "Asia/Urumqi")


def test_production_refuses_sqlite_default_secret_and_simulators() -> None:
    with pytest.raises(ValidationError) as exc:
        make(env="production")
    message = str(exc.value)
    assert "FRONTDESK_SECRET_KEY" in message
    assert "FRONTDESK_DATABASE_URL" in message
    assert "FRONTDESK_SIMULATORS_ENABLED" in message
    assert "FRONTDESK_HIS_SECRET: still the demo value" in message
    assert "FRONTDESK_HIS_BASE_URL: points at a local simulator" in message


def production_values() -> dict[str, object]:
    """Every value production insists on: real endpoints and non-demo secrets."""
    values: dict[str, object] = {
        "env": "production",
        "secret_key": GOOD_SECRET,
        "database_url": PG,
        "simulators_enabled": False,
        "wechat_appid": "wx1234567890abcdef",
    }
    for name in make().outside_urls():
        values[name] = "https://" + name.replace("_", "-") + ".hospital.example"
    for name, field in Settings.model_fields.items():
        if name != "secret_key" and type(field.default).__name__ == "SecretStr":
            values[name] = f"real-{name}-" + "x" * 32
    return values


def test_production_starts_when_configured() -> None:
    settings = make(**production_values())
    assert settings.json_logs is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("worker_concurrency", "many"),
        ("hospital_timezone", "Mars/Olympus"),
        ("database_url", "mysql://x"),
        ("max_body_bytes", 10),
        ("env", "staging"),
    ],
)
def test_wrong_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        make(**{field: value})


def test_cli_refuses_to_start_with_one_clear_line_per_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "frontdesk", "db", "upgrade"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT / "src"),
            "FRONTDESK_WORKER_CONCURRENCY": "lots",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "frontdesk: FRONTDESK_WORKER_CONCURRENCY: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
    assert not (tmp_path / "var").exists()


def test_cli_db_upgrade_creates_the_sqlite_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "frontdesk", "db", "upgrade"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database at heads"
    assert (tmp_path / "var" / "frontdesk.db").stat().st_size > 0
