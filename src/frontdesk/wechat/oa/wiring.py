"""Build the OA adapter and the shared token manager from settings (composition root)."""

from __future__ import annotations

from typing import Any

import httpx

from frontdesk.core.settings import Settings
from frontdesk.wechat.oa.client import HttpWeChatPlatform
from frontdesk.wechat.oa.tokens import JsTicketManager, TokenManager


def build_platform(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> HttpWeChatPlatform:
    return HttpWeChatPlatform(
        base_url=settings.wechat_api_base,
        appid=settings.wechat_appid,
        appsecret=settings.wechat_appsecret.get_secret_value(),
        timeout_seconds=settings.wechat_http_timeout_seconds,
        transport=transport,
    )


def register(container: Any, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
    """Put ``services["wechat"]`` (the port), ``["wechat_tokens"]`` (the shared access
    token) and ``["wechat_js_tickets"]`` (the shared JS-SDK ticket) in place."""
    settings: Settings = container.settings
    platform = build_platform(settings, transport=transport)
    container.services["wechat"] = platform
    tokens = TokenManager(
        platform=platform,
        sessionmaker=container.db.sessionmaker,
        appid=settings.wechat_appid,
        refresh_margin_seconds=settings.wechat_token_refresh_margin_seconds,
    )
    container.services["wechat_tokens"] = tokens
    container.services["wechat_js_tickets"] = JsTicketManager(
        tokens=tokens, refresh_margin_seconds=settings.wechat_token_refresh_margin_seconds
    )
    container.add_closer(platform.aclose)
