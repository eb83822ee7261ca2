"""The custom menu: defined in settings (WeChat's menu/create JSON), pushed on demand."""

from __future__ import annotations

import json
from typing import Any

from frontdesk.core.settings import Settings
from frontdesk.wechat.oa.port import WeChatPlatform
from frontdesk.wechat.oa.tokens import TokenManager, call_with_token


def render_menu(settings: Settings, menu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The menu (staff's edited one, else the one in settings) with ``{base}`` replaced by
    the public base URL of the H5 pages."""
    text = json.dumps(menu if menu is not None else settings.wechat_menu, ensure_ascii=False)
    base = settings.public_base_url.rstrip("/")
    rendered: dict[str, Any] = json.loads(text.replace("{base}", base))
    return rendered


async def push_menu(
    *,
    settings: Settings,
    platform: WeChatPlatform,
    tokens: TokenManager,
    menu: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the menu on WeChat; returns what was sent. Raises the port's errors."""
    menu = render_menu(settings, menu)

    async def create(token: str) -> None:
        await platform.create_menu(token, menu)

    await call_with_token(tokens, create)
    return menu
