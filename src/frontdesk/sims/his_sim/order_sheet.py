"""The demo HIS's printed order sheet (缴费单) of a visit, with the payment QR code the front
server issues for it (``POST /front/v1/paper-qr``, signed with the bridge's key as the HIS
would). ``/operator/sheet?card_no=`` lists the card's visits; with ``&visit_no=`` it is the
sheet of that visit: patient (masked), orders with their items and amounts, and the QR code
— or the front server's refusal, printed as such.
"""

from __future__ import annotations

import html
import json
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from frontdesk.core.clock import now as clock_now
from frontdesk.his import signing
from frontdesk.sims.his_sim import models as m

PAPER_QR_PATH = "/front/v1/paper-qr"

_STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:48rem}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;padding:.3rem;text-align:left}
.qr{float:right;text-align:center;margin-left:1rem}.qr svg{width:12rem;height:12rem}
.muted{color:#666}@media print{a{display:none}}
</style>"""


def _yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def _mask(name: str) -> str:
    return name[0] + "*" * (len(name) - 2) + name[-1] if len(name) > 2 else name[0] + "*"


async def ask_front_for_qr(state: Any, *, card_no: str, visit_no: str) -> dict[str, Any]:
    """Call the front server's paper QR endpoint, signed like a bridge call."""
    if not state.front_base_url:
        return {"code": "front_not_configured", "message": "no front server URL configured"}
    body = json.dumps({"card_no": card_no, "visit_no": visit_no}).encode()
    key_id = state.front_key_id or next(iter(state.keys))
    secret = state.keys.get(key_id, "")
    headers = signing.signed_headers(
        key_id=key_id,
        secret=secret,
        method="POST",
        path=PAPER_QR_PATH,
        query="",
        body=body,
        unix_time=int(clock_now().timestamp()),
    ).as_dict()
    try:
        async with httpx.AsyncClient(
            base_url=state.front_base_url, transport=state.front_transport, timeout=5.0
        ) as http:
            answer = await http.post(
                PAPER_QR_PATH,
                content=body,
                headers={**headers, "Content-Type": "application/json"},
            )
    except httpx.HTTPError as exc:
        return {"code": "front_unreachable", "message": str(exc)}
    try:
        data: dict[str, Any] = answer.json()
    except ValueError:
        return {"code": "front_malformed", "message": f"HTTP {answer.status_code}"}
    return data


def order_sheet_router() -> APIRouter:
    r = APIRouter(prefix="/operator", include_in_schema=False)

    @r.get("/sheet", response_class=HTMLResponse)
    async def sheet(request: Request, card_no: str = "", visit_no: str = "") -> HTMLResponse:
        state = request.app.state.his_sim
        card_no, visit_no = card_no.strip()[:20], visit_no.strip()[:32]
        async with state.sessionmaker() as session:
            holder = (
                await session.execute(
                    select(m.patient.c.name)
                    .join(m.card, m.card.c.patient_id == m.patient.c.id)
                    .where(m.card.c.card_no == card_no)
                )
            ).scalar_one_or_none()
            if holder is None:
                return HTMLResponse(_page("<p>未找到就诊卡 (no such card)</p>"), status_code=404)
            stmt = select(m.order).where(m.order.c.card_no == card_no)
            if visit_no:
                stmt = stmt.where(m.order.c.visit_no == visit_no)
            orders = (await session.execute(stmt.order_by(m.order.c.created_at))).all()
            items = (
                await session.execute(
                    select(m.order_item).where(m.order_item.c.order_id.in_([o.id for o in orders]))
                )
            ).all()
        if not visit_no:
            visits = sorted({o.visit_no for o in orders if o.visit_no})
            links = "".join(
                f'<li><a data-visit="{html.escape(v)}" href="/operator/sheet?card_no='
                f'{html.escape(card_no)}&amp;visit_no={html.escape(v)}">{html.escape(v)}</a></li>'
                for v in visits
            )
            return HTMLResponse(_page(f"<h1>就诊记录 {html.escape(card_no)}</h1><ul>{links}</ul>"))
        by_order: dict[str, list[Any]] = {}
        for i in items:
            by_order.setdefault(i.order_id, []).append(i)
        rows = []
        unpaid_fen = 0
        for o in orders:
            for i in by_order.get(o.id, []):
                amount = i.quantity * i.unit_price_fen
                if o.status == "unpaid":
                    unpaid_fen += amount
                rows.append(
                    f'<tr data-order="{html.escape(o.id)}"><td>{html.escape(o.title)}</td>'
                    f"<td>{html.escape(i.name)}</td><td>{i.quantity} {html.escape(i.unit)}</td>"
                    f"<td>{_yuan(i.unit_price_fen)}</td><td>{_yuan(amount)}</td>"
                    f"<td>{html.escape(o.executing_department)}</td>"
                    f"<td>{'待缴费' if o.status == 'unpaid' else html.escape(o.status)}</td></tr>"
                )
        qr = await ask_front_for_qr(state, card_no=card_no, visit_no=visit_no)
        if "qr_svg" in qr:
            hint = "微信扫码缴费" if qr.get("mode") == "link" else "微信扫码支付"
            qr_block = (
                f'<div class="qr" data-qr="{html.escape(str(qr.get("mode")))}">'
                f"{qr['qr_svg']}<p>{hint}</p>"
                f'<p class="muted">{html.escape(str(qr.get("expires_at")))} 前有效</p></div>'
            )
        else:
            qr_block = (
                f'<div class="qr" data-qr-error="{html.escape(str(qr.get("code")))}">'
                f"<p>二维码不可用：{html.escape(str(qr.get('code')))}</p></div>"
            )
        body = (
            f"{qr_block}<h1>门诊缴费单</h1>"
            f"<p>就诊人 {html.escape(_mask(holder))} · 卡号 {html.escape(card_no)} · "
            f"就诊号 {html.escape(visit_no)}</p>"
            f'<p>待缴合计 <b data-unpaid="{unpaid_fen}">{_yuan(unpaid_fen)}</b> '
            f'<span class="muted">(医保报销以结算为准)</span></p>'
            "<table><thead><tr><th>医嘱</th><th>项目</th><th>数量</th><th>单价</th><th>金额</th>"
            f"<th>执行科室</th><th>状态</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        return HTMLResponse(_page(body))

    return r


def _page(body: str) -> str:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>演示 HIS · 缴费单</title>{_STYLE}</head><body>{body}"
        '<p><a href="/operator">操作台</a></p></body></html>'
    )
