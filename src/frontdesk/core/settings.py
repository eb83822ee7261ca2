"""All configuration in one place.

Every value can come from the environment with the ``FRONTDESK_`` prefix (or a ``.env`` file).
Defaults run locally with no services: SQLite under ``./var`` and the simulators on loopback.
``Settings.check_production()`` refuses to start production with a simulator, a default
secret or SQLite, naming the setting to change.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "dev-insecure-change-me"  # noqa: S105 - a marker the production check refuses


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SettingsError(ValueError):
    """A setting is wrong for the environment; the message names the setting."""


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRONTDESK_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- process -----------------------------------------------------------------------
    env: Environment = Environment.development
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    database_url: str = "sqlite+aiosqlite:///./var/frontdesk.db"
    db_pool_size: int = Field(default=8, ge=1, le=100)
    db_max_overflow: int = Field(default=4, ge=0, le=100)
    db_echo: bool = False
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON in production, readable otherwise
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    public_base_url: str = "http://127.0.0.1:8000"

    # --- the hospital ------------------------------------------------------------------
    hospital_name: str = "南京市第二医院"
    hospital_timezone: str = "Asia/Shanghai"

    # --- outbox and worker ---------------------------------------------------------------
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    worker_batch_size: int = Field(default=10, ge=1, le=1000)
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    worker_lease_seconds: float = Field(default=300.0, gt=0)
    worker_job_timeout_seconds: float = Field(default=120.0, gt=0)
    worker_max_attempts: int = Field(default=8, ge=1, le=100)
    worker_backoff_base_seconds: float = Field(default=2.0, gt=0)
    worker_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # Extra modules whose import registers job handlers (tests and plug-ins).
    worker_job_modules: list[str] = Field(default_factory=list)

    # --- simulators (dev and test only) ----------------------------------------------------
    # A production process must never talk to one; check_production() enforces it.
    simulators_enabled: bool = True

    # --- WeChat Official Account (issue 4, wechat/oa) ------------------------------------
    # Server API base (token, template, menu, sns); production: https://api.weixin.qq.com
    wechat_api_base: str = "http://127.0.0.1:8102"
    # The OAuth consent page the phone is sent to; production:
    # https://open.weixin.qq.com/connect/oauth2/authorize
    wechat_oauth_authorize_url: str = "http://127.0.0.1:8102/connect/oauth2/authorize"
    wechat_appid: str = "wx0000000000sim001"
    wechat_appsecret: SecretStr = SecretStr("sim-appsecret-change-me")
    wechat_token: SecretStr = SecretStr("simtoken")
    # 43 characters, Base64 without the trailing "=" (32 bytes once decoded).
    wechat_encoding_aes_key: SecretStr = SecretStr("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    wechat_callback_mode: Literal["plaintext", "compatible", "safe"] = "safe"
    wechat_callback_max_skew_seconds: int = Field(default=300, ge=10, le=3600)
    wechat_callback_max_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)
    wechat_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Refresh the shared access token this long before it expires.
    wechat_token_refresh_margin_seconds: int = Field(default=300, ge=0, le=3600)
    wechat_session_max_age_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # Dev only (simulators enabled): the simulator's phone page may frame our H5 pages.
    wechat_sim_phone_origin: str | None = "http://127.0.0.1:8102"
    # Template id per event kind (see wechat/oa/templates.py for the kinds).
    wechat_template_ids: dict[str, str] = Field(
        default_factory=lambda: {
            "booking_made": "TPL_BOOKING_MADE",
            "booking_cancelled": "TPL_BOOKING_CANCELLED",
            "visit_reminder": "TPL_VISIT_REMINDER",
            "clinic_suspended": "TPL_CLINIC_SUSPENDED",
            "payment_due": "TPL_PAYMENT_DUE",
            "payment_received": "TPL_PAYMENT_RECEIVED",
            "refund_made": "TPL_REFUND_MADE",
            "report_ready": "TPL_REPORT_READY",
            "message_reply": "TPL_MESSAGE_REPLY",
        }
    )
    # The custom menu as WeChat's menu/create JSON ({"button": [...]}); H5 URLs may use
    # "{base}" for public_base_url.
    wechat_menu: dict[str, Any] = Field(
        default_factory=lambda: {
            "button": [
                {"type": "view", "name": "预约挂号", "url": "{base}/h5/booking"},
                {
                    "name": "我的",
                    "sub_button": [
                        {"type": "view", "name": "就诊卡", "url": "{base}/h5/cards"},
                        {"type": "view", "name": "缴费", "url": "{base}/h5/payments"},
                        {"type": "view", "name": "报告", "url": "{base}/h5/reports"},
                    ],
                },
                {
                    "name": "服务",
                    "sub_button": [
                        {"type": "click", "name": "医院信息", "key": "HOSPITAL_INFO"},
                        {"type": "click", "name": "联系我们", "key": "CONTACT"},
                    ],
                },
            ]
        }
    )

    @field_validator("hospital_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
            )
        return value

    @model_validator(mode="after")
    def _production_is_safe(self) -> Self:
        if self.env is Environment.production:
            self.check_production()
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.hospital_timezone)

    @property
    def json_logs(self) -> bool:
        if self.log_json is None:
            return self.env is Environment.production
        return self.log_json

    def outside_urls(self) -> dict[str, str]:
        """Base URLs of the outside systems, by setting name; later issues add theirs."""
        return {
            "wechat_api_base": self.wechat_api_base,
            "wechat_oauth_authorize_url": self.wechat_oauth_authorize_url,
        }

    def _wechat_problems(self) -> list[str]:
        """The simulator's well-known WeChat credentials are refused in production."""
        defaults = type(self).model_fields
        problems = []
        for name in ("wechat_appid", "wechat_appsecret", "wechat_token",
                     "wechat_encoding_aes_key"):
            value = getattr(self, name)
            default = defaults[name].default
            if isinstance(value, SecretStr):
                value, default = value.get_secret_value(), default.get_secret_value()
            if value == default:
                problems.append(f"FRONTDESK_{name.upper()}: set the Official Account's value")
        return problems

    def check_production(self) -> None:
        problems: list[str] = []
        if self.secret_key.get_secret_value() in {DEFAULT_SECRET, ""} or len(
            self.secret_key.get_secret_value()
        ) < 32:
            problems.append("FRONTDESK_SECRET_KEY: set a random secret of at least 32 characters")
        if self.is_sqlite:
            problems.append(
                "FRONTDESK_DATABASE_URL: production runs on PostgreSQL "
                "(postgresql+asyncpg://user@host/db), not SQLite"
            )
        if self.simulators_enabled:
            problems.append("FRONTDESK_SIMULATORS_ENABLED: set to false in production")
        problems.extend(self._wechat_problems())
        for name, url in self.outside_urls().items():
            if _is_loopback_url(url):
                problems.append(
                    f"FRONTDESK_{name.upper()}: points at a local simulator ({url}); "
                    "set the real endpoint"
                )
        if problems:
            raise SettingsError("refusing to start in production: " + "; ".join(problems))
