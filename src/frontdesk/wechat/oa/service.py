"""What the Official Account does with each inbound message and event (wechat.md §1.3).

``handle_inbound`` is called by the callback route inside the request's transaction, after
signatures are checked. It stores the message in the core inbox first (unique on MsgId, or
on the event's sender + time), so a message WeChat re-sends is acted on once; the answer of
the first delivery is kept with it and given again to a re-delivery. Everything here is a few
local statements, well inside WeChat's 5-second deadline; slow work goes to outbox jobs.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import inbox
from frontdesk.core.errors import Invalid
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.wechat.oa.models import (
    TEMPLATE_DELIVERED,
    TEMPLATE_FAILED,
    TEMPLATE_SENT,
    KeywordReply,
    TemplateMessage,
    WeChatTextMessage,
    WeChatUser,
)

log = logging.getLogger("frontdesk.wechat.oa")

INBOX_SOURCE = "wechat"
MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})
# Events we know; anything else is logged and ignored (no row written).
EVENT_TYPES = frozenset(
    {
        "subscribe",
        "unsubscribe",
        "scan",
        "location",
        "click",
        "view",
        "templatesendjobfinish",
        "subscribe_msg_popup_event",
        "subscribe_msg_change_event",
        "subscribe_msg_sent_event",
        "masssendjobfinish",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "view_miniprogram",
    }
)


@dataclass(frozen=True)
class Answer:
    """A passive reply: ``text`` as written (a keyword reply), or a catalog ``code``
    the route translates, or neither (answer "success": nothing to say)."""

    text: str | None = None
    code: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return self.text is None and self.code is None


NO_REPLY = Answer()


class UnknownMessage(Exception):
    """A MsgType or Event we do not know: ignored, logged, nothing stored."""


def dedupe_key(fields: dict[str, str]) -> str:
    """Inbox id: ``MsgId`` for messages; for events sender + CreateTime (WeChat's rule),
    narrowed by the event's own id so two different events in one second stay apart."""
    if fields.get("MsgType") != "event":
        return f"msg:{fields.get('MsgId', '')}"
    detail = "|".join(
        [fields.get("Event", "").lower(), fields.get("MsgID", ""), fields.get("EventKey", "")]
    )
    digest = hashlib.sha256(detail.encode("utf-8")).hexdigest()[:16]
    return f"ev:{fields.get('FromUserName', '')}:{fields.get('CreateTime', '')}:{digest}"


def classify(fields: dict[str, str]) -> str:
    """``text``, ``image``..., or ``event:<lower-case event>``; raises UnknownMessage."""
    msg_type = fields.get("MsgType", "")
    if msg_type == "event":
        event = fields.get("Event", "").lower()
        if event not in EVENT_TYPES:
            raise UnknownMessage(f"event {event!r}")
        return f"event:{event}"
    if msg_type not in MESSAGE_TYPES:
        raise UnknownMessage(f"MsgType {msg_type!r}")
    if not fields.get("MsgId", "").isdigit():
        raise UnknownMessage("message without a numeric MsgId")
    return msg_type


async def handle_inbound(
    session: AsyncSession, *, fields: dict[str, str], now: datetime
) -> tuple[Answer, bool]:
    """Act on one message; returns its answer and whether it was new (False: a re-delivery).

    The answer is decided first (reads only), then the message is stored in the inbox with
    that answer in one statement; only a new message goes on to change anything.
    """
    kind = classify(fields)
    key = dedupe_key(fields)
    answer = await _decide(session, kind=kind, fields=fields)
    new = await inbox.receive(
        session,
        source=INBOX_SOURCE,
        external_id=key,
        at=now,
        payload=dict(fields),
        result=_answer_to_result(answer),
    )
    if not new:
        stored = await inbox.get(session, source=INBOX_SOURCE, external_id=key)
        return (_answer_from_result(stored.result if stored else None), False)
    await _act(session, kind=kind, fields=fields, answer=answer, now=now)
    return answer, True


def _answer_to_result(answer: Answer) -> str:
    if answer.text is not None:
        return ("text:" + answer.text)[:2000]
    if answer.code is not None:
        return "code:" + answer.code + "".join(f"\x1f{k}={v}" for k, v in answer.params)
    return "none"


def _answer_from_result(result: str | None) -> Answer:
    if not result or result == "none":
        return NO_REPLY
    if result.startswith("text:"):
        return Answer(text=result[5:])
    if result.startswith("code:"):
        code, *params = result[5:].split("\x1f")
        pairs = tuple((k, v) for k, _, v in (p.partition("=") for p in params))
        return Answer(code=code, params=pairs)
    return NO_REPLY


async def _decide(session: AsyncSession, *, kind: str, fields: dict[str, str]) -> Answer:
    """The passive reply for a message (reads only: nothing is changed here)."""
    if kind == "text":
        reply = await find_keyword_reply(session, text=fields.get("Content", ""))
        return Answer(text=reply) if reply is not None else Answer(code="wechat_board_ack")
    if kind == "event:subscribe":
        return Answer(code="wechat_welcome")
    if kind == "event:scan":
        return Answer(code="wechat_scan_received")
    if kind == "event:click":
        reply = await find_keyword_reply(session, text=fields.get("EventKey", ""), exact_only=True)
        return Answer(text=reply) if reply else Answer(code="wechat_menu_unknown")
    # Media messages, VIEW, LOCATION and the other known events are kept in the inbox only.
    return NO_REPLY


async def _act(
    session: AsyncSession, *, kind: str, fields: dict[str, str], answer: Answer, now: datetime
) -> None:
    """The changes a new message causes (run once per message)."""
    openid = fields.get("FromUserName", "")
    if kind == "text" and answer.code == "wechat_board_ack":
        await _to_message_board(session, openid=openid, fields=fields, now=now)
    elif kind == "event:subscribe":
        scene = fields.get("EventKey", "").removeprefix("qrscene_") or None
        await set_following(session, openid=openid, following=True, now=now, scene=scene)
    elif kind == "event:unsubscribe":
        await set_following(session, openid=openid, following=False, now=now)
    elif kind == "event:scan":
        await set_following(
            session, openid=openid, following=True, now=now, scene=fields.get("EventKey", "")
        )
    elif kind == "event:templatesendjobfinish":
        await record_template_result(
            session, msgid=fields.get("MsgID", ""), status=fields.get("Status", ""), now=now
        )


async def _to_message_board(
    session: AsyncSession, *, openid: str, fields: dict[str, str], now: datetime
) -> None:
    """A text no keyword answered: a row the message-board issue picks up."""
    content = fields.get("Content", "")
    sent_at = datetime.fromtimestamp(int(fields.get("CreateTime", "0") or 0), now.tzinfo)
    await session.execute(
        insert_ignoring_conflict(
            session,
            WeChatTextMessage.__table__,
            {
                "openid": openid,
                "msg_id": fields.get("MsgId", ""),
                "content": content[:4000],
                "sent_at": sent_at,
                "received_at": now,
                "board_state": "new",
            },
            conflict_columns=["msg_id"],
        )
    )


# Built once: this runs for every text message (plain rows, no ORM objects, cached SQL).
_ENABLED_KEYWORDS = (
    select(KeywordReply.keyword, KeywordReply.match, KeywordReply.reply)
    .where(KeywordReply.enabled.is_(True))
    .order_by(KeywordReply.priority, KeywordReply.id)
)


async def find_keyword_reply(
    session: AsyncSession, *, text: str, exact_only: bool = False
) -> str | None:
    """The reply of the first enabled keyword matching ``text`` (exact before contains,
    then by priority)."""
    text = text.strip()
    if not text:
        return None
    rows = (await session.execute(_ENABLED_KEYWORDS)).all()
    for row in rows:
        if row.match == "exact" and row.keyword == text:
            return str(row.reply)
    if exact_only:
        return None
    for row in rows:
        if row.match == "contains" and row.keyword in text:
            return str(row.reply)
    return None


async def save_keyword_reply(
    session: AsyncSession,
    *,
    keyword: str,
    reply: str,
    match: str = "exact",
    enabled: bool = True,
    priority: int = 100,
    now: datetime,
) -> KeywordReply:
    """Create or change the reply of ``keyword`` (the console calls this)."""
    keyword = keyword.strip()
    if not keyword or len(keyword) > 64 or match not in {"exact", "contains"}:
        raise Invalid("keyword must be 1-64 characters; match exact or contains")
    row = (
        await session.execute(select(KeywordReply).where(KeywordReply.keyword == keyword))
    ).scalar_one_or_none()
    if row is None:
        row = KeywordReply(
            keyword=keyword,
            match=match,
            reply=reply,
            enabled=enabled,
            priority=priority,
            updated_at=now,
        )
        session.add(row)
    else:
        row.match, row.reply, row.enabled, row.priority, row.updated_at = (
            match,
            reply,
            enabled,
            priority,
            now,
        )
    await session.flush()
    return row


async def set_following(
    session: AsyncSession, *, openid: str, following: bool, now: datetime, scene: str | None = None
) -> None:
    """Record that ``openid`` follows (or no longer follows) the account."""
    values: dict[str, object] = {"following": following, "updated_at": now}
    if following:
        values["followed_at"] = now
    else:
        values["unfollowed_at"] = now
    if scene:
        values["last_scene"] = scene[:128]
    await session.execute(
        insert_ignoring_conflict(
            session,
            WeChatUser.__table__,
            {"openid": openid, **values},
            conflict_columns=["openid"],
        )
    )
    await session.execute(
        update(WeChatUser)
        .where(WeChatUser.openid == openid)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def is_following(session: AsyncSession, *, openid: str) -> bool:
    """True unless we know the user unfollowed (an unknown openid may follow: WeChat decides
    with 43004, which then marks the user)."""
    following = (
        await session.execute(select(WeChatUser.following).where(WeChatUser.openid == openid))
    ).scalar_one_or_none()
    return following is not False


async def record_template_result(
    session: AsyncSession, *, msgid: str, status: str, now: datetime
) -> bool:
    """TEMPLATESENDJOBFINISH: the final delivery result of a sent template message."""
    if not msgid.isdigit():
        return False
    state = TEMPLATE_DELIVERED if status == "success" else TEMPLATE_FAILED
    result = await session.execute(
        update(TemplateMessage)
        .where(TemplateMessage.msgid == int(msgid), TemplateMessage.state == TEMPLATE_SENT)
        .values(state=state, delivery_status=status[:64], finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        log.info("TEMPLATESENDJOBFINISH for unknown or finished msgid %s", msgid)
        return False
    return True
