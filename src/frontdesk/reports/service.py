"""Reviewed lab and exam reports of a patient's cards, read from the HIS.

Rules:

- The HIS is the record. We show only what it lists as reviewed, for the last
  ``history_years`` years, and keep a local copy only for ``cache_seconds`` (then we ask
  again; a recurring job deletes expired copies). With ``cache_seconds = 0`` nothing is kept.
- A hospital may hold a report back for some hours after review, per report type: until
  then it is not listed, not opened, not in trends and not announced.
- A report is reached only through the caller's ``PatientScope``: a report of a card the
  caller has not bound is "not found", exactly like one that does not exist.
- Every list, view, trend and download writes an audit row (account, card, report, action)
  in the caller's transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.accounts.schemas import BoundCard, PatientScope
from frontdesk.core import audit
from frontdesk.his.port import (
    REPORT_BATCH_MAX,
    AbnormalFlag,
    ExamReport,
    HisGateway,
    HisRejected,
    HisUnavailable,
    LabItem,
    LabReport,
    ReportKind,
    ReportSummary,
)
from frontdesk.reports import repository as repo
from frontdesk.reports.errors import (
    ReportItemNotFound,
    ReportLinkExpired,
    ReportLinkInvalid,
    ReportNotFound,
    ReportsUnavailable,
)
from frontdesk.reports.schemas import (
    ItemTrend,
    OpenedReport,
    ReportFilter,
    ReportList,
    ReportPolicy,
)
from frontdesk.reports.values import (
    TrendPoint,
    changes_since_last_time,
    is_flagged,
    point_of,
    trend_from,
)

REPORT_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
ITEM_CODE = re.compile(r"^[A-Za-z0-9%#._+-]{1,32}$")

_LAB = TypeAdapter(LabReport)
_EXAM = TypeAdapter(ExamReport)


@dataclass(frozen=True)
class Caller:
    """Who is asking, for the audit log."""

    openid: str
    ip: str | None = None
    request_id: str | None = None

    @property
    def actor(self) -> str:
        return f"patient:{self.openid}"


# --------------------------------------------------------------------------- dates and holds


def history_start(today: date, years: int) -> date:
    """The first hospital date of the history shown: the same day ``years`` years ago."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def _start_at(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def released_at(kind: str, reviewed_at: datetime, policy: ReportPolicy) -> datetime:
    """When a report reviewed at ``reviewed_at`` may be shown and announced."""
    return reviewed_at + timedelta(hours=policy.hold_hours.get(kind, 0))


def _visible(
    kind: str, reviewed_at: datetime, since_at: datetime, policy: ReportPolicy, now: datetime
) -> bool:
    return reviewed_at >= since_at and released_at(kind, reviewed_at, policy) <= now


def _kind_of(report: LabReport | ExamReport) -> str:
    return ReportKind.lab.value if isinstance(report, LabReport) else ReportKind.exam.value


# --------------------------------------------------------------------------- HIS and cache


def _dump(report: LabReport | ExamReport) -> dict[str, Any]:
    if isinstance(report, LabReport):
        return {"kind": "lab", "report": _LAB.dump_python(report, mode="json")}
    return {"kind": "exam", "report": _EXAM.dump_python(report, mode="json")}


def _load(body: dict[str, Any]) -> LabReport | ExamReport:
    """A copy we wrote with ``_dump`` (already checked by the bridge when it came in), read
    back without validating again: a trend reads a few hundred of these per request."""
    r = body["report"]
    when = datetime.fromisoformat
    if body["kind"] == "lab":
        return LabReport(
            report_id=r["report_id"],
            card_no=r["card_no"],
            title=r["title"],
            specimen=r["specimen"],
            requesting_department=r["requesting_department"],
            clinical_diagnosis=r["clinical_diagnosis"],
            tester=r["tester"],
            reviewer=r["reviewer"],
            sampled_at=when(r["sampled_at"]),
            reported_at=when(r["reported_at"]),
            reviewed_at=when(r["reviewed_at"]),
            items=tuple(
                LabItem(
                    code=i["code"],
                    name=i["name"],
                    result=i["result"],
                    unit=i["unit"],
                    reference_range=i["reference_range"],
                    abnormal=AbnormalFlag(i["abnormal"]),
                    critical=bool(i["critical"]),
                )
                for i in r["items"]
            ),
        )
    return ExamReport(
        **{k: r[k] for k in _EXAM_TEXT},
        examined_at=when(r["examined_at"]),
        reported_at=when(r["reported_at"]),
        reviewed_at=when(r["reviewed_at"]),
    )


