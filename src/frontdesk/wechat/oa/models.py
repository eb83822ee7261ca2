"""Official Account tables: follow state, keyword replies, received texts, template
messages and the shared access token."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime


class WeChatUser(Base):
    """Follow state per openid, kept from subscribe/unsubscribe events and 43004 answers."""

    __tablename__ = "wechat_user"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    following: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    followed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unfollowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The QR scene the user last followed or scanned with (qrscene_ prefix removed).
    last_scene: Mapped[str | None] = mapped_column(String(128), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class KeywordReply(Base):
    """An automatic answer to a text message; staff edit these in the console."""

    __tablename__ = "wechat_keyword_reply"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    keyword: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    # "exact": the whole message equals the keyword; "contains": the keyword appears in it.
    match: Mapped[str] = mapped_column(String(16), nullable=False, default="exact")
    reply: Mapped[str] = mapped_column(String(2000), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class WeChatTextMessage(Base):
    """A patient's text that no keyword answered: it belongs on the message board.

    The message-board issue reads rows with ``board_state = 'new'``.
    """

    __tablename__ = "wechat_text_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False)
    msg_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    board_state: Mapped[str] = mapped_column(String(16), nullable=False, default="new")

    __table_args__ = (Index("ix_wechat_text_message_openid", "openid", "received_at"),)


TEMPLATE_QUEUED, TEMPLATE_SENT, TEMPLATE_DELIVERED, TEMPLATE_FAILED = (
    "queued",
    "sent",
    "delivered",
    "failed",
)


class TemplateMessage(Base):
    """One template message from queueing to its delivery result."""

    __tablename__ = "wechat_template_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    openid: Mapped[str] = mapped_column(String(64), nullable=False)
    template_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # Sent as WeChat's client_msg_id so a retried send is delivered once.
    client_msg_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=TEMPLATE_QUEUED)
    msgid: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    errcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivery_status: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_wechat_template_message_state", "state", "created_at"),)


class WeChatAccessToken(Base):
    """The one global access token of an AppID, shared by every process.

    ``lease_until_at``/``lease_token`` make one process the refresher at a time.
    """

    __tablename__ = "wechat_access_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appid: Mapped[str] = mapped_column(String(64), nullable=False)
    access_token: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_until_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    refresh_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (UniqueConstraint("appid"),)


class AccountMenu(Base):
    """The custom menu as staff last saved it (WeChat's menu/create JSON); when there is
    none, the menu in settings is used. ``pushed_at`` says when it last reached WeChat."""

    __tablename__ = "wechat_account_menu"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    menu: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
