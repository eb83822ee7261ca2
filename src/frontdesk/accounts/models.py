"""Visit cards, who has bound them, consent to the privacy notice, and pending bindings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime


class Card(Base):
    """A hospital visit card (就诊卡) as the HIS confirmed it. Holder details are kept only
    masked: the HIS is the record; we keep what the pages show."""

    __tablename__ = "card"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    card_type: Mapped[str] = mapped_column(String(32), nullable=False)
    holder_name_masked: Mapped[str] = mapped_column(String(64), nullable=False)
    id_number_masked: Mapped[str] = mapped_column(String(32), nullable=False)
    phone_masked: Mapped[str] = mapped_column(String(32), nullable=False)
    # active | invalid (the HIS voided it) | merged (into merged_into_card_no)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    merged_into_card_no: Mapped[str | None] = mapped_column(String(32), nullable=True)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class CardBinding(Base):
    """One WeChat account (openid) holding one card. Unbinding keeps the row (history)."""

    __tablename__ = "card_binding"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False)
    card_id: Mapped[int] = mapped_column(BigId, ForeignKey("card.id"), nullable=False)
    # self | parent | child | spouse | other
    relationship: Mapped[str] = mapped_column(String(16), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    unbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unbound_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        # A card is bound to an account at most once at a time...
        Index(
            "uq_card_binding_open",
            "openid",
            "card_id",
            unique=True,
            sqlite_where=text("unbound_at IS NULL"),
            postgresql_where=text("unbound_at IS NULL"),
        ),
        # ...and an account has at most one active card.
        Index(
            "uq_card_binding_active",
            "openid",
            unique=True,
            sqlite_where=text("is_active AND unbound_at IS NULL"),
            postgresql_where=text("is_active AND unbound_at IS NULL"),
        ),
        Index("ix_card_binding_card_id", "card_id"),
    )


class Consent(Base):
    """Acceptance of the privacy notice for health data (PIPL sensitive personal
    information), by version. Withdrawal is recorded, never deleted."""

    __tablename__ = "consent"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BindingChallenge(Base):
    """A binding waiting for the one-time code sent to the phone the HIS holds."""

    __tablename__ = "binding_challenge"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, unguessable
    openid: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    relationship: Mapped[str] = mapped_column(String(16), nullable=False)
    card_type: Mapped[str] = mapped_column(String(32), nullable=False)
    holder_name_masked: Mapped[str] = mapped_column(String(64), nullable=False)
    id_number_masked: Mapped[str] = mapped_column(String(32), nullable=False)
    phone_masked: Mapped[str] = mapped_column(String(32), nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
