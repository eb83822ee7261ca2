"""WeChat Pay settings, the container's lazy ``pay`` service and ``gen-test-keys``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from frontdesk.cli import app as cli
from frontdesk.container import build_container
from frontdesk.core.database import Database
from frontdesk.core.settings import Settings
from frontdesk.wechat.pay.client import HttpWeChatPay, LazyWeChatPay, PayConfig, PayConfigError
from frontdesk.wechat.pay.devkeys import KeySet, read_keyset, write_keyset
from frontdesk.wechat.pay.port import WeChatPay


def pay_settings(keys_dir: Path, keys: KeySet, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "wechatpay_mchid": keys.mchid,
        "wechatpay_appid": keys.appid,
        "wechatpay_serial_no": keys.merchant_serial_no,
        "wechatpay_private_key_path": str(keys_dir / "merchant_key.pem"),
        "wechatpay_apiv3_key": keys.apiv3_key,
        "wechatpay_platform_public_key": str(keys_dir / "platform_public.pem"),
        "wechatpay_platform_public_key_id": keys.platform_public_key_id,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def test_config_is_read_from_settings_and_key_files(tmp_path: Path, pay_keys: KeySet) -> None:
    write_keyset(pay_keys, tmp_path)

    config = PayConfig.from_settings(pay_settings(tmp_path, pay_keys))

    assert config is not None
    assert (config.mchid, config.appid, config.serial_no) == (
        pay_keys.mchid,
        pay_keys.appid,
        pay_keys.merchant_serial_no,
    )
    assert config.api_base == "http://127.0.0.1:8102"
    assert config.apiv3_key == pay_keys.apiv3_key.encode()
    assert config.platform_public_key_id == pay_keys.platform_public_key_id
    assert config.platform_public_key is not None
    assert (
        config.platform_public_key.public_numbers()
        == pay_keys.platform_key.public_key().public_numbers()
    )


def test_inline_pem_settings_work_too(tmp_path: Path, pay_keys: KeySet) -> None:
    settings = pay_settings(
        tmp_path,
        pay_keys,
        wechatpay_private_key_path="",
        wechatpay_private_key=pay_keys.merchant_key_pem.decode(),
        wechatpay_platform_public_key=pay_keys.platform_public_pem,
    )

    config = PayConfig.from_settings(settings)

    assert config is not None
    assert config.private_key.private_numbers() == pay_keys.merchant_key.private_numbers()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"wechatpay_apiv3_key": "short"}, "FRONTDESK_WECHATPAY_APIV3_KEY"),
        ({"wechatpay_private_key_path": "/nonexistent/key.pem"}, "FRONTDESK_WECHATPAY_PRIVATE_KEY"),
        ({"wechatpay_platform_public_key_id": ""}, "FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY_ID"),
        ({"wechatpay_platform_public_key": ""}, "FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY"),
    ],
)
def test_incomplete_settings_name_the_setting(
    tmp_path: Path, pay_keys: KeySet, overrides: dict[str, Any], named: str
) -> None:
    write_keyset(pay_keys, tmp_path)

    with pytest.raises(PayConfigError) as caught:
        PayConfig.from_settings(pay_settings(tmp_path, pay_keys, **overrides))

    assert str(caught.value).startswith(named)


def test_no_merchant_means_no_pay_service(settings: Settings) -> None:
    assert PayConfig.from_settings(settings) is None


async def test_the_container_registers_pay_lazily(
    tmp_path: Path, pay_keys: KeySet, database_url: str
) -> None:
    settings = pay_settings(tmp_path / "not-yet", pay_keys, database_url=database_url)
    container = build_container(settings, db=Database(database_url))
    try:
        pay = container.services["pay"]
        assert isinstance(pay, LazyWeChatPay)
        # The key files are only needed on first use.
        write_keyset(pay_keys, tmp_path / "not-yet")
        assert isinstance(pay.get(), HttpWeChatPay)
    finally:
        await container.aclose()


def test_production_refuses_a_loopback_wechatpay_base() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(
            _env_file=None,
            env="production",
            secret_key="s" * 40,
            database_url="postgresql+asyncpg://u@db/frontdesk",
            simulators_enabled=False,
        )

    assert "FRONTDESK_WECHATPAY_API_BASE" in str(caught.value)


def test_gen_test_keys_writes_a_usable_key_set_once(tmp_path: Path) -> None:
    runner = CliRunner()

    first = runner.invoke(cli, ["wechat", "gen-test-keys", "--out", str(tmp_path)])
    again = runner.invoke(cli, ["wechat", "gen-test-keys", "--out", str(tmp_path)])

    assert first.exit_code == 0, first.output
    assert "FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY_ID=PUB_KEY_ID_" in first.output
    assert again.exit_code == 1
    keys = read_keyset(tmp_path)
    assert len(keys.apiv3_key) == 32
    assert (tmp_path / "merchant_key.pem").stat().st_mode & 0o077 == 0
    env = dict(line.split("=", 1) for line in (tmp_path / "wechatpay.env").read_text().splitlines())
    values: dict[str, Any] = {k.removeprefix("FRONTDESK_").lower(): v for k, v in env.items()}
    settings = Settings(_env_file=None, **values)
    assert PayConfig.from_settings(settings) is not None


def test_both_adapters_satisfy_the_port(pay_sim: Any) -> None:
    def as_port(*adapters: WeChatPay) -> list[WeChatPay]:  # mypy checks the Protocol here
        return list(adapters)

    lazy = LazyWeChatPay(Settings(_env_file=None))

    assert as_port(pay_sim.pay, lazy) == [pay_sim.pay, lazy]
