"""The WeChat Pay API v3 simulator's HTTP surface (``router``), plus its pay sheet.

WeChat Pay paths (``/v3/...``) behave like the real service: every request's signature is
checked on the raw bytes (replay window, nonce reuse refused), every answer is signed with the
platform key, errors use the v3 envelope. Simulator-only paths live under ``/sim/pay/``:

- ``GET  /sim/pay/sheet?appId=&timeStamp=&nonceStr=&package=&signType=&paySign=`` — the pay
  sheet the phone page opens for ``getBrandWCPayRequest``; its button posts to
- ``POST /sim/pay/confirm`` — checks ``paySign`` and pays (``action``: pay | cancel | fail);
- ``POST /sim/pay/native/confirm`` — a patient scanned a Native ``code_url`` and paid;
- ``GET  /sim/pay/auth-code?scenario=`` — a payment code for the phone to show;
- ``POST /sim/pay/faults`` — fault injection; ``POST /sim/pay/tick`` — deliver due notifies.

The engine is ``app.state.wechat_pay_sim`` (a ``PaySim``); ``install(app, sim)`` sets it, or
it is built from settings and ``var/keys`` on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from frontdesk.sims.wechat_sim.pay_state import (
    AUTH_CODE_SCENARIOS,
    PaySim,
    PaySimConfig,
    SimError,
    SimOrder,
    new_auth_code,
)

ASSETS = Path(__file__).resolve().parent / "pay_assets"
MAX_BODY = 64 * 1024

router = APIRouter()
_templates = Environment(
    loader=FileSystemLoader(str(ASSETS)), autoescape=select_autoescape(["html"])
)


def install(app: FastAPI, sim: PaySim) -> None:
    app.state.wechat_pay_sim = sim


def sim_from_settings() -> PaySim:
    """Dev/demo: the simulator configured from FRONTDESK_* settings and the keys directory."""
    from frontdesk.core.settings import Settings
    from frontdesk.wechat.pay.devkeys import ensure_keyset

    settings = Settings()
    keys = ensure_keyset(Path(settings.wechatpay_sim_keys_dir))
    appids = {keys.appid} | ({settings.wechatpay_appid} if settings.wechatpay_appid else set())
    config = PaySimConfig(
        mchid=settings.wechatpay_mchid or keys.mchid,
        appids=frozenset(appids),
        merchant_serial_no=keys.merchant_serial_no,
        merchant_public_key=keys.merchant_public_key,
        platform_key=keys.platform_key,
        platform_public_key_id=keys.platform_public_key_id,
        apiv3_key=keys.apiv3_key,
        mode=settings.wechatpay_platform_mode,
        platform_cert_pem=keys.platform_cert_pem,
        platform_cert_serial=keys.platform_cert_serial,
        public_base=settings.wechatpay_api_base.rstrip("/"),
        time_scale=settings.wechatpay_sim_time_scale,
        background=True,
    )
    return PaySim(config)


_background: dict[int, asyncio.Task[None]] = {}


async def _deliver_forever(sim: PaySim) -> None:
    while True:
        with contextlib.suppress(Exception):
            await sim.deliver_due()
        await asyncio.sleep(0.5)


async def stop_background(sim: PaySim) -> None:
    """Stop the delivery task of ``sim`` (server shutdown, tests)."""
    task = _background.pop(id(sim), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get_sim(request: Request) -> PaySim:
    sim: PaySim | None = getattr(request.app.state, "wechat_pay_sim", None)
    if sim is None:
        sim = sim_from_settings()
        install(request.app, sim)
    if sim.config.background and id(sim) not in _background:
        _background[id(sim)] = asyncio.get_running_loop().create_task(_deliver_forever(sim))
    return sim


SimDep = Annotated[PaySim, Depends(get_sim)]


def signed_json(sim: PaySim, status: int, data: dict[str, Any] | None) -> Response:
    body = (
        b""
        if data is None
        else json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    )
    headers = sim.signed_headers(body)
    if data is None:
        return Response(status_code=status, headers=headers)
    return Response(
        content=body, status_code=status, headers=headers, media_type="application/json"
    )


def error_response(sim: PaySim, exc: SimError) -> Response:
    return signed_json(sim, exc.status, exc.body())


async def _authenticated(request: Request, sim: PaySim) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise SimError(413, "PARAM_ERROR", "请求体过大")
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    url = raw_path.decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    if query:
        url = f"{url}?{query}"
    sim.authenticate(
        method=request.method,
        url=url,
        body=body,
        authorization=request.headers.get("authorization"),
    )
    sim.check_api_fault()
    return body


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SimError(400, "PARAM_ERROR", "请求体不是合法的JSON") from exc
    if not isinstance(data, dict):
        raise SimError(400, "PARAM_ERROR", "请求体必须是JSON对象")
    return data


async def _handle(request: Request, sim: PaySim, action: Any) -> Response:
    try:
        body = await _authenticated(request, sim)
        status, data = action(body)
    except SimError as exc:
        response = error_response(sim, exc)
    else:
        response = signed_json(sim, status, data)
    delay = sim.answer_delay(request.url.path)
    if delay:
        await asyncio.sleep(delay)  # done, but the answer comes after the caller gave up
    return response


@router.post("/v3/pay/transactions/jsapi")
async def jsapi(request: Request, sim: SimDep) -> Response:
    return await _handle(
        request,
        sim,
        lambda body: (200, {"prepay_id": sim.create_order("JSAPI", _json_object(body)).prepay_id}),
    )


@router.post("/v3/pay/transactions/native")
async def native(request: Request, sim: SimDep) -> Response:
    return await _handle(
        request,
        sim,
        lambda body: (200, {"code_url": sim.create_order("NATIVE", _json_object(body)).code_url}),
    )


def _codepay_answer(sim: PaySim, order: SimOrder) -> tuple[int, dict[str, Any]]:
    if order.state == "USERPAYING":
        return 202, {"trade_state": "USERPAYING"}
    return 200, sim.transaction_json(order)


@router.post("/v3/pay/transactions/codepay")
async def codepay(request: Request, sim: SimDep) -> Response:
    return await _handle(
        request, sim, lambda body: _codepay_answer(sim, sim.codepay(_json_object(body)))
    )


def _check_mchid(request: Request, sim: PaySim) -> None:
    if request.query_params.get("mchid") != sim.config.mchid:
        raise SimError(400, "PARAM_ERROR", "mchid参数错误")


@router.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
async def query_by_out_trade_no(out_trade_no: str, request: Request, sim: SimDep) -> Response:
    def act(_body: bytes) -> tuple[int, dict[str, Any]]:
        _check_mchid(request, sim)
        return 200, sim.transaction_json(sim.get_order(out_trade_no))

    return await _handle(request, sim, act)


@router.get("/v3/pay/transactions/id/{transaction_id}")
async def query_by_id(transaction_id: str, request: Request, sim: SimDep) -> Response:
    def act(_body: bytes) -> tuple[int, dict[str, Any]]:
        _check_mchid(request, sim)
        return 200, sim.transaction_json(sim.get_order_by_transaction(transaction_id))

    return await _handle(request, sim, act)


@router.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
async def close(out_trade_no: str, request: Request, sim: SimDep) -> Response:
    def act(body: bytes) -> tuple[int, None]:
        sim.close_order(out_trade_no, _json_object(body))
        return 204, None

    try:
        body = await _authenticated(request, sim)
        status, _ = act(body)
    except SimError as exc:
        return error_response(sim, exc)
    return signed_json(sim, status, None)


@router.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/reverse")
async def reverse(out_trade_no: str, request: Request, sim: SimDep) -> Response:
    def act(body: bytes) -> tuple[int, dict[str, Any]]:
        data = _json_object(body)
        sim.reverse(out_trade_no, data)
        return 200, {"appid": data["appid"], "mchid": data["mchid"], "out_trade_no": out_trade_no}

    return await _handle(request, sim, act)


@router.post("/v3/refund/domestic/refunds")
async def refund(request: Request, sim: SimDep) -> Response:
    return await _handle(
        request, sim, lambda body: (200, sim.refund_json(sim.create_refund(_json_object(body))))
    )


@router.get("/v3/refund/domestic/refunds/{out_refund_no}")
async def refund_query(out_refund_no: str, request: Request, sim: SimDep) -> Response:
    def act(_body: bytes) -> tuple[int, dict[str, Any]]:
        sim.settle_refunds()
        return 200, sim.refund_json(sim.get_refund(out_refund_no))

    return await _handle(request, sim, act)


@router.get("/v3/certificates")
async def certificates(request: Request, sim: SimDep) -> Response:
    return await _handle(request, sim, lambda _body: (200, sim.certificates_json()))


@router.get("/v3/bill/tradebill")
async def tradebill(request: Request, sim: SimDep) -> Response:
    q = request.query_params
    return await _handle(
        request,
        sim,
        lambda _body: (
            200,
            sim.apply_trade_bill(
                bill_date=q.get("bill_date", ""),
                bill_type=q.get("bill_type", "ALL"),
                tar_type=q.get("tar_type"),
            ),
        ),
    )


@router.get("/v3/billdownload/file")
async def billdownload(request: Request, sim: SimDep) -> Response:
    try:
        await _authenticated(request, sim)
        data = sim.bill_file(request.query_params.get("token", ""))
    except SimError as exc:
        return error_response(sim, exc)
    # The file itself is not signed (spec §4.3); the hash from tradebill protects it.
    return Response(content=data, media_type="application/octet-stream")


# --- simulator-only: the pay sheet, scanning, faults -------------------------------------


BRIDGE_FIELDS = ("appId", "timeStamp", "nonceStr", "package", "signType", "paySign")


@router.get("/sim/pay/sheet", response_class=HTMLResponse)
async def pay_sheet(request: Request, sim: SimDep) -> HTMLResponse:
    params = {name: request.query_params.get(name, "") for name in BRIDGE_FIELDS}
    error, order = None, None
    try:
        order = sim.confirm_jsapi(params)
        if order.state != "NOTPAY":
            error = f"订单状态：{order.state}"
    except SimError as exc:
        error = exc.message
    html = _templates.get_template("sheet.html").render(
        params=params,
        error=error,
        description=order.description if order else "",
        amount=f"{order.total_fen // 100}.{order.total_fen % 100:02d}" if order else "",
        return_url=_local_path(request.query_params.get("return", "")),
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _local_path(value: str) -> str:
    """Only a same-origin path may be returned to (no open redirect via ``//host``)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return ""


@router.get("/sim/pay/assets/{name}")
async def pay_asset(name: str) -> Response:
    types = {"sheet.js": "text/javascript", "sheet.css": "text/css"}
    if name not in types:
        return Response(status_code=404)
    return Response((ASSETS / name).read_bytes(), media_type=types[name])


def _bridge_result(kind: str, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({"err_msg": f"get_brand_wcpay_request:{kind}", **extra}, status_code=status)


@router.post("/sim/pay/confirm")
async def confirm(request: Request, sim: SimDep) -> Response:
    try:
        data = _json_object(await request.body())
        params = {name: str(data.get(name, "")) for name in BRIDGE_FIELDS}
        order = sim.confirm_jsapi(params)
        action = data.get("action", "pay")
        if action == "cancel":
            return _bridge_result("cancel")
        if action == "fail":
            return _bridge_result("fail", reason="simulated failure")
        sim.pay(order, openid=order.openid or "")
    except SimError as exc:
        return _bridge_result("fail", 400, code=exc.code, reason=exc.message)
    return _bridge_result("ok", out_trade_no=order.out_trade_no)


@router.post("/sim/pay/native/confirm")
async def native_confirm(request: Request, sim: SimDep) -> Response:
    try:
        data = _json_object(await request.body())
        order = sim.order_for_code_url(str(data.get("code_url", "")))
        openid = data.get("openid")
        if not isinstance(openid, str) or not openid:
            raise SimError(400, "PARAM_ERROR", "openid required")
        sim.pay(order, openid=openid)
    except SimError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    return JSONResponse({"out_trade_no": order.out_trade_no, "trade_state": order.state})


@router.post("/sim/pay/faults")
async def faults(request: Request, sim: SimDep) -> Response:
    """``{"notify": ["drop"|"delay"|"duplicate"...], "notify_delay_seconds": 60,
    "api_500": 1, "signtest": 1, "refund_abnormal": 1, "timeout": 1, "timeout_seconds": 15,
    "timeout_path": "/v3/refund", "statement_creating": 1, "no_statement_days": ["2026-11-27"]}``
    — each one-shot, consumed in order, but ``no_statement_days`` (the bill of those days is
    NO_STATEMENT_EXIST from then on). ``timeout``: the call is carried out but its answer is
    held past the client's deadline."""
    try:
        data = _json_object(await request.body())
    except SimError as exc:
        return JSONResponse(exc.body(), status_code=400)
    notify = data.get("notify", [])
    if not isinstance(notify, list) or any(x not in ("drop", "delay", "duplicate") for x in notify):
        return JSONResponse({"code": "PARAM_ERROR", "message": "notify faults"}, 400)
    counts: dict[str, int] = {}
    for name in ("api_500", "signtest", "refund_abnormal", "timeout", "statement_creating"):
        value = data.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            return JSONResponse({"code": "PARAM_ERROR", "message": name}, 400)
        counts[name] = value
    hold = data.get("timeout_seconds")
    if hold is not None and (
        isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 < hold <= 600
    ):
        return JSONResponse({"code": "PARAM_ERROR", "message": "timeout_seconds"}, 400)
    where = data.get("timeout_path", "")
    if not isinstance(where, str) or len(where) > 200:
        return JSONResponse({"code": "PARAM_ERROR", "message": "timeout_path"}, 400)
    days = data.get("no_statement_days", [])
    try:
        if not isinstance(days, list) or len(days) > 366:
            raise ValueError(days)
        no_statement = {date.fromisoformat(d) for d in days if isinstance(d, str)}
        if len(no_statement) != len(set(days)):
            raise ValueError(days)
    except (TypeError, ValueError):
        return JSONResponse({"code": "PARAM_ERROR", "message": "no_statement_days"}, 400)
    sim.faults.notify.extend(notify)
    sim.faults.api_500 += counts["api_500"]
    sim.faults.signtest += counts["signtest"]
    sim.faults.refund_abnormal += counts["refund_abnormal"]
    sim.faults.timeout += counts["timeout"]
    sim.faults.timeout_path = where
    sim.faults.statement_creating += counts["statement_creating"]
    sim.faults.no_statement_days |= no_statement
    if hold is not None:
        sim.faults.timeout_seconds = float(hold)
    delay = data.get("notify_delay_seconds")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0:
        sim.faults.notify_delay_seconds = float(delay)
    return JSONResponse({"ok": True})


@router.get("/sim/pay/auth-code")
async def auth_code(scenario: str = "success") -> Response:
    """A payment code for the phone page to show; ``scenario`` picks what happens when the
    cashier scans it (success, userpaying_success, userpaying_fail, expired, insufficient,
    never)."""
    if scenario not in AUTH_CODE_SCENARIOS:
        return JSONResponse(
            {
                "code": "PARAM_ERROR",
                "message": "unknown scenario",
                "scenarios": sorted(AUTH_CODE_SCENARIOS),
            },
            400,
        )
    return JSONResponse({"auth_code": new_auth_code(scenario), "scenario": scenario})


@router.post("/sim/pay/tick")
async def tick(sim: SimDep) -> Response:
    return JSONResponse({"attempts": await sim.deliver_due()})


def create_pay_sim_app(sim: PaySim) -> FastAPI:
    """A FastAPI app with only the Pay simulator (tests; the full sim app includes
    ``router`` next to the platform's)."""
    app = FastAPI(title="WeChat Pay simulator")
    install(app, sim)
    app.include_router(router)
    return app


__all__ = ["PaySim", "PaySimConfig", "create_pay_sim_app", "install", "router"]
