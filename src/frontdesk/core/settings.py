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
DEMO_HIS_SECRET = "demo-his-bridge-secret-change-me"  # noqa: S105 - the demo HIS's key


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
    env: Environment = Environment.development  # development, test or production
    # signs sessions, links and codes; at least 32 random characters in production
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    # SQLite (sqlite+aiosqlite:///path) or PostgreSQL (postgresql+asyncpg://user@host/db)
    database_url: str = "sqlite+aiosqlite:///./var/frontdesk.db"
    # PostgreSQL connections kept per process (keep it small)
    db_pool_size: int = Field(default=8, ge=1, le=100)
    db_max_overflow: int = Field(default=4, ge=0, le=100)  # extra connections allowed under load
    # Test each pooled PostgreSQL connection before use. Off by default: on asyncpg it costs
    # three round trips per checkout (BEGIN, a ping, ROLLBACK), which at the booking rush
    # is more than a booking; a dead connection is detected on use and the pool refreshed.
    db_pool_pre_ping: bool = False
    db_echo: bool = False  # log every SQL statement
    log_level: str = "INFO"  # DEBUG, INFO, WARNING or ERROR
    log_json: bool | None = None  # None: JSON in production, readable otherwise
    max_body_bytes: int = Field(default=1_048_576, ge=1024)  # larger request bodies get 413
    # the address patients, WeChat and WeChat Pay reach this server at
    public_base_url: str = "http://127.0.0.1:8000"

    # --- the hospital ------------------------------------------------------------------
    hospital_name: str = "南京市第二医院"  # shown on pages and in messages
    hospital_timezone: str = "Asia/Shanghai"  # the hospital's calendar day (IANA name)

    # --- outbox and worker ---------------------------------------------------------------
    # how often an idle worker looks for due jobs
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    worker_batch_size: int = Field(default=10, ge=1, le=1000)  # jobs claimed at once
    worker_concurrency: int = Field(default=4, ge=1, le=256)  # jobs run at once per worker
    # a job whose worker died is taken over after this
    worker_lease_seconds: float = Field(default=300.0, gt=0)
    # a job running longer is stopped and retried
    worker_job_timeout_seconds: float = Field(default=120.0, gt=0)
    # attempts before a job becomes a dead letter
    worker_max_attempts: int = Field(default=8, ge=1, le=100)
    # first retry delay (doubles each attempt, with jitter)
    worker_backoff_base_seconds: float = Field(default=2.0, gt=0)
    worker_backoff_max_seconds: float = Field(default=3600.0, gt=0)  # longest retry delay
    # Finished jobs (and their attempt rows) are deleted after this many days; dead letters
    # stay until staff deal with them.
    worker_keep_done_days: int = Field(default=14, ge=1, le=3650)
    # Extra modules whose import registers job handlers (tests and plug-ins).
    worker_job_modules: list[str] = Field(default_factory=list)

    # --- simulators (dev and test only) ----------------------------------------------------
    # A production process must never talk to one; check_production() enforces it.
    simulators_enabled: bool = True

    # --- HIS bridge (issue 3) --------------------------------------------------------------
    # The hospital's bridge agent; the default is the demo HIS (`frontdesk his-sim`).
    his_base_url: str = "http://127.0.0.1:8101"
    his_key_id: str = "demo"  # key id the hospital issued to this front server
    his_secret: SecretStr = SecretStr(DEMO_HIS_SECRET)  # the HMAC key of the bridge
    his_timeout_seconds: float = Field(default=5.0, gt=0, le=120)  # timeout of one bridge call

    # --- patients and cards (issue 6) ------------------------------------------------------
    accounts_max_cards: int = Field(default=10, ge=1, le=50)  # cards one WeChat account may bind
    # The SMS step of binding; a hospital may switch it off (the console shows it is off).
    accounts_sms_enabled: bool = True
    # life of the texted binding code
    accounts_code_ttl_seconds: int = Field(default=300, ge=60, le=1800)
    accounts_max_code_attempts: int = Field(default=5, ge=1, le=10)  # wrong codes before it is void
    accounts_bind_attempts_per_hour: int = Field(default=10, ge=1)  # per account
    accounts_bind_attempts_per_card_per_hour: int = Field(default=5, ge=1)  # per card number
    # version of the privacy notice patients accept
    accounts_privacy_notice_version: str = "2026-11"

    # --- SMS (Alibaba Cloud SendSms; the default is `frontdesk sms-sim`) -------------------
    # SMS provider endpoint (production: https://dysmsapi.aliyuncs.com)
    sms_api_base: str = "http://127.0.0.1:8103"
    sms_access_key_id: str = "demo-sms-key"  # SMS provider AccessKey id
    # SMS provider AccessKey secret
    sms_access_key_secret: SecretStr = SecretStr("demo-sms-secret-change-me")
    sms_sign_name: str = "南京市第二医院"  # approved SMS signature (签名)
    sms_template_code: str = "SMS_000001"  # approved verification-code template
    sms_timeout_seconds: float = Field(default=5.0, gt=0, le=60)  # timeout of one SMS call
    # --- WeChat Official Account (issue 4, wechat/oa) ------------------------------------
    # Server API base (token, template, menu, sns); production: https://api.weixin.qq.com
    wechat_api_base: str = "http://127.0.0.1:8102"
    # The OAuth consent page the phone is sent to; production:
    # https://open.weixin.qq.com/connect/oauth2/authorize
    wechat_oauth_authorize_url: str = "http://127.0.0.1:8102/connect/oauth2/authorize"
    wechat_appid: str = "wx0000000000sim001"  # the Official Account's AppID
    # the Official Account's AppSecret
    wechat_appsecret: SecretStr = SecretStr("sim-appsecret-change-me")
    # the callback Token set in the WeChat admin console
    wechat_token: SecretStr = SecretStr("simtoken")
    # 43 characters, Base64 without the trailing "=" (32 bytes once decoded).
    wechat_encoding_aes_key: SecretStr = SecretStr("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    # message encryption mode of the callback
    wechat_callback_mode: Literal["plaintext", "compatible", "safe"] = "safe"
    # callbacks with older timestamps are refused
    wechat_callback_max_skew_seconds: int = Field(default=300, ge=10, le=3600)
    # larger callbacks are refused
    wechat_callback_max_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)
    # timeout of one WeChat API call
    wechat_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Refresh the shared access token this long before it expires.
    wechat_token_refresh_margin_seconds: int = Field(default=300, ge=0, le=3600)
    # life of a patient's H5 sign-in
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
            "hospital_notice": "TPL_HOSPITAL_NOTICE",
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

    # --- WeChat Pay API v3 (wechat/pay) ------------------------------------------------------
    # Production base: https://api.mch.weixin.qq.com; the default is the local simulator.
    wechatpay_api_base: str = "http://127.0.0.1:8102"
    wechatpay_mchid: str = ""  # empty: WeChat Pay not configured (no "pay" service)
    wechatpay_appid: str = ""  # the AppID payments are made under (usually the Official Account's)
    wechatpay_serial_no: str = ""  # merchant API certificate serial (hex)
    wechatpay_private_key_path: str = ""  # apiclient_key.pem
    wechatpay_private_key: SecretStr = SecretStr("")  # or the PEM itself
    wechatpay_apiv3_key: SecretStr = SecretStr("")  # 32 characters
    # "public_key": WeChat Pay public key + PUB_KEY_ID_…; "certificate": /v3/certificates.
    wechatpay_platform_mode: Literal["public_key", "certificate"] = "public_key"
    wechatpay_platform_public_key: str = ""  # PEM text or a file path
    wechatpay_platform_public_key_id: str = ""  # id of the WeChat Pay public key (PUB_KEY_ID_...)
    # where WeChat Pay sends notifications (public https)
    wechatpay_notify_url: str = "http://127.0.0.1:8000/wechat/pay/notify"
    wechatpay_refund_notify_url: str = ""  # empty: the one set in the merchant console
    # timeout of one WeChat Pay call
    wechatpay_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # query interval while a payment-code payer enters the password
    wechatpay_codepay_poll_seconds: float = Field(default=5.0, gt=0)
    # give up and reverse after this
    wechatpay_codepay_wait_seconds: float = Field(default=30.0, gt=0)
    # larger notifications are refused
    wechatpay_notify_max_bytes: int = Field(default=65_536, ge=1024)
    # The simulator (frontdesk wechat-sim): its keys and its notify retry time scale
    # (1.0 = the real 15 s … 6 h schedule; 0.01 = a hundred times faster).
    wechatpay_sim_keys_dir: str = "var/keys"
    # simulator only: speed of the notify retry schedule
    wechatpay_sim_time_scale: float = Field(default=1.0, gt=0)
    # --- staff console -------------------------------------------------------------------
    # staff sessions end after this much inactivity
    console_session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # and after this long in all
    console_session_absolute_hours: int = Field(default=12, ge=1, le=7 * 24)
    # failed sign-ins before an account locks
    console_lockout_attempts: int = Field(default=5, ge=1, le=100)
    console_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)  # how long it stays locked
    # The name authenticator apps show next to the account.
    console_totp_issuer: str = Field(default="Frontdesk", min_length=1, max_length=64)

    # --- booking and catalog (issue 7) ---------------------------------------------------
    # Booking opens this many days ahead at the release time (hospital local "HH:MM").
    booking_release_days: int = Field(default=7, ge=0, le=30)
    # The release time of each day's new slots, hospital local time.
    booking_release_time: str = Field(default="07:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # No booking of a slot that starts within this many minutes (cut-off).
    booking_cutoff_minutes: int = Field(default=30, ge=0, le=24 * 60)
    # Cancel until this hour (0-24, local) of the day before the visit; 24 = end of that day.
    booking_cancel_deadline_hour: int = Field(default=24, ge=0, le=24)
    booking_max_open_per_card: int = Field(default=3, ge=1, le=50)  # open bookings per card
    # Anti-scalping: at most this many cards of one account in the same clinic session.
    booking_max_cards_per_session: int = Field(default=2, ge=1, le=10)
    # Credit rule: this many no-shows (违约) within the window block booking for block_days.
    booking_no_show_limit: int = Field(default=3, ge=1, le=50)
    booking_no_show_window_days: int = Field(default=90, ge=1, le=3650)  # the window (days)
    booking_block_days: int = Field(default=90, ge=1, le=3650)  # how long a block lasts
    # The registration fee (issue 8): "at_check_in" (paid at the window, the paper's way;
    # nothing is paid online) or "at_booking" (booking holds the slot and the patient pays
    # the schedule's fee by WeChat Pay within the hold, see docs/billing.md).
    booking_fee_mode: Literal["at_check_in", "at_booking"] = "at_check_in"
    # at_booking: how long an unpaid booking holds its slot before it returns to the pool.
    booking_hold_minutes: int = Field(default=15, ge=1, le=120)
    booking_attempts_per_minute_account: int = Field(default=20, ge=1)  # booking attempts
    booking_attempts_per_minute_ip: int = Field(default=300, ge=1)  # booking attempts per IP
    booking_schedule_days: int = Field(default=14, ge=1, le=31)  # days a doctor's page shows
    # Schedule pages and "pool known empty" answers are served from memory this long.
    booking_cache_seconds: float = Field(default=3.0, ge=0, le=300)
    # Booking requests in flight per process before new ones get "busy" (503, Retry-After).
    # About 100 ms of work at ~2.5 ms of CPU per attempt: more would only queue.
    booking_max_in_flight: int = Field(default=32, ge=1, le=10_000)

    # --- messaging, hospital pages, news and notices (issue 10) ---------------------------
    # Photos on the message board and images in articles (checked by content; WebP, JPEG,
    # PNG, GIF). Kept under max_body_bytes so the upload itself is accepted.
    messaging_image_max_bytes: int = Field(default=512 * 1024, ge=1024)
    # Flooding: messages one account may leave on the board.
    messaging_posts_per_10_minutes: int = Field(default=5, ge=1)
    messaging_posts_per_day: int = Field(default=30, ge=1)  # and in a day
    # Customer service answers within this time; older unanswered messages raise an alert.
    messaging_reply_target_minutes: int = Field(default=240, ge=1)
    # Notice pushes are spread out to stay within WeChat's template-message rate.
    messaging_push_per_minute: int = Field(default=600, ge=1, le=100_000)
    # Department and doctor catalog read from the HIS is kept this long.
    messaging_catalog_cache_seconds: int = Field(default=300, ge=0)

    # --- reports (issue 9) -------------------------------------------------------------------
    # How many years of reviewed reports a card shows (the HIS keeps the legal record).
    reports_history_years: int = Field(default=3, ge=1, le=10)
    # How long a local copy of a report (list or body) may be used before asking the HIS
    # again; expired copies are deleted by a recurring job. 0: keep no copy at all.
    reports_cache_seconds: int = Field(default=900, ge=0, le=7 * 24 * 3600)
    # Hours after review before a report is shown or announced, per report type.
    reports_hold_hours: dict[str, int] = Field(default_factory=lambda: {"lab": 0, "exam": 0})
    # The signed PDF download link lives this long.
    reports_pdf_link_seconds: int = Field(default=300, ge=30, le=3600)
    # A TrueType font (.ttf/.ttc) to embed in PDFs; empty: the PDF standard's CJK font
    # STSong-Light, which needs no file (readers substitute a local Song typeface).
    reports_pdf_font_path: str = ""
    # Reports per page of the list.
    reports_page_size: int = Field(default=50, ge=10, le=500)
    # Report bodies fetched from the HIS at once when a trend needs many of them.
    reports_fetch_concurrency: int = Field(default=8, ge=1, le=32)

    # --- reconciliation (issue 11) ------------------------------------------------------
    # When the worker reconciles the previous hospital day ("daily HH:MM", hospital time).
    # WeChat publishes bills from 09:00 the next day; fetch after 10:00.
    reconciliation_schedule: str = "daily 10:30"
    # The bill is not published yet: try again after this many minutes.
    reconciliation_retry_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Stop retrying (the run fails, an alert shows) this many hours after the day ended.
    reconciliation_give_up_hours: int = Field(default=48, ge=1, le=24 * 90)
    # A one-sided movement this close to midnight waits for the adjacent day (cross-day)
    # instead of raising an alarm.
    reconciliation_cross_day_seconds: int = Field(default=600, ge=0, le=6 * 3600)
    # After the system asks WeChat again about a late notify, check the ledger this much later.
    reconciliation_recheck_minutes: int = Field(default=5, ge=1, le=24 * 60)
    # Where bills are streamed while they are parsed (empty: the system's temp directory).
    reconciliation_work_dir: str = ""

    @field_validator("reconciliation_schedule")
    @classmethod
    def _recon_schedule(cls, value: str) -> str:
        from frontdesk.core.scheduler import Schedule, ScheduleError

        try:
            Schedule(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc
        return value

    # --- payments (issue 8) --------------------------------------------------------------
    # A started payment can be paid for this long; then the WeChat order is closed.
    billing_payment_minutes: int = Field(default=15, ge=1, le=120)
    # Settlement attempts in the HIS (with backoff) before asking it whether it settled and,
    # if not, refunding the patient automatically.
    billing_settle_attempts: int = Field(default=6, ge=1, le=50)
    # What the QR code on a paper order sheet holds: "link" (a signed link that opens the
    # visit's pending orders in WeChat after sign-in, paid with JSAPI) or "native" (a WeChat
    # Native-pay code for the visit's self-pay share, paid by scanning it in WeChat).
    billing_paper_qr: Literal["link", "native"] = "link"
    # How long a paper QR link stays valid (a Native-pay code lasts billing_payment_minutes).
    billing_paper_link_hours: int = Field(default=72, ge=1, le=720)

    @field_validator("reports_hold_hours")
    @classmethod
    def _hold_hours(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {"lab", "exam"}
        if unknown:
            raise ValueError(f"report types are lab and exam, not {sorted(unknown)}")
        if any(not 0 <= hours <= 24 * 30 for hours in value.values()):
            raise ValueError("hold hours are between 0 and 720")
        return {"lab": 0, "exam": 0, **value}

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
            raise ValueError("use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db")
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
            "his_base_url": self.his_base_url,
            "sms_api_base": self.sms_api_base,
            "wechat_api_base": self.wechat_api_base,
            "wechat_oauth_authorize_url": self.wechat_oauth_authorize_url,
            "wechatpay_api_base": self.wechatpay_api_base,
            "wechatpay_notify_url": self.wechatpay_notify_url,
            "public_base_url": self.public_base_url,
        }

    def _wechat_problems(self) -> list[str]:
        """The simulator's well-known WeChat credentials are refused in production."""
        defaults = type(self).model_fields
        problems = []
        # The secrets are covered by the general demo-secret rule; the AppID is plain text.
        for name in ("wechat_appid",):
            value = getattr(self, name)
            default = defaults[name].default
            if value == default:
                problems.append(f"FRONTDESK_{name.upper()}: set the Official Account's value")
        return problems

    def check_production(self) -> None:
        problems: list[str] = []
        if (
            self.secret_key.get_secret_value() in {DEFAULT_SECRET, ""}
            or len(self.secret_key.get_secret_value()) < 32
        ):
            problems.append("FRONTDESK_SECRET_KEY: set a random secret of at least 32 characters")
        if self.is_sqlite:
            problems.append(
                "FRONTDESK_DATABASE_URL: production runs on PostgreSQL "
                "(postgresql+asyncpg://user@host/db), not SQLite"
            )
        if self.simulators_enabled:
            problems.append("FRONTDESK_SIMULATORS_ENABLED: set to false in production")
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if (
                name != "secret_key"
                and isinstance(value, SecretStr)
                and isinstance(field.default, SecretStr)
                and field.default.get_secret_value()  # a demo value, not "unset"
                and value.get_secret_value() == field.default.get_secret_value()
            ):
                problems.append(f"FRONTDESK_{name.upper()}: still the demo value; set the real one")
        problems.extend(self._wechat_problems())
        for name, url in self.outside_urls().items():
            if _is_loopback_url(url):
                problems.append(
                    f"FRONTDESK_{name.upper()}: points at a local simulator ({url}); "
                    "set the real endpoint"
                )
        if problems:
            raise SettingsError("refusing to start in production: " + "; ".join(problems))
