"""Console pages for finance: reconciliation days, the day's report and differences, the
maker-checker resolution, XLSX/CSV exports with the page's numbers, the month summary; and
the reconciliation tile on the dashboard and panel on the integration-health page."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from openpyxl import Workbook
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.auth import client_ip, require_role
from frontdesk.console.dashboard import TileValue, register_dashboard_tile
from frontdesk.console.health import BAD, OK, WARN, Panel, PanelRow, register_health_panel
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core import audit
from frontdesk.core.clock import get_clock
from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import translate
from frontdesk.core.money import MoneyError, fen_to_yuan_text, parse_yuan
from frontdesk.reconciliation import service as recon
from frontdesk.reconciliation.errors import (
    ActionInvalid,
    AlreadyProposed,
    DifferenceNotFound,
    OwnProposal,
    ProposalNotFound,
    RunNotFound,
)
from frontdesk.reconciliation.schemas import CLASSES, TypeTotals
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.errors import request_locale

router = APIRouter(prefix="/console/reconciliation", include_in_schema=False)
Finance = Annotated[Principal, Depends(require_role(Role.finance, Role.admin))]
register_nav_item(
    "/console/reconciliation", "console.nav.reconciliation", {Role.finance, Role.admin}, order=320
)

STATUSES = ("open", "proposed", "auto_pending", "pending_other_day", "resolved", "auto_resolved")


def yuan(fen: int | None) -> str:
    return "" if fen is None else fen_to_yuan_text(fen)


def fee_yuan(milli_fen: int) -> str:
    """Milli-fen (0.00001 yuan) as yuan with five decimals, exact."""
    sign = "-" if milli_fen < 0 else ""
    whole, frac = divmod(abs(milli_fen), 100_000)
    return f"{sign}{whole}.{frac:05d}"


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(status_code=404) from exc


def _helpers() -> dict[str, Any]:
    return {"yuan": yuan, "fee_yuan": fee_yuan, "classes": CLASSES}


@router.get("")
async def days_page(
    principal: Finance, request: Request, session: SessionDep, notice: str = ""
) -> Response:
    runs = await recon.runs(session)
    alarms = await recon.alarms(session)
    today = get_clock().today()
    return render(
        request,
        "reconciliation/days.html",
        {
            "runs": runs,
            "alarms": alarms,
            "month": f"{today:%Y-%m}",
            "yesterday": date.fromordinal(today.toordinal() - 1),
            "notice": notice[:32],
            **_helpers(),
        },
        principal=principal,
    )


@router.post("/run")
async def run_day(
    principal: Finance,
    request: Request,
    session: SessionDep,
    day: Annotated[str, Form(max_length=10)],
) -> Response:
    """Queue a (re-)run of a past day; its result replaces the day's earlier one."""
    the_day = _day(day)
    if the_day >= get_clock().today():
        raise HTTPException(status_code=422, detail="only a past day can be reconciled")
    now = clock_now()
    await recon.queue_run(session, day=the_day, now=now)
    await audit.record(
        session,
        at=now,
        actor=principal.actor,
        action="reconciliation.run_requested",
        record_type="recon_run",
        record_id=the_day.isoformat(),
        ip=client_ip(request),
    )
    return RedirectResponse("/console/reconciliation?notice=queued", status_code=303)


async def _day_context(session: AsyncSession, the_day: date) -> dict[str, Any]:
    report = await recon.day_report(session, the_day)
    diffs = list(await recon.differences(session, day=the_day))
    proposals = await recon.proposals_for(session, [d.id for d in diffs])
    open_proposal = {p.difference_id: p for p in proposals if p.state == "proposed"}
    return {
        "day": the_day,
        "report": report,
        "differences": [d for d in diffs if d.resolved_by != recon.SYSTEM_ACTOR],
        "automatic": [d for d in diffs if d.resolved_by == recon.SYSTEM_ACTOR],
        "open_proposal": open_proposal,
        "history": proposals,
        "actions": recon.ACTIONS,
        **_helpers(),
    }


