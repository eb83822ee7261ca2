"""Messaging tables: the message board, saved replies, uploaded images, hospital pages,
news and notices, and each account's notification preferences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime

THREAD_WAITING, THREAD_ANSWERED, THREAD_CLOSED = "waiting", "answered", "closed"
AUTHOR_PATIENT, AUTHOR_STAFF = "patient", "staff"


class BoardThread(Base):
    """One conversation on the message board between an account and the hospital.

    ``waiting_since_at`` is when the oldest patient message nobody has answered arrived
    (None once staff replied): the inbox sorts and alerts on it.
    """

    __tablename__ = "messaging_thread"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False)
    # The related card (an id of the caller's bindings, checked through the scope).
    card_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    subject: Mapped[str] = mapped_column(String(120), nullable=False)
    source: Mapped[str] = mapped_column(String(8), nullable=False, default="h5")  # h5 | chat
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=THREAD_WAITING)
    assigned_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    waiting_since_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Satisfaction 1-5, given by the patient once staff have replied.
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_messaging_thread_openid", "openid", "created_at"),
        Index("ix_messaging_thread_status", "status", "waiting_since_at"),
    )


class BoardPost(Base):
    """One message in a thread, from the patient or from staff. ``body`` is plain text,
    stored as written and escaped when shown."""

    __tablename__ = "messaging_post"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    thread_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    author: Mapped[str] = mapped_column(String(8), nullable=False)  # patient | staff
    staff_actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    image_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A chat text that landed here: its WeChat MsgId, so a redelivery lands once.
    chat_msg_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    template_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ReplyTemplate(Base):
    """A saved reply customer service can start from."""

    __tablename__ = "messaging_reply_template"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    body: Mapped[str] = mapped_column(String(2000), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class StoredImage(Base):
    """An uploaded image, checked by its bytes (not its name) and kept in the database so
    every web process serves the same file. ``token`` is the unguessable id in its URL."""

    __tablename__ = "messaging_image"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(48), nullable=False, unique=True)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)  # board | article
    # For board photos: the account that sent it (only it and staff may see it).
    owner_openid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_type: Mapped[str] = mapped_column(String(32), nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class HospitalPage(Base):
    """A block of the hospital's own information (introduction, transport, hours, ...),
    plain text edited by staff; ``key`` is one of ``hospital.PAGE_KEYS``."""

    __tablename__ = "messaging_hospital_page"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)


ARTICLE_DRAFT, ARTICLE_PUBLISHED = "draft", "published"


class Article(Base):
    """News or a notice. ``body_html`` is sanitized when saved (never trusted as typed)."""

    __tablename__ = "messaging_article"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # news | notice
    title: Mapped[str] = mapped_column(String(120), nullable=False)
    summary: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    body_html: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=ARTICLE_DRAFT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Push to followers: set once (guarded update), so a double click pushes once.
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    push_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (Index("ix_messaging_article_list", "status", "kind", "published_at"),)


class NotificationPreference(Base):
    """An account's choice for an optional kind of message (news, reminders)."""

    __tablename__ = "messaging_preference"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (UniqueConstraint("openid", "kind"),)
