"""The WeChat Pay simulator and our real client wired together over ASGITransport.

Used by the ``pay_sim`` fixture (tests/conftest.py). The simulator and the client share the
test's frozen clock, and the client's "sleep" (codepay polling) advances that clock, so time
passes for both sides without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from frontdesk.core.clock import FrozenClock
from frontdesk.sims.wechat_sim.pay import create_pay_sim_app
from frontdesk.sims.wechat_sim.pay_state import PaySim, PaySimConfig
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.client import HttpWeChatPay, PayConfig
from frontdesk.wechat.pay.devkeys import KeySet

SIM_BASE = "http://wxpay-sim.test"
NOTIFY_URL = "http://testserver/wechat/pay/notify"


@dataclass
class PaySimRig:
    keys: KeySet
    sim: PaySim
    sim_app: FastAPI
    pay: HttpWeChatPay
    config: PayConfig
    http: httpx.AsyncClient

    def connect_notify(self, front_app: Any) -> None:
        """Deliver the simulator's notifications into the front server's ASGI app."""
        self.sim.notify_http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=front_app), base_url="http://testserver"
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.sim.notify_http is not None:
            await self.sim.notify_http.aclose()


def sim_config(keys: KeySet, *, mode: str = "public_key", **overrides: Any) -> PaySimConfig:
    return PaySimConfig(
        mchid=keys.mchid,
        appids=frozenset({keys.appid}),
        merchant_serial_no=keys.merchant_serial_no,
        merchant_public_key=keys.merchant_public_key,
        platform_key=keys.platform_key,
        platform_public_key_id=keys.platform_public_key_id,
        apiv3_key=keys.apiv3_key,
        mode=mode,
        platform_cert_pem=keys.platform_cert_pem,
        platform_cert_serial=keys.platform_cert_serial,
        public_base=SIM_BASE,
        time_scale=0.001,
        **overrides,
    )


def client_config(
    keys: KeySet, *, mode: str = "public_key", timeout_seconds: float = 10.0
) -> PayConfig:
    return PayConfig(
        api_base=SIM_BASE,
        mchid=keys.mchid,
        appid=keys.appid,
        serial_no=keys.merchant_serial_no,
        private_key=keys.merchant_key,
        apiv3_key=keys.apiv3_key.encode(),
        notify_url=NOTIFY_URL,
        platform_mode=mode,
        platform_public_key=(
            signing.load_public_key(keys.platform_public_pem) if mode == "public_key" else None
        ),
        platform_public_key_id=keys.platform_public_key_id if mode == "public_key" else None,
        codepay_poll_seconds=5.0,
        codepay_wait_seconds=30.0,
        timeout_seconds=timeout_seconds,
    )


def build_pay_rig(
    keys: KeySet,
    clock: FrozenClock,
    *,
    mode: str = "public_key",
    client_timeout_seconds: float = 10.0,
    **sim_overrides: Any,
) -> PaySimRig:
    sim = PaySim(sim_config(keys, mode=mode, **sim_overrides), now=clock.now)
    app = create_pay_sim_app(sim)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SIM_BASE)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds=seconds)

    config = client_config(keys, mode=mode, timeout_seconds=client_timeout_seconds)
    pay = HttpWeChatPay(config, http=http, now=clock.now, sleep=sleep)
    return PaySimRig(keys=keys, sim=sim, sim_app=app, pay=pay, config=config, http=http)
