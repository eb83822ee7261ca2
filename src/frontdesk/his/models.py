"""Frontdesk's own HIS-bridge table: where the worker is in the HIS event feed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, UTCDateTime


class HisFeedCursor(Base):
    """The last event cursor whose effects are committed. It moves in the same transaction
    as the handlers' changes, so after any crash the feed resumes exactly after the last
    event that took effect."""

    __tablename__ = "his_feed_cursor"

    feed: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    events_applied: Mapped[int] = mapped_column(nullable=False, default=0)
