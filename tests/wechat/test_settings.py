import pytest

from frontdesk.core.settings import Settings, SettingsError


def test_production_refuses_the_simulators_wechat_credentials() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(SettingsError) as info:
        settings.check_production()
    message = str(info.value)
    for name in (
        "WECHAT_APPID",
        "WECHAT_APPSECRET",
        "WECHAT_TOKEN",
        "WECHAT_ENCODING_AES_KEY",
        "WECHAT_API_BASE",
        "WECHAT_OAUTH_AUTHORIZE_URL",
    ):
        assert f"FRONTDESK_{name}:" in message


def test_real_wechat_values_pass_the_wechat_checks() -> None:
    settings = Settings(
        _env_file=None,
        wechat_appid="wx1234567890abcdef",
        wechat_appsecret="s" * 32,
        wechat_token="t0ken",
        wechat_encoding_aes_key="k" * 43,
        wechat_api_base="https://api.weixin.qq.com",
        wechat_oauth_authorize_url="https://open.weixin.qq.com/connect/oauth2/authorize",
    )
    with pytest.raises(SettingsError) as info:
        settings.check_production()
    assert "FRONTDESK_WECHAT_" not in str(info.value)
