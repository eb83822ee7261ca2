"""The WeChat simulator's ASGI app: the platform (``platform.py``), Pay (``pay.py``) and the
phone page, in one service (``frontdesk wechat-sim``)."""

from __future__ import annotations

from fastapi import FastAPI


def create_sim_app() -> FastAPI:
    app = FastAPI(title="WeChat simulator")
    # platform.router and pay.router are included here as they are built.
    return app
