"""Staff edits of the Official Account: keyword replies and the custom menu.

The keyword replies themselves are matched in ``service`` (``find_keyword_reply``); this
module lists them and keeps the menu staff saved, checked against WeChat's rules before it
is stored, so a push cannot fail on a malformed menu.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.errors import Invalid
from frontdesk.wechat.oa.models import AccountMenu, KeywordReply


class MenuInvalid(Invalid):
    code = "wechat_menu_invalid"


async def keyword_replies(session: AsyncSession) -> list[KeywordReply]:
    rows = await session.execute(
        select(KeywordReply).order_by(KeywordReply.priority, KeywordReply.keyword)
    )
    return list(rows.scalars())


def parse_menu(text: str) -> dict[str, Any]:
    """WeChat's menu/create JSON, checked: 1-3 buttons, at most 5 sub-buttons each, names
    of at most 16/60 bytes, ``click`` with a key, ``view`` with an http(s) or ``{base}`` URL."""
    try:
        menu = json.loads(text)
    except ValueError as exc:
        raise MenuInvalid(reason="json") from exc
    buttons = menu.get("button") if isinstance(menu, dict) else None
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise MenuInvalid(reason="buttons")
    for button in buttons:
        if not isinstance(button, dict) or not str(button.get("name", "")).strip():
            raise MenuInvalid(reason="name")
        if len(str(button["name"]).encode()) > 16:
            raise MenuInvalid(reason="name")
        subs = button.get("sub_button")
        items = subs if subs else [button]
        if subs is not None and (not isinstance(subs, list) or len(subs) > 5):
            raise MenuInvalid(reason="sub_button")
        for item in items:
            _check_item(item)
    return dict(menu)


def _check_item(item: Any) -> None:
    if not isinstance(item, dict) or not str(item.get("name", "")).strip():
        raise MenuInvalid(reason="name")
    if len(str(item["name"]).encode()) > 60:
        raise MenuInvalid(reason="name")
    kind = item.get("type")
    if kind == "click":
        if not str(item.get("key", "")).strip() or len(str(item["key"]).encode()) > 128:
            raise MenuInvalid(reason="key")
    elif kind == "view":
        url = str(item.get("url", ""))
        if not url.startswith(("https://", "http://", "{base}/")) or len(url) > 1000:
            raise MenuInvalid(reason="url")
    else:
        raise MenuInvalid(reason="type")


async def saved_menu(session: AsyncSession) -> AccountMenu | None:
    return (
        await session.execute(select(AccountMenu).order_by(AccountMenu.id.desc()).limit(1))
    ).scalar_one_or_none()


async def save_menu(
    session: AsyncSession, *, menu: dict[str, Any], staff_actor: str, now: datetime
) -> AccountMenu:
    row = AccountMenu(menu=menu, updated_at=now, updated_by=staff_actor)
    session.add(row)
    await session.flush()
    return row
