"""The WeChat simulator's ASGI app: the platform (``platform.py``), Pay (``pay.py``) and the
phone page, in one service (``frontdesk wechat-sim``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from frontdesk.sims.wechat_sim import pay, phone, platform
from frontdesk.sims.wechat_sim.platform import SimConfig, SimPlatform


def create_sim_app(
    config: SimConfig | None = None,
    *,
    callback_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The simulator; ``callback_transport`` lets tests push callbacks into an ASGI app."""
    sim = SimPlatform(config, callback_transport=callback_transport)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await sim.aclose()

    app = FastAPI(title="WeChat simulator", lifespan=lifespan)
    app.state.platform = sim
    app.include_router(platform.router)
    app.include_router(phone.router)
    app.mount(
        "/phone/static", StaticFiles(directory=str(phone.HERE / "static")), name="phone-static"
    )
    # WeChat Pay v3: the engine is installed by the caller (pay.install) or built from
    # settings on first use.
    app.include_router(pay.router)
    return app