_EXAM_TEXT = (
    "report_id",
    "card_no",
    "title",
    "modality",
    "body_part",
    "method",
    "findings",
    "impression",
    "requesting_department",
    "reporting_doctor",
    "reviewing_doctor",
)


def _summary_row(s: ReportSummary) -> dict[str, Any]:
    return {
        "report_id": s.report_id,
        "card_no": s.card_no,
        "kind": s.kind.value,
        "title": s.title[:200],
        "department": s.department[:100],
        "reviewed_at": s.reviewed_at,
        "has_abnormal": s.has_abnormal,
    }


async def _summaries(
    session: AsyncSession,
    *,
    his: HisGateway,
    card_no: str,
    since: date,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
) -> list[ReportSummary]:
    """The card's reviewed reports since ``since``, newest first: from the local copy while
    it is fresh and covers ``since``, else from the HIS (and kept for ``cache_seconds``)."""
    since_at = _start_at(since, tz)
    if policy.cache_seconds > 0:
        fresh = await repo.fresh_list(session, card_no, now=now)
        if fresh is not None and fresh.since_on <= since:
            return [
                ReportSummary(
                    report_id=r.report_id,
                    card_no=r.card_no,
                    kind=ReportKind(r.kind),
                    title=r.title,
                    department=r.department,
                    reviewed_at=r.reviewed_at,
                    has_abnormal=r.has_abnormal,
                )
                for r in await repo.listed(session, card_no, since_at=since_at, now=now)
            ]
    try:
        found = await his.reports(card_no=card_no, since=since)
    except HisRejected as exc:
        if exc.code in {"card_not_found", "not_found"}:
            return []  # the HIS no longer knows the card: it has no reports to show
        raise ReportsUnavailable(exc.code) from exc
    except HisUnavailable as exc:
        raise ReportsUnavailable(exc.code) from exc
    # The HIS answered for this card only; anything else in the answer is dropped rather
    # than trusted (a misbehaving agent must not leak another card's reports).
    found = [s for s in found if s.card_no == card_no and s.reviewed_at >= since_at]
    found.sort(key=lambda s: (s.reviewed_at, s.report_id), reverse=True)
    if policy.cache_seconds > 0:
        await repo.replace_list(
            session,
            card_no,
            [_summary_row(s) for s in found],
            since_on=since,
            now=now,
            expires_at=now + timedelta(seconds=policy.cache_seconds),
        )
    return found


async def _fetch(his: HisGateway, report_id: str) -> LabReport | ExamReport | None:
    try:
        return await his.report(report_id)
    except HisRejected as exc:
        if exc.code in {"not_found", "invalid_request"}:
            return None
        raise ReportsUnavailable(exc.code) from exc
    except HisUnavailable as exc:
        raise ReportsUnavailable(exc.code) from exc


async def _fetch_many(
    his: HisGateway, report_ids: Sequence[str], *, policy: ReportPolicy
) -> list[LabReport | ExamReport]:
    """Bodies of many reports in as few bridge calls as the batch limit allows (a 3-year
    trend is ~3 calls, not ~225), ``fetch_concurrency`` calls at a time. Ids the HIS no
    longer has are simply absent."""
    chunks = [
        list(report_ids[i : i + REPORT_BATCH_MAX])
        for i in range(0, len(report_ids), REPORT_BATCH_MAX)
    ]
    gate = asyncio.Semaphore(policy.fetch_concurrency)

    async def one(chunk: list[str]) -> list[LabReport | ExamReport]:
        async with gate:
            try:
                return await his.report_bodies(chunk)
            except (HisRejected, HisUnavailable) as exc:
                raise ReportsUnavailable(exc.code) from exc

    return [body for found in await asyncio.gather(*(one(c) for c in chunks)) for body in found]


def _body_row(report: LabReport | ExamReport) -> dict[str, Any]:
    has_abnormal = isinstance(report, LabReport) and any(is_flagged(i) for i in report.items)
    return {
        "report_id": report.report_id,
        "card_no": report.card_no,
        "kind": _kind_of(report),
        "title": report.title[:200],
        "department": report.requesting_department[:100],
        "reviewed_at": report.reviewed_at,
        "has_abnormal": has_abnormal,
    }


def _item_rows(report: LabReport, expires_at: datetime) -> list[dict[str, Any]]:
    return [
        {
            "report_id": report.report_id,
            "position": n,
            "card_no": report.card_no,
            "code": i.code,
            "name": i.name,
            "result": i.result,
            "unit": i.unit,
            "reference_range": i.reference_range,
            "abnormal": i.abnormal.value,
            "critical": i.critical,
            "sampled_at": report.sampled_at,
            "expires_at": expires_at,
        }
        for n, i in enumerate(report.items)
    ]


