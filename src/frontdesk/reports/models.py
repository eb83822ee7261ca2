"""The local copy of reports: a short-lived cache of what the HIS said, never the record.

Rows live at most ``reports_cache_seconds`` (``expires_at``): reads ignore an expired row
and a recurring job deletes them, so patient data does not pile up on the front server.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, UTCDateTime


class CachedReport(Base):
    """One reviewed report of a card as the HIS listed it, with its body once fetched."""

    __tablename__ = "report_cache"

    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # lab | exam
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    department: Mapped[str] = mapped_column(String(100), nullable=False)
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    has_abnormal: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # The whole report (LabReport / ExamReport as JSON); None until someone opens it.
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    body_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        Index("ix_report_cache_card_no_reviewed_at", "card_no", "reviewed_at"),
        Index("ix_report_cache_expires_at", "expires_at"),
    )


class CachedCardList(Base):
    """When the list of a card's reports was last read from the HIS, and since which date."""

    __tablename__ = "report_card_list"

    card_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    since_on: Mapped[date] = mapped_column(Date, nullable=False)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class ReportNotice(Base):
    """One "report ready" message queued for one account: at most once per report and
    account, even if the HIS event or the job runs twice. Holds ids only."""

    __tablename__ = "report_notice"

    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class CachedLabItem(Base):
    """One item of a cached lab report, kept beside the body so a trend reads the rows of
    one item code instead of decoding every report of three years. Lives and dies with the
    report's body (same ``expires_at``)."""

    __tablename__ = "report_item_cache"

    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    code: Mapped[str] = mapped_column(String, nullable=False)
    name: Mapped[str] = mapped_column(String, nullable=False)
    result: Mapped[str] = mapped_column(String, nullable=False)
    unit: Mapped[str] = mapped_column(String, nullable=False)
    reference_range: Mapped[str] = mapped_column(String, nullable=False)
    abnormal: Mapped[str] = mapped_column(String(16), nullable=False)  # the HIS flag
    critical: Mapped[bool] = mapped_column(Boolean, nullable=False)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)

    __table_args__ = (Index("ix_report_item_cache_card_no_code", "card_no", "code"),)
