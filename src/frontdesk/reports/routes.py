"""Patient pages for reports: the list, a lab or exam report, an item's trend, the PDF.

Presentation only: every rule (scope, hold, history window, cache, audit) is in
``reports.service``. Every route takes ``PatientScopeDep``; a report of a card the caller
has not bound is "not found", like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import translate
from frontdesk.his.port import LabReport
from frontdesk.reports import service
from frontdesk.reports.chart import trend_svg
from frontdesk.reports.pdf import render_pdf
from frontdesk.reports.schemas import ReportFilter, ReportPolicy
from frontdesk.reports.values import Change, ChangeKind, Mark, TrendPoint, mark_of
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.errors import request_locale
from frontdesk.web.patient import PatientScopeDep, render

router = APIRouter(prefix="/h5/reports", include_in_schema=False)

MARK_SYMBOLS = {
    Mark.high: "↑",
    Mark.low: "↓",
    Mark.abnormal: "*",
    Mark.critical: "!!",
    Mark.critical_high: "!!↑",
    Mark.critical_low: "!!↓",
}


def _caller(request: Request, openid: str) -> service.Caller:
    return service.Caller(
        openid=openid,
        ip=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )


def _policy(request: Request) -> ReportPolicy:
    return ReportPolicy.from_settings(request.app.state.settings)


def _local(request: Request) -> Any:
    tz = request.app.state.settings.tz

    def fmt(at: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
        return at.astimezone(tz).strftime(pattern) if at else "—"

    return fmt


def _trend_url(report_id: str, code: str) -> str:
    return f"/h5/reports/{report_id}/trend/{quote(code, safe='')}"


def _mark_view(mark: Mark) -> dict[str, str]:
    return {"key": mark.value, "symbol": MARK_SYMBOLS.get(mark, "")}


# --------------------------------------------------------------------------- list


def _read_filter(request: Request) -> tuple[ReportFilter | None, dict[str, str]]:
    raw = {
        k: request.query_params.get(k, "").strip()[:32] for k in ("kind", "start", "end", "page")
    }
    values: dict[str, Any] = {
        "kind": raw["kind"] if raw["kind"] not in {"", "all"} else None,
        "start": raw["start"] or None,
        "end": raw["end"] or None,
        "page": raw["page"] or 1,
    }
    try:
        return ReportFilter.model_validate(values), raw
    except ValidationError:
        return None, raw


@router.get("")
async def report_list(
    request: Request, scope: PatientScopeDep, session: SessionDep, container: ContainerDep
) -> Response:
    query, raw = _read_filter(request)
    if query is None:
        # A bad filter changes nothing: the page says so, and nothing is read or audited.
        return render(
            request,
            "reports/list.html",
            {"listing": None, "active": scope.active, "raw": raw, "error": "report_filter_invalid"},
            status=422,
            openid=scope.openid,
        )
    if scope.active is None:
        return render(
            request,
            "reports/list.html",
            {"listing": None, "active": None, "raw": raw, "error": None},
            openid=scope.openid,
        )
    listing = await service.list_reports(
        session,
        his=container.services["his"],
        scope=scope,
        caller=_caller(request, scope.openid),
        query=query,
        tz=request.app.state.settings.tz,
        policy=_policy(request),
        now=clock_now(),
    )

    def page_url(page: int) -> str:
        params = {k: v for k, v in raw.items() if v and k != "page"}
        return "/h5/reports?" + urlencode({**params, "page": page})

    return render(
        request,
        "reports/list.html",
        {
            "listing": listing,
            "active": listing.card,
            "raw": raw,
            "error": None,
            "local": _local(request),
            "page_url": page_url,
            "today": clock_now().astimezone(request.app.state.settings.tz).date().isoformat(),
            "min_date": listing.since.isoformat(),
        },
        openid=scope.openid,
    )


# --------------------------------------------------------------------------- one report


def _change_view(change: Change | None) -> dict[str, Any] | None:
    if change is None or change.kind is ChangeKind.first:
        return None
    return {
        "kind": change.kind.value,
        "changed": change.changed,
        "flag_changed": change.flag_changed,
        "range_changed": change.range_changed,
        "previous": change.previous_result,
        "previous_unit": change.previous_unit,
        "symbol": {"up": "↑", "down": "↓", "same": "=", "different": "≠"}.get(
            change.kind.value, ""
        ),
    }


@router.get("/{report_id}")
async def report_page(
    request: Request,
    report_id: str,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    settings = request.app.state.settings
    now = clock_now()
    opened = await service.open_report(
        session,
        his=container.services["his"],
        scope=scope,
        caller=_caller(request, scope.openid),
        report_id=report_id,
        tz=settings.tz,
        policy=_policy(request),
        now=now,
    )
    expires, signature = service.sign_download(
        secret=settings.secret_key.get_secret_value(),
        openid=scope.openid,
        report_id=opened.report.report_id,
        now=now,
        ttl_seconds=settings.reports_pdf_link_seconds,
    )
    pdf_url = f"/h5/reports/{opened.report.report_id}/pdf?" + urlencode(
        {"expires": expires, "signature": signature}
    )
    context: dict[str, Any] = {
        "card": opened.card,
        "report": opened.report,
        "local": _local(request),
        "pdf_url": pdf_url,
        "pdf_minutes": max(1, settings.reports_pdf_link_seconds // 60),
    }
    if isinstance(opened.report, LabReport):
        items = [
            {
                "item": item,
                "mark": _mark_view(mark_of(item)),
                "change": _change_view(opened.changes.get(item.code)),
                "trend_url": _trend_url(opened.report.report_id, item.code),
            }
            for item in opened.report.items
        ]
        context |= {
            "items": items,
            "critical": any(i.critical for i in opened.report.items),
            "flagged": sum(1 for i in opened.report.items if mark_of(i) is not Mark.none),
        }
        return render(request, "reports/lab.html", context, openid=scope.openid)
    return render(request, "reports/exam.html", context, openid=scope.openid)


# --------------------------------------------------------------------------- trend


@router.get("/{report_id}/trend/{item_code}")
async def trend_page(
    request: Request,
    report_id: str,
    item_code: str,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    settings = request.app.state.settings
    locale = request_locale(request)
    found = await service.item_trend(
        session,
        his=container.services["his"],
        scope=scope,
        caller=_caller(request, scope.openid),
        report_id=report_id,
        item_code=item_code,
        tz=settings.tz,
        policy=_policy(request),
        now=clock_now(),
    )
    local = _local(request)
    trend = found.trend

    def says(p: TrendPoint) -> str:
        mark = "" if p.mark is Mark.none else " " + translate(f"report_mark_{p.mark.value}", locale)
        return f"{local(p.at, '%Y-%m-%d')} {p.result.text} {p.unit}{mark}"

    charts = []
    for n, (unit, points) in enumerate(trend.series()):
        svg = trend_svg(
            points,
            tz=settings.tz,
            labels={
                "title": f"{trend.name} ({unit})" if unit else trend.name,
                "desc": translate(
                    "report_trend_desc",
                    locale,
                    n=len(points),
                    first=local(points[0].at, "%Y-%m-%d"),
                    last=local(points[-1].at, "%Y-%m-%d"),
                ),
                "range_changed": translate("report_range_changed_short", locale),
            },
            point_label={p.report_id: says(p) for p in points},
            chart_id=f"chart{n}",
        )
        charts.append({"unit": unit, "svg": svg, "count": len(points)})
    changed = {id(p) for p in trend.range_changes}
    rows = [
        {
            "point": p,
            "mark": _mark_view(p.mark),
            "changed": id(p) in changed,
            "current": p.report_id == found.report.report_id,
        }
        for p in reversed(trend.points)
    ]
    return render(
        request,
        "reports/trend.html",
        {
            "card": found.card,
            "report": found.report,
            "trend": trend,
            "charts": charts,
            "rows": rows,
            "since": found.since,
            "units_changed": len(trend.units) > 1,
            "ranges_changed": bool(trend.range_changes),
            "local": local,
        },
        openid=scope.openid,
    )


# --------------------------------------------------------------------------- PDF


@router.get("/{report_id}/pdf")
async def report_pdf(
    request: Request,
    report_id: str,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    settings = request.app.state.settings
    now = clock_now()
    service.check_download(
        secret=settings.secret_key.get_secret_value(),
        openid=scope.openid,
        report_id=report_id,
        expires=request.query_params.get("expires", "")[:16],
        signature=request.query_params.get("signature", "")[:80],
        now=now,
    )
    opened = await service.open_report(
        session,
        his=container.services["his"],
        scope=scope,
        caller=_caller(request, scope.openid),
        report_id=report_id,
        tz=settings.tz,
        policy=_policy(request),
        now=now,
        action="report.download",
    )
    locale = request_locale(request)
    content = render_pdf(
        opened.report,
        card=opened.card,
        changes=opened.changes,
        hospital=settings.hospital_name,
        tz=settings.tz,
        generated_at=now,
        t=lambda key, **kw: translate(key, locale, **kw),
        font_path=settings.reports_pdf_font_path,
    )
    day = opened.report.reviewed_at.astimezone(settings.tz).date()
    filename = f"report-{opened.report.report_id}-{day:%Y%m%d}.pdf"
    return Response(
        content,
        media_type="application/pdf",
        headers={
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
