"""What the reports domain takes in and gives out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from frontdesk.accounts.schemas import BoundCard
from frontdesk.his.port import ExamReport, LabReport, ReportSummary
from frontdesk.reports.values import Change, Trend


class ReportFilter(BaseModel):
    """The list's filter: a report type and a date range (hospital dates, inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lab", "exam"] | None = None
    start: date | None = None
    end: date | None = None
    page: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> ReportFilter:
        if self.start and self.end and self.start > self.end:
            raise ValueError("the start date is after the end date")
        return self


@dataclass(frozen=True)
class ReportPolicy:
    """The hospital's settings for reports (see ``Settings.reports_*``)."""

    history_years: int = 3
    cache_seconds: int = 900
    hold_hours: Mapping[str, int] = field(default_factory=lambda: {"lab": 0, "exam": 0})
    page_size: int = 50
    fetch_concurrency: int = 8

    @classmethod
    def from_settings(cls, settings: Any) -> ReportPolicy:
        return cls(
            history_years=settings.reports_history_years,
            cache_seconds=settings.reports_cache_seconds,
            hold_hours=dict(settings.reports_hold_hours),
            page_size=settings.reports_page_size,
            fetch_concurrency=settings.reports_fetch_concurrency,
        )


@dataclass(frozen=True)
class ReportList:
    card: BoundCard
    since: date  # the first hospital date of the history shown
    items: tuple[ReportSummary, ...]  # this page, newest first
    total: int  # after the filter
    page: int
    pages: int


@dataclass(frozen=True)
class OpenedReport:
    card: BoundCard
    report: LabReport | ExamReport
    # For lab reports: item code -> change since the card's previous result of that item.
    changes: Mapping[str, Change] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemTrend:
    card: BoundCard
    report: LabReport  # the report the trend was opened from
    trend: Trend
    since: date