async def _keep_body(
    session: AsyncSession,
    report: LabReport | ExamReport,
    *,
    policy: ReportPolicy,
    now: datetime,
) -> None:
    await _keep_bodies(session, [report], policy=policy, now=now)


async def _keep_bodies(
    session: AsyncSession,
    reports: Sequence[LabReport | ExamReport],
    *,
    policy: ReportPolicy,
    now: datetime,
) -> None:
    """Keep fetched bodies (and lab items) as local copies, all in a few statements."""
    if policy.cache_seconds <= 0 or not reports:
        return
    expires_at = now + timedelta(seconds=policy.cache_seconds)
    await repo.store_bodies(
        session,
        [{**_body_row(r), "body": _dump(r)} for r in reports],
        [row for r in reports if isinstance(r, LabReport) for row in _item_rows(r, expires_at)],
        expires_at=expires_at,
    )


async def _report(
    session: AsyncSession,
    *,
    his: HisGateway,
    scope: PatientScope,
    report_id: str,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
) -> tuple[BoundCard, LabReport | ExamReport]:
    """The report if the caller may see it now; else ``ReportNotFound`` (one answer for
    unknown, unreviewed, held, too old and someone else's)."""
    if not REPORT_ID.fullmatch(report_id or ""):
        raise ReportNotFound
    report: LabReport | ExamReport | None = None
    if policy.cache_seconds > 0:
        row = await repo.cached(session, report_id, now=now)
        if row is not None and row.card_no not in scope.card_nos:
            raise ReportNotFound  # no need to ask the HIS about someone else's report
        body = (await repo.bodies(session, [report_id], now=now)).get(report_id)
        if body is not None:
            report = _load(body)
    if report is None:
        report = await _fetch(his, report_id)
        if report is None:
            raise ReportNotFound
        if report.report_id != report_id:
            raise ReportsUnavailable("mismatched_report")
        if report.card_no in scope.card_nos:
            await _keep_body(session, report, policy=policy, now=now)
    card = next((c for c in scope.cards if c.card_no == report.card_no), None)
    if card is None:
        raise ReportNotFound
    since_at = _start_at(history_start(now.astimezone(tz).date(), policy.history_years), tz)
    if not _visible(_kind_of(report), report.reviewed_at, since_at, policy, now):
        raise ReportNotFound
    return card, report


async def _lab_history(
    session: AsyncSession,
    *,
    his: HisGateway,
    card_no: str,
    since: date,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
    before: LabReport | None = None,
) -> list[LabReport]:
    """The card's visible lab reports in the history window, bodies included, oldest first.

    Bodies not held locally are fetched from the HIS, at most ``fetch_concurrency`` at a
    time, and kept like any other copy. With ``before`` (for "changed since last time"),
    only reports reviewed before it are read, newest first, and reading stops as soon as
    every item of ``before`` has an earlier result: a page needs one HIS call per earlier
    report it looks at, not one per report of the last three years."""
    since_at = _start_at(since, tz)
    labs = [
        s
        for s in await _summaries(
            session, his=his, card_no=card_no, since=since, tz=tz, policy=policy, now=now
        )
        if s.kind is ReportKind.lab and _visible("lab", s.reviewed_at, since_at, policy, now)
    ]
    need: set[str] | None = None
    if before is not None:
        labs = [
            s
            for s in labs
            if s.report_id != before.report_id and s.reviewed_at <= before.reviewed_at
        ]
        need = {i.code for i in before.items}
    held = (
        await repo.bodies(session, [s.report_id for s in labs], now=now)
        if policy.cache_seconds > 0
        else {}
    )
    reports: list[LabReport] = []
    step = policy.fetch_concurrency if need is not None else max(len(labs), 1)
    for first in range(0, len(labs), step):
        chunk = labs[first : first + step]
        found: list[LabReport | ExamReport | None] = [
            _load(held[s.report_id]) for s in chunk if s.report_id in held
        ]
        missing = [s.report_id for s in chunk if s.report_id not in held]
        fetched = await _fetch_many(his, missing, policy=policy)
        await _keep_bodies(
            session,
            [r for r in fetched if isinstance(r, LabReport) and r.card_no == card_no],
            policy=policy,
            now=now,
        )
        for body in [*found, *fetched]:
            if isinstance(body, LabReport) and body.card_no == card_no:
                reports.append(body)
                if need is not None:
                    need -= {i.code for i in body.items}
        if need is not None and not need:
            break
    reports.sort(key=lambda r: (r.sampled_at, r.report_id))
    return reports


