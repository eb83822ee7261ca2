"""HIS settings: production refuses the demo HIS and its key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from frontdesk.core.settings import Settings

PROD: dict[str, Any] = {
    "env": "production",
    "secret_key": "x" * 40,
    "database_url": "postgresql+asyncpg://app@db/frontdesk",
    "simulators_enabled": False,
    "_env_file": None,
}


def test_production_refuses_the_demo_his_url_and_key() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**PROD)
    message = str(refused.value)
    assert "FRONTDESK_HIS_BASE_URL: points at a local simulator" in message
    assert "FRONTDESK_HIS_SECRET: still the demo value" in message


def test_production_accepts_a_real_bridge() -> None:
    real: dict[str, Any] = {
        "his_base_url": "https://his-bridge.hospital.example",
        "his_secret": "k" * 40,
        "his_key_id": "frontdesk-1",
    }
    from tests.core.test_settings import production_values

    settings = Settings(_env_file=None, **{**production_values(), **real})
    assert settings.outside_urls()["his_base_url"] == "https://his-bridge.hospital.example"
    assert settings.his_timeout_seconds == 5.0
