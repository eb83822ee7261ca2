"""The WeChat simulator wired to our app both ways over ASGITransport (no sockets).

Our real ``HttpWeChatPlatform`` talks to the sim; the sim pushes callbacks into our app.
The app commits for real (``committed`` database), because the token manager and the
outbox need their own transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from frontdesk.container import Container
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.wechat_sim.app import create_sim_app
from frontdesk.sims.wechat_sim.platform import SimConfig, SimPlatform
from frontdesk.wechat.oa import jobs as _jobs  # noqa: F401 - registers the job handlers
from frontdesk.wechat.oa import wiring
from frontdesk.wechat.oa.client import HttpWeChatPlatform
from frontdesk.wechat.oa.tokens import TokenManager

FRONT = "http://testserver"


@dataclass
class WeChatSimEnv:
    sim_app: FastAPI
    sim: SimPlatform
    front_app: FastAPI
    front: httpx.AsyncClient  # a browser/phone talking to our app
    client: HttpWeChatPlatform  # our real adapter, pointed at the sim
    tokens: TokenManager
    container: Container

    async def aclose(self) -> None:
        await self.front.aclose()
        await self.client.aclose()
        await self.sim.aclose()


def build_wechat_env(container: Container, clock: FrozenClock, **config: Any) -> WeChatSimEnv:
    from frontdesk.web.app import create_app

    settings = container.settings
    front_app = create_app(settings, container=container)
    sim_config = SimConfig(
        appid=settings.wechat_appid,
        appsecret=settings.wechat_appsecret.get_secret_value(),
        token=settings.wechat_token.get_secret_value(),
        encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
        callback_url=f"{FRONT}/wechat/callback",
        front_base_url=FRONT,
        callback_mode=settings.wechat_callback_mode,
        **config,
    )
    sim_app = create_sim_app(sim_config, callback_transport=httpx.ASGITransport(app=front_app))
    sim: SimPlatform = sim_app.state.platform
    sim.clock = lambda: clock.now().timestamp()
    wiring.register(container, transport=httpx.ASGITransport(app=sim_app))
    front = httpx.AsyncClient(transport=httpx.ASGITransport(app=front_app), base_url=FRONT)
    return WeChatSimEnv(
        sim_app=sim_app,
        sim=sim,
        front_app=front_app,
        front=front,
        client=container.services["wechat"],
        tokens=container.services["wechat_tokens"],
        container=container,
    )
