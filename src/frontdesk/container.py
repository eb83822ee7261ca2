"""The composition root: builds the real services of one process from settings.

Web routes and jobs get what they need from here; tests build one pointed at the
simulators. Later issues add their ports (HIS gateway, WeChat platform, WeChat Pay, SMS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from frontdesk.core.clock import Clock, set_clock
from frontdesk.core.database import Database
from frontdesk.core.settings import Settings


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    # Ports added by later issues live here under stable names ("his", "wechat", "pay", ...).
    services: dict[str, Any] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)

    def add_closer(self, closer: Any) -> None:
        """Register an ``async () -> None`` to run on shutdown (HTTP clients, pools)."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        await self.db.dispose()


def build_container(
    settings: Settings, *, clock: Clock | None = None, db: Database | None = None
) -> Container:
    clock = clock or Clock(settings.tz)
    set_clock(clock)
    db = db or Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        echo=settings.db_echo,
        pre_ping=settings.db_pool_pre_ping,
    )
    container = Container(settings=settings, db=db, clock=clock)
    _add_his(container)
    _add_sms(container)
    from frontdesk.wechat.oa import wiring as wechat_oa_wiring

    wechat_oa_wiring.register(container)
    _add_wechat_pay(container)
    _add_ledger(container)
    return container


def _add_ledger(container: Container) -> None:
    """``services["ledger"]``: reconciliation's view of our payments ledger (billing)."""
    from frontdesk.reconciliation.billing_ledger import BillingLedger

    container.services["ledger"] = BillingLedger()


def _add_his(container: Container) -> None:
    from frontdesk.his.bridge import HttpHisGateway

    settings = container.settings
    his = HttpHisGateway(
        base_url=settings.his_base_url,
        key_id=settings.his_key_id,
        secret=settings.his_secret.get_secret_value(),
        timeout_seconds=settings.his_timeout_seconds,
    )
    container.services["his"] = his
    container.add_closer(his.aclose)


def _add_sms(container: Container) -> None:
    from frontdesk.sms.aliyun import AliyunSms

    settings = container.settings
    sms = AliyunSms(
        base_url=settings.sms_api_base,
        access_key_id=settings.sms_access_key_id,
        access_key_secret=settings.sms_access_key_secret.get_secret_value(),
        sign_name=settings.sms_sign_name,
        template_code=settings.sms_template_code,
        timeout=settings.sms_timeout_seconds,
    )
    container.services["sms"] = sms
    container.add_closer(sms.aclose)


def _add_wechat_pay(container: Container) -> None:
    """``services["pay"]``: the WeChat Pay v3 adapter, when a merchant is configured.

    Built lazily on first use (key files are read then), so a process that never pays does
    not need them.
    """
    if not container.settings.wechatpay_mchid:
        return
    from frontdesk.wechat.pay.client import LazyWeChatPay

    pay = LazyWeChatPay(container.settings)
    container.services["pay"] = pay
    container.add_closer(pay.aclose)