@router.get("/day/{day}")
async def day_page(
    principal: Finance,
    request: Request,
    session: SessionDep,
    day: str,
    error: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    try:
        context = await _day_context(session, _day(day))
    except RunNotFound as exc:
        raise HTTPException(status_code=404) from exc
    return render(
        request,
        "reconciliation/day.html",
        {**context, "error": error},
        principal=principal,
    )


def _back(day: date, error: str = "") -> RedirectResponse:
    suffix = f"?error={error}" if error else ""
    return RedirectResponse(
        f"/console/reconciliation/day/{day.isoformat()}{suffix}", status_code=303
    )


@router.post("/differences/{difference_id}/propose")
async def propose(
    principal: Finance,
    request: Request,
    session: SessionDep,
    difference_id: int,
    action: Annotated[str, Form(max_length=20)],
    reason: Annotated[str, Form(max_length=500)],
    amount: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    try:
        amount_fen = parse_yuan(amount) if amount.strip() else None
    except MoneyError:
        amount_fen = -1  # refused below, nothing written
    try:
        async with session.begin_nested():
            proposal = await recon.propose(
                session,
                difference_id=difference_id,
                action=action,
                reason=reason,
                actor=principal.actor,
                now=clock_now(),
                amount_fen=amount_fen,
                ip=client_ip(request),
            )
    except DifferenceNotFound as exc:
        raise HTTPException(status_code=404) from exc
    except (ActionInvalid, AlreadyProposed) as exc:
        row = await _difference_day(session, difference_id)
        return _back(row, exc.code)
    row = await _difference_day(session, proposal.difference_id)
    return _back(row)


async def _difference_day(session: AsyncSession, difference_id: int) -> date:
    day = await recon.difference_day(session, difference_id)
    if day is None:
        raise HTTPException(status_code=404)
    return day


@router.post("/proposals/{proposal_id}/{decision}")
async def decide(
    principal: Finance,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    proposal_id: int,
    decision: str,
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if decision not in ("approve", "reject"):
        raise HTTPException(status_code=404)
    ledger = container.services.get("ledger")
    if ledger is None:
        raise HTTPException(status_code=503, detail="the payments ledger is not configured")
    try:
        async with session.begin_nested():
            proposal = await recon.decide(
                session,
                proposal_id=proposal_id,
                approve=decision == "approve",
                actor=principal.actor,
                now=clock_now(),
                ledger=ledger,
                note=note,
                ip=client_ip(request),
            )
    except ProposalNotFound as exc:
        raise HTTPException(status_code=404) from exc
    except OwnProposal as exc:
        # The refusal's audit row must stay although the decision is refused.
        await audit.record(
            session,
            at=clock_now(),
            actor=principal.actor,
            action="reconciliation.approve",
            record_type="recon_proposal",
            record_id=proposal_id,
            ip=client_ip(request),
            outcome="denied",
            detail={"reason": "own_proposal"},
        )
        day = await _proposal_day(session, proposal_id)
        return _back(day, exc.code)
    except AlreadyProposed as exc:
        return _back(await _proposal_day(session, proposal_id), exc.code)
    return _back(await _difference_day(session, proposal.difference_id))


async def _proposal_day(session: AsyncSession, proposal_id: int) -> date:
    day = await recon.proposal_day(session, proposal_id)
    if day is None:
        raise HTTPException(status_code=404)
    return day


# --------------------------------------------------------------------------- exports


def _detail_rows(t: Any, items: Iterable[Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            t("recon.col.kind"),
            t("recon.col.out_trade_no"),
            t("recon.col.out_refund_no"),
            t("recon.col.transaction_id"),
            t("recon.col.trade_type"),
            t("recon.col.bill"),
            t("recon.col.ledger"),
            t("recon.col.his"),
            t("recon.col.fee"),
            t("recon.col.bill_at"),
            t("recon.col.class"),
        ]
    ]
    tz = get_clock().tz
    for i in items:
        rows.append(
            [
                t("recon.kind." + i.kind),
                i.out_trade_no,
                i.out_refund_no,
                i.transaction_id or "",
                i.trade_type,
                ("fen", i.bill_fen),
                ("fen", i.ledger_fen),
                ("fen", i.his_fen),
                ("fee", i.fee_milli_fen),
                i.bill_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if i.bill_at else "",
                t("recon.class." + i.diff_class) if i.diff_class else t("recon.matched"),
            ]
        )
    return rows


def _difference_rows(t: Any, diffs: Iterable[Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            "#",
            t("recon.col.class"),
            t("recon.col.reason"),
            t("recon.col.out_trade_no"),
            t("recon.col.out_refund_no"),
            t("recon.col.trade_type"),
            t("recon.col.bill"),
            t("recon.col.ledger"),
            t("recon.col.his"),
            t("recon.col.status"),
            t("recon.col.resolution"),
            t("recon.col.note"),
            t("recon.col.resolved_by"),
        ]
    ]
    for d in diffs:
        rows.append(
            [
                d.id,
                t("recon.class." + d.diff_class),
                t("recon.reason." + d.reason),
                d.out_trade_no,
                d.out_refund_no,
                d.trade_type,
                ("fen", d.bill_fen),
                ("fen", d.ledger_fen),
                ("fen", d.his_fen),
                t("recon.status." + d.status),
                t("recon.action." + d.resolution) if d.resolution else "",
                d.resolution_note or "",
                d.resolved_by or "",
            ]
        )
    return rows


def _report_rows(t: Any, report: recon.DayReport) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            t("recon.col.trade_type"),
            t("recon.col.pay_count"),
            t("recon.col.pay"),
            t("recon.col.refund_count"),
            t("recon.col.refund"),
            t("recon.col.fee"),
            t("recon.col.net"),
            t("recon.col.matched_count"),
            t("recon.col.matched"),
            t("recon.col.unmatched_count"),
            t("recon.col.unmatched"),
        ]
    ]
    entries: list[tuple[str, TypeTotals]] = [
        (r.trade_type, recon.sum_totals([r])) for r in report.rows
    ]
    entries.append((t("recon.total"), report.total))
    for name, x in entries:
        rows.append(
            [
                name,
                x.pay_count,
                ("fen", x.pay_fen),
                x.refund_count,
                ("fen", x.refund_fen),
                ("fee", x.fee_milli_fen),
                ("fee", x.net_milli_fen),
                x.matched_count,
                ("fen", x.matched_fen),
                x.unmatched_count,
                ("fen", x.unmatched_fen),
            ]
        )
    return rows


def _text(cell: Any) -> str:
    if isinstance(cell, tuple):
        kind, value = cell
        if value is None:
            return ""
        return yuan(value) if kind == "fen" else fee_yuan(value)
    return str(cell)


def _excel(cell: Any) -> Any:
    """Amounts as exact decimal numbers (yuan) so finance can add them up in Excel."""
    if isinstance(cell, tuple):
        kind, value = cell
        if value is None:
            return None
        return Decimal(value) / (100 if kind == "fen" else 100_000)
    return cell


def _csv(rows: Sequence[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        # A leading = + - @ would be a formula in a spreadsheet: quote it as text.
        writer.writerow(
            ["'" + v if v[:1] in ("=", "+", "@") else v for v in (_text(c) for c in row)]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _xlsx(sheets: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> bytes:
    book = Workbook(write_only=True)
    for title, rows in sheets:
        sheet = book.create_sheet(title=title[:31])
        for row in rows:
            sheet.append([_excel(c) for c in row])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@router.get("/day/{day}/export.{fmt}")
async def export(
    principal: Finance,
    request: Request,
    session: SessionDep,
    day: str,
    fmt: str,
    part: Annotated[str, Query(pattern="^(details|differences|report)$")] = "details",
) -> Response:
    the_day = _day(day)
    if fmt not in ("csv", "xlsx"):
        raise HTTPException(status_code=404)
    try:
        report = await recon.day_report(session, the_day)
    except RunNotFound as exc:
        raise HTTPException(status_code=404) from exc
    locale = request_locale(request)

    def t(key: str) -> str:
        return translate(key, locale)

    details = _detail_rows(t, await recon.items(session, the_day))
    diffs = _difference_rows(t, await recon.differences(session, day=the_day))
    summary = _report_rows(t, report)
    await audit.record(
        session,
        at=clock_now(),
        actor=principal.actor,
        action="reconciliation.export",
        record_type="recon_run",
        record_id=the_day.isoformat(),
        ip=client_ip(request),
        detail={"format": fmt, "part": part},
    )
    name = f"reconciliation-{the_day.isoformat()}"
    if fmt == "xlsx":
        body = _xlsx(
            [
                (t("recon.sheet.report"), summary),
                (t("recon.sheet.details"), details),
                (t("recon.sheet.differences"), diffs),
            ]
        )
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    else:
        body = _csv({"details": details, "differences": diffs, "report": summary}[part])
        media, name = "text/csv; charset=utf-8", f"{name}-{part}"
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
            "Cache-Control": "no-store",
        },
    )


# --------------------------------------------------------------------------- month


@router.get("/month/{month}")
async def month_page(
    principal: Finance, request: Request, session: SessionDep, month: str
) -> Response:
    try:
        parsed = datetime.strptime(month, "%Y-%m")  # noqa: DTZ007 - a calendar month, no time
    except ValueError as exc:
        raise HTTPException(status_code=404) from exc
    summary = await recon.month_summary(session, year=parsed.year, month=parsed.month)
    return render(
        request,
        "reconciliation/month.html",
        {"summary": summary, "month": month, "statuses": STATUSES, **_helpers()},
        principal=principal,
    )


# --------------------------------------------------------------------------- alerts


async def _tile(session: AsyncSession, container: Any) -> TileValue:
    alarms = await recon.alarms(session)
    if alarms.failed_days:
        return TileValue(str(alarms.unresolved), "recon.tile.failed")
    if alarms.unresolved:
        return TileValue(str(alarms.unresolved), "recon.tile.unresolved")
    return TileValue("0", "recon.tile.clear" if alarms.latest else "recon.tile.never")


async def _panel(session: AsyncSession, container: Any) -> Panel:
    alarms = await recon.alarms(session)
    latest = alarms.latest
    if latest is None:
        last_status, last_value = WARN, "—"
    else:
        last_status = BAD if latest.state == "failed" else WARN if latest.state == "waiting" else OK
        last_value = f"{latest.day_on.isoformat()} · {latest.state}"
        if latest.error_code:
            last_value += f" · {latest.error_code}: {(latest.error_detail or '')[:200]}"
    failed_status = BAD if alarms.failed_days else OK
    open_status = WARN if alarms.unresolved else OK
    rows = (
        PanelRow("recon.health.last_run", last_value, last_status),
        PanelRow("recon.health.failed_days", str(alarms.failed_days), failed_status),
        PanelRow("recon.health.unresolved", str(alarms.unresolved), open_status),
    )
    worst = (
        BAD
        if BAD in (last_status, failed_status)
        else WARN
        if WARN in (last_status, open_status)
        else OK
    )
    return Panel(rows=rows, status=worst)


register_dashboard_tile("reconciliation", _tile)
register_health_panel("reconciliation", _panel, title_key="recon.health.title")