def _points(code: str, history: Sequence[LabReport]) -> list[TrendPoint]:
    return [
        point_of(r.report_id, r.sampled_at, i) for r in history for i in r.items if i.code == code
    ]


async def _ensure_lab_bodies(
    session: AsyncSession,
    *,
    his: HisGateway,
    card_no: str,
    since: date,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
) -> None:
    """Make sure every visible lab report of the card has a fresh body (and items) here,
    fetching the missing ones from the HIS, ``fetch_concurrency`` at a time."""
    since_at = _start_at(since, tz)
    labs = [
        s.report_id
        for s in await _summaries(
            session, his=his, card_no=card_no, since=since, tz=tz, policy=policy, now=now
        )
        if s.kind is ReportKind.lab and _visible("lab", s.reviewed_at, since_at, policy, now)
    ]
    held = await repo.fresh_body_ids(session, labs, now=now)
    missing = [rid for rid in labs if rid not in held]
    if not missing:
        return
    fetched = await _fetch_many(his, missing, policy=policy)
    await _keep_bodies(
        session,
        [r for r in fetched if isinstance(r, LabReport) and r.card_no == card_no],
        policy=policy,
        now=now,
    )


async def _audit(
    session: AsyncSession,
    *,
    caller: Caller,
    action: str,
    card: BoundCard,
    record_type: str,
    record_id: str | int,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        session,
        at=now,
        actor=caller.actor,
        action=action,
        record_type=record_type,
        record_id=record_id,
        card_id=card.card_id,
        ip=caller.ip,
        request_id=caller.request_id,
        detail={"card_no": card.card_no, **(detail or {})},
    )


# --------------------------------------------------------------------------- public


async def list_reports(
    session: AsyncSession,
    *,
    his: HisGateway,
    scope: PatientScope,
    caller: Caller,
    query: ReportFilter,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
) -> ReportList:
    """The active card's visible reports, newest first, filtered and paged; audited."""
    card = scope.require_active()
    today = now.astimezone(tz).date()
    since = history_start(today, policy.history_years)
    since_at = _start_at(since, tz)
    summaries = await _summaries(
        session, his=his, card_no=card.card_no, since=since, tz=tz, policy=policy, now=now
    )
    start_at = _start_at(query.start, tz) if query.start else None
    end_at = _start_at(query.end + timedelta(days=1), tz) if query.end else None
    shown = [
        s
        for s in summaries
        if _visible(s.kind.value, s.reviewed_at, since_at, policy, now)
        and (query.kind is None or s.kind.value == query.kind)
        and (start_at is None or s.reviewed_at >= start_at)
        and (end_at is None or s.reviewed_at < end_at)
    ]
    pages = max(1, math.ceil(len(shown) / policy.page_size))
    page = min(query.page, pages)
    first = (page - 1) * policy.page_size
    await _audit(
        session,
        caller=caller,
        action="report.list",
        card=card,
        record_type="card",
        record_id=card.card_id,
        now=now,
        detail={"shown": len(shown), "kind": query.kind or "all"},
    )
    return ReportList(
        card=card,
        since=since,
        items=tuple(shown[first : first + policy.page_size]),
        total=len(shown),
        page=page,
        pages=pages,
    )


async def open_report(
    session: AsyncSession,
    *,
    his: HisGateway,
    scope: PatientScope,
    caller: Caller,
    report_id: str,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
    action: str = "report.view",
) -> OpenedReport:
    """One report of one of the caller's cards, with "changed since last time" for lab
    items (compared by HIS item code with the card's previous result); audited."""
    card, report = await _report(
        session, his=his, scope=scope, report_id=report_id, tz=tz, policy=policy, now=now
    )
    changes = {}
    if isinstance(report, LabReport):
        since = history_start(now.astimezone(tz).date(), policy.history_years)
        history = await _lab_history(
            session,
            his=his,
            card_no=card.card_no,
            since=since,
            tz=tz,
            policy=policy,
            now=now,
            before=report,
        )
        changes = changes_since_last_time(report, history)
    await _audit(
        session,
        caller=caller,
        action=action,
        card=card,
        record_type="report",
        record_id=report.report_id,
        now=now,
        detail={"kind": _kind_of(report)},
    )
    return OpenedReport(card=card, report=report, changes=changes)


