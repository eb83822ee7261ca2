"""A report as a PDF, for sharing with another doctor: drawn here with reportlab.

Chinese text needs a CJK font. By default the PDF uses ``STSong-Light``, one of the CJK
fonts every PDF reader must provide (the PDF standard's Adobe-GB1 collection), so no font
file is needed and the text stays searchable and copyable. A hospital that wants the glyphs
embedded sets ``reports_pdf_font_path`` to a TrueType font (e.g. Debian's
``fonts-wqy-microhei``), which is then subset into the file.

Marks are words ("偏高", "危急"), never colour alone; words come from the message catalog.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from frontdesk.accounts.schemas import BoundCard
from frontdesk.his.port import ExamReport, LabReport
from frontdesk.reports.values import Change, ChangeKind, Mark, mark_of

CID_FONT = "STSong-Light"

Translate = Callable[..., str]


@cache
def font_name(font_path: str = "") -> str:
    """Register the font once per process and return its name."""
    if font_path:
        name = "FrontdeskReportFont"
        subfont = 0
        pdfmetrics.registerFont(TTFont(name, font_path, subfontIndex=subfont))
        return name
    pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    return CID_FONT


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=font, fontSize=9.5, leading=13, wordWrap="CJK")
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontSize=16, leading=22, alignment=1),
        "hospital": ParagraphStyle("hospital", parent=base, fontSize=11, leading=15, alignment=1),
        "section": ParagraphStyle("section", parent=base, fontSize=11, leading=16, spaceBefore=6),
        "small": ParagraphStyle(
            "small", parent=base, fontSize=8, leading=11, textColor=colors.HexColor("#555555")
        ),
        "alert": ParagraphStyle(
            "alert",
            parent=base,
            fontSize=10.5,
            leading=15,
            textColor=colors.HexColor("#8b0000"),
            borderColor=colors.HexColor("#8b0000"),
            borderWidth=1,
            borderPadding=4,
            spaceBefore=4,
            spaceAfter=6,
        ),
    }


MARK_KEYS = {
    Mark.high: "report_mark_high",
    Mark.low: "report_mark_low",
    Mark.abnormal: "report_mark_abnormal",
    Mark.critical: "report_mark_critical",
    Mark.critical_high: "report_mark_critical_high",
    Mark.critical_low: "report_mark_critical_low",
}


def render_pdf(
    report: LabReport | ExamReport,
    *,
    card: BoundCard,
    changes: Mapping[str, Change],
    hospital: str,
    tz: ZoneInfo,
    generated_at: datetime,
    t: Translate,
    font_path: str = "",
) -> bytes:
    """The report as PDF bytes (A4), holder name masked as on the pages."""
    font = font_name(font_path)
    st = _styles(font)

    def p(text: str, style: str = "base") -> Paragraph:
        return Paragraph(escape(text), st[style])

    def when(at: datetime | None) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if at else "—"

    story: list[object] = [
        p(hospital, "hospital"),
        p(
            report.title
            + (
                " " + t("report_kind_lab")
                if isinstance(report, LabReport)
                else " " + t("report_kind_exam")
            ),
            "title",
        ),
        Spacer(1, 4 * mm),
    ]
    facts: list[tuple[str, str]] = [
        (t("report_holder"), card.holder_name_masked),
        (t("card_no"), card.card_no),
        (t("report_id"), report.report_id),
        (t("report_department"), report.requesting_department),
    ]
    if isinstance(report, LabReport):
        facts += [
            (t("report_specimen"), report.specimen),
            (t("report_diagnosis"), report.clinical_diagnosis or "—"),
            (t("report_sampled_at"), when(report.sampled_at)),
            (t("report_reported_at"), when(report.reported_at)),
            (t("report_reviewed_at"), when(report.reviewed_at)),
            (t("report_tester"), report.tester),
            (t("report_reviewer"), report.reviewer),
        ]
    else:
        facts += [
            (t("report_modality"), report.modality),
            (t("report_body_part"), report.body_part),
            (t("report_method"), report.method),
            (t("report_examined_at"), when(report.examined_at)),
            (t("report_reported_at"), when(report.reported_at)),
            (t("report_reviewed_at"), when(report.reviewed_at)),
            (t("report_reporting_doctor"), report.reporting_doctor),
            (t("report_reviewing_doctor"), report.reviewing_doctor),
        ]
    pairs = [facts[i : i + 2] for i in range(0, len(facts), 2)]
    grid = [
        [cell for label, value in row for cell in (p(label, "small"), p(value))]
        + ([] if len(row) == 2 else ["", ""])
        for row in pairs
    ]
    info = Table(grid, colWidths=[22 * mm, 63 * mm, 22 * mm, 63 * mm])
    info.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)])
    )
    story += [info, Spacer(1, 3 * mm)]
    if isinstance(report, LabReport):
        if any(i.critical for i in report.items):
            story.append(p(t("report_critical_notice"), "alert"))
        header = [
            p(t(k), "small")
            for k in (
                "report_item",
                "report_result",
                "report_flag",
                "report_unit",
                "report_range",
                "report_last_time",
            )
        ]
        rows: list[list[Any]] = [list(header)]
        for item in report.items:
            mark = mark_of(item)
            change = changes.get(item.code)
            rows.append(
                [
                    p(f"{item.name} ({item.code})"),
                    p(item.result or "—"),
                    p(t(MARK_KEYS[mark]) if mark in MARK_KEYS else ""),
                    p(item.unit or "—"),
                    p(item.reference_range or t("report_range_missing")),
                    p(_last_time(change, t)),
                ]
            )
        table = Table(
            rows, colWidths=[50 * mm, 22 * mm, 20 * mm, 20 * mm, 26 * mm, 32 * mm], repeatRows=1
        )
        style: list[Any] = [
            ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
            ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#cccccc")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        for n, item in enumerate(report.items, start=1):
            if mark_of(item) is not Mark.none:
                style.append(("BACKGROUND", (0, n), (-1, n), colors.HexColor("#fdecea")))
        table.setStyle(TableStyle(style))
        story.append(table)
    else:
        story += [
            p(t("report_findings"), "section"),
            p(report.findings or "—"),
            p(t("report_impression"), "section"),
            p(report.impression or "—"),
        ]
    story += [
        Spacer(1, 6 * mm),
        p(t("report_pdf_footer", at=when(generated_at)), "small"),
    ]
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=report.title,
        author=hospital,
        subject=report.report_id,
        creator="Frontdesk",
    )
    doc.build(story)  # type: ignore[arg-type]
    return out.getvalue()


def _last_time(change: Change | None, t: Translate) -> str:
    if change is None or change.kind is ChangeKind.first:
        return "—"
    if change.kind is ChangeKind.not_comparable:
        return t(
            "report_unit_changed_short", previous=change.previous_result, unit=change.previous_unit
        )
    arrow = {ChangeKind.up: "↑", ChangeKind.down: "↓"}.get(change.kind, "")
    return f"{change.previous_result} {arrow}".strip()