async def item_trend(
    session: AsyncSession,
    *,
    his: HisGateway,
    scope: PatientScope,
    caller: Caller,
    report_id: str,
    item_code: str,
    tz: ZoneInfo,
    policy: ReportPolicy,
    now: datetime,
) -> ItemTrend:
    """A lab item of a report across the card's history, matched by the HIS item code
    (names differ between analysers; codes do not); audited."""
    if not ITEM_CODE.fullmatch(item_code or ""):
        raise ReportItemNotFound
    card, report = await _report(
        session, his=his, scope=scope, report_id=report_id, tz=tz, policy=policy, now=now
    )
    if not isinstance(report, LabReport) or all(i.code != item_code for i in report.items):
        raise ReportItemNotFound
    since = history_start(now.astimezone(tz).date(), policy.history_years)
    here = [
        point_of(report.report_id, report.sampled_at, i)
        for i in report.items
        if i.code == item_code
    ][:1]
    if policy.cache_seconds > 0:
        # Bodies missing here are fetched (and their items kept); then the item's rows are
        # read by code, without decoding three years of report bodies.
        await _ensure_lab_bodies(
            session, his=his, card_no=card.card_no, since=since, tz=tz, policy=policy, now=now
        )
        since_at = _start_at(since, tz)
        rows = await repo.items_of(session, card.card_no, item_code, now=now)
        points = [
            point_of(
                row.CachedLabItem.report_id,
                row.CachedLabItem.sampled_at,
                LabItem(
                    code=row.CachedLabItem.code,
                    name=row.CachedLabItem.name,
                    result=row.CachedLabItem.result,
                    unit=row.CachedLabItem.unit,
                    reference_range=row.CachedLabItem.reference_range,
                    abnormal=AbnormalFlag(row.CachedLabItem.abnormal),
                    critical=row.CachedLabItem.critical,
                ),
            )
            for row in rows
            if _visible("lab", row.reviewed_at, since_at, policy, now)
        ]
        trend = trend_from(item_code, [*points, *here])
    else:
        history = await _lab_history(
            session, his=his, card_no=card.card_no, since=since, tz=tz, policy=policy, now=now
        )
        trend = trend_from(item_code, [*(p for p in _points(item_code, history)), *here])
    assert trend is not None  # the report itself has the item
    await _audit(
        session,
        caller=caller,
        action="report.trend",
        card=card,
        record_type="report",
        record_id=report.report_id,
        now=now,
        detail={"item_code": item_code, "points": len(trend.points)},
    )
    return ItemTrend(card=card, report=report, trend=trend, since=since)


# --------------------------------------------------------------------------- download links


def _link_mac(secret: str, openid: str, report_id: str, expires: int) -> str:
    message = f"report-pdf|{openid}|{report_id}|{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_download(
    *, secret: str, openid: str, report_id: str, now: datetime, ttl_seconds: int
) -> tuple[int, str]:
    """(expires, signature) of a download link for this account and report only."""
    expires = int(now.timestamp()) + ttl_seconds
    return expires, _link_mac(secret, openid, report_id, expires)


def check_download(
    *, secret: str, openid: str, report_id: str, expires: str, signature: str, now: datetime
) -> None:
    """Refuse a link we did not sign for this account and report, or whose time is up."""
    if not (expires.isdigit() and len(expires) <= 12 and re.fullmatch(r"[0-9a-f]{64}", signature)):
        raise ReportLinkInvalid
    expected = _link_mac(secret, openid, report_id, int(expires))
    if not hmac.compare_digest(expected, signature):
        raise ReportLinkInvalid
    if int(expires) <= now.timestamp():
        raise ReportLinkExpired


# --------------------------------------------------------------------------- report ready


@dataclass(frozen=True)
class Announcement:
    """What ``announce_ready`` did: queued for ``openids``; or not yet (held until
    ``not_before``); or nothing because the HIS no longer shows the report."""

    report: LabReport | ExamReport | None
    openids: tuple[str, ...] = ()
    not_before: datetime | None = None


async def announce_ready(
    session: AsyncSession,
    *,
    his: HisGateway,
    report_id: str,
    card_no: str,
    policy: ReportPolicy,
    now: datetime,
) -> Announcement:
    """Decide who is told that a report is ready: every account bound to the card that may
    be messaged, once per report and account, and not before the hold has passed. The
    caller queues the messages (``wechat.oa.templates``) for the returned accounts."""
    report = await _fetch(his, report_id)
    if report is None or report.card_no != card_no:
        return Announcement(report=None)
    release = released_at(_kind_of(report), report.reviewed_at, policy)
    if release > now:
        return Announcement(report=report, not_before=release)
    told = []
    for openid in await accounts.accounts_of_card_no(session, card_no=card_no):
        if await repo.claim_notice(session, report_id=report_id, openid=openid, now=now):
            told.append(openid)
    return Announcement(report=report, openids=tuple(told))


async def forget_card_list(session: AsyncSession, *, card_no: str) -> None:
    await repo.forget_list(session, card_no)


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    return await repo.purge(session, now=now)
