"""The demo HIS as an ASGI app: the server side of the HIS bridge (``/his/v1/...``), an
operator API and page (``/operator``) to act as hospital staff, and fault injection.

It has its own database and its own tables (``models.metadata``), never Frontdesk's.

    app = create_his_sim_app(database_url="sqlite+aiosqlite:///./var/his-sim.db",
                             seed=1, size="small", key_id="demo", secret="...")

Under a real server the lifespan seeds an empty database; in-process tests (where no
lifespan runs) call ``await seed(app)`` first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontdesk.core.clock import now as clock_now
from frontdesk.core.database import create_engine
from frontdesk.core.settings import DEMO_HIS_SECRET
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.his import protocol as p
from frontdesk.his import signing
from frontdesk.his.port import (
    Appointment,
    CardVerification,
    Department,
    Doctor,
    EventPage,
    Order,
    OrderExecution,
    PreSettlement,
    Refund,
    RefundableItem,
    ReportSummary,
    Schedule,
    Settlement,
    SettlementRecord,
    SlotPool,
)
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim import seed as seeding
from frontdesk.sims.his_sim import service
from frontdesk.sims.his_sim.order_sheet import order_sheet_router
from frontdesk.sims.his_sim.service import SimRejected

log = logging.getLogger("frontdesk.his_sim")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/his-sim.db"
DEFAULT_KEY_ID = "demo"
DEFAULT_SECRET = DEMO_HIS_SECRET
PG_SCHEMA = "his_sim"


# --------------------------------------------------------------------------- state


@dataclass
class Faults:
    """Fault injection set by the operator: applies to the next ``count`` bridge calls
    (None: until cleared) whose path contains ``path_contains``."""

    mode: str | None = None  # latency | error | timeout | refuse | malformed
    count: int | None = None
    path_contains: str = ""
    method: str = ""  # only calls of this HTTP method ("" = any): POST settlements, not GET
    latency_ms: int = 0
    timeout_seconds: float = 30.0

    def take(self, path: str, method: str = "") -> str | None:
        if self.mode is None or self.path_contains not in path:
            return None
        if self.method and method and self.method != method:
            return None
        if self.count is not None:
            if self.count <= 0:
                return None
            self.count -= 1
        return self.mode


@dataclass
class SimState:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    keys: dict[str, str]
    seed_no: int
    size: str
    # Only a test flag for proving the conformance kit can fail; never set it otherwise.
    verify_signatures: bool = True
    faults: Faults = field(default_factory=Faults)
    # The front server, for the order sheet's payment QR code (order_sheet.py); tests set a
    # transport to reach it in-process.
    front_base_url: str | None = None
    front_transport: Any = None
    front_key_id: str | None = None  # the key it signs with (default: its first key)
    max_body_bytes: int = p.MAX_BODY_BYTES
    requests_seen: int = 0


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.his_sim
    return state


def envelope(
    status: int,
    code: str,
    message: str,
    *,
    retryable: bool = False,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "retryable": retryable},
        status_code=status,
        headers=headers,
    )


# --------------------------------------------------------------------------- gate


class BridgeGate:
    """Pure ASGI middleware in front of ``/his/v1``: body limit, signature, nonce, faults.

    It runs before the body is parsed, so an unsigned request is refused the same way
    whatever its body, and the body that was signed is exactly the body handed on.
    """

    def __init__(self, app: ASGIApp, *, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(p.PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        refusal = await self._check(scope, receive)
        if isinstance(refusal, Response):
            await refusal(scope, receive, send)
            return
        body = refusal
        fault = self.state.faults.take(scope["path"], scope["method"])
        if fault == "latency":
            await asyncio.sleep(self.state.faults.latency_ms / 1000)
        elif fault == "timeout":
            await asyncio.sleep(self.state.faults.timeout_seconds)
        elif fault == "error":
            await envelope(503, "his_unavailable", "injected fault", retryable=True)(
                scope, receive, send
            )
            return
        elif fault == "refuse":
            await envelope(422, "refused", "injected refusal")(scope, receive, send)
            return
        elif fault == "malformed":
            await Response(b'{"items": [ this is not json', media_type="application/json")(
                scope, receive, send
            )
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _check(self, scope: Scope, receive: Receive) -> bytes | Response:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.state.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return envelope(413, "body_too_large", f"bodies are limited to {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return envelope(400, "invalid_request", "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return envelope(413, "body_too_large", f"bodies are limited to {limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not self.state.verify_signatures:
            return body
        now = clock_now()
        try:
            key_id, nonce = signing.verify(
                keys=self.state.keys,
                headers=_Caseless(headers),
                method=scope["method"],
                path=_signed_path(scope),
                query=scope.get("query_string", b"").decode("latin-1"),
                body=body,
                unix_time=int(now.timestamp()),
            )
        except signing.SignatureError as exc:
            return envelope(401, exc.code, exc.message)
        async with self.state.sessionmaker() as session, session.begin():
            stmt = insert_ignoring_conflict(
                session,
                m.nonce,
                {"key_id": key_id, "nonce": nonce, "seen_at": now},
                conflict_columns=["key_id", "nonce"],
            )
            fresh = (await session.execute(stmt)).rowcount  # type: ignore[attr-defined]
            self.state.requests_seen += 1
            if self.state.requests_seen % 500 == 0:
                # Nonces older than twice the window can never be replayed successfully.
                await service.prune_nonces(
                    session, older_than=now - timedelta(seconds=2 * signing.WINDOW_SECONDS)
                )
        if not fresh:
            return envelope(401, "nonce_reused", "this nonce was already used")
        return body


def _signed_path(scope: Scope) -> str:
    # The path as sent on the request line (percent-encoding kept), which is what the
    # client signed; the decoded ``path`` would turn %2F into / and break the signature.
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


class _Caseless(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


# --------------------------------------------------------------------------- helpers


Op = Callable[[AsyncSession], Awaitable[Any]]


async def _read(request: Request, op: Op) -> Any:
    async with _state(request).sessionmaker() as session, session.begin():
        return await op(session)


def _request_hash(body: BaseModel, path: str) -> str:
    canonical = json.dumps([path, body.model_dump(mode="json")], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _write(
    request: Request, operation: str, idempotency_key: str | None, body: BaseModel, op: Op
) -> Response:
    """Run a write once per idempotency key; a repeat gets the first answer (even a
    refusal), a reused key with a different request gets 422."""
    if not idempotency_key or not signing.IDEMPOTENCY_KEY_RE.match(idempotency_key):
        return envelope(
            400,
            "idempotency_key_required",
            "writes need an Idempotency-Key header of 1-128 [A-Za-z0-9._:-]",
        )
    key_id = request.headers.get(signing.HEADER_KEY_ID, "-")
    digest = _request_hash(body, request.url.path)
    state = _state(request)
    try:
        async with state.sessionmaker() as session, session.begin():
            first = (
                await session.execute(
                    select(m.idempotency).where(
                        m.idempotency.c.key_id == key_id, m.idempotency.c.key == idempotency_key
                    )
                )
            ).one_or_none()
            if first is not None:
                if first.request_hash != digest or first.operation != operation:
                    return envelope(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for another request",
                    )
                return JSONResponse(
                    first.response,
                    status_code=first.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )
            try:
                async with session.begin_nested():
                    result = await op(session)
                status, payload = 200, result
            except SimRejected as exc:
                status = exc.status
                payload = {"code": exc.code, "message": exc.message, "retryable": False}
            await session.execute(
                m.idempotency.insert().values(
                    key_id=key_id,
                    key=idempotency_key,
                    operation=operation,
                    request_hash=digest,
                    status_code=status,
                    response=payload,
                    created_at=clock_now(),
                )
            )
    except IntegrityError:
        # The same key is being processed by a concurrent request: the client retries.
        return envelope(
            409, "idempotency_in_flight", "a request with this key is running", retryable=True
        )
    return JSONResponse(payload, status_code=status)


# --------------------------------------------------------------------------- bridge routes


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]
_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
_CARD = Annotated[str, Query(pattern=r"^[0-9A-Za-z]{4,20}$")]
_REF = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{6,64}$")]


def bridge_router() -> APIRouter:
    r = APIRouter(prefix=p.PREFIX, tags=["bridge"])
    bad = {"model": p.ErrorEnvelope}
    errors: dict[int | str, dict[str, Any]] = {401: bad, 404: bad, 409: bad, 422: bad, 503: bad}

    @r.get(
        "/departments",
        response_model=p.Items[Department],
        responses=errors,
        operation_id="departments",
    )
    async def departments(request: Request) -> Any:
        return {"items": await _read(request, service.departments)}

    @r.get("/doctors", response_model=p.Items[Doctor], responses=errors, operation_id="doctors")
    async def doctors(request: Request, department_code: str | None = None) -> Any:
        return {"items": await _read(request, lambda s: service.doctors(s, department_code))}

    @r.get(
        "/schedules", response_model=p.Items[Schedule], responses=errors, operation_id="schedules"
    )
    async def schedules(
        request: Request, start: date, end: date, department_code: str | None = None
    ) -> Any:
        return {
            "items": await _read(
                request,
                lambda s: service.schedules(
                    s, start=start, end=end, department_code=department_code
                ),
            )
        }

    @r.get(
        "/schedules/{schedule_id}/slots",
        response_model=SlotPool,
        responses=errors,
        operation_id="slot_pool",
    )
    async def slot_pool(request: Request, schedule_id: _ID) -> Any:
        return await _read(request, lambda s: service.slot_pool(s, schedule_id))

    @r.post(
        "/cards/verify",
        response_model=CardVerification,
        responses=errors,
        operation_id="verify_card",
    )
    async def verify_card(request: Request, body: p.VerifyCardRequest) -> Any:
        return await _read(
            request,
            lambda s: service.verify_card(
                s, card_no=body.card_no, holder_name=body.holder_name, last4=body.id_or_phone_last4
            ),
        )

    @r.post(
        "/appointments",
        response_model=Appointment,
        responses=errors,
        operation_id="register_appointment",
    )
    async def register(
        request: Request, body: p.RegisterAppointmentRequest, idempotency_key: IdemKey = None
    ) -> Any:
        return await _write(
            request,
            "register_appointment",
            idempotency_key,
            body,
            lambda s: service.register_appointment(
                s,
                schedule_id=body.schedule_id,
                sequence_no=body.sequence_no,
                card_no=body.card_no,
                booking_ref=body.booking_ref,
            ),
        )

    @r.post(
        "/appointments/{appointment_id}/cancel",
        response_model=Appointment,
        responses=errors,
        operation_id="cancel_appointment",
    )
    async def cancel(
        request: Request,
        appointment_id: _ID,
        body: p.CancelAppointmentRequest,
        idempotency_key: IdemKey = None,
    ) -> Any:
        return await _write(
            request,
            "cancel_appointment",
            idempotency_key,
            body,
            lambda s: service.cancel_appointment(s, appointment_id),
        )

    @r.get(
        "/appointments/{appointment_id}",
        response_model=Appointment,
        responses=errors,
        operation_id="appointment",
    )
    async def appointment(request: Request, appointment_id: _ID) -> Any:
        return await _read(request, lambda s: service.appointment(s, appointment_id))

    @r.post(
        "/schedules/{schedule_id}/suspend",
        response_model=Schedule,
        responses=errors,
        operation_id="suspend_schedule",
    )
    async def suspend_schedule(
        request: Request,
        schedule_id: _ID,
        body: p.SuspendScheduleRequest,
        idempotency_key: IdemKey = None,
    ) -> Any:
        return await _write(
            request,
            "suspend_schedule",
            idempotency_key,
            body,
            lambda s: service.suspend_by_request(
                s, schedule_id, reason=body.reason, request_ref=body.request_ref
            ),
        )

    @r.get("/orders", response_model=p.Items[Order], responses=errors, operation_id="unpaid_orders")
    async def orders(
        request: Request,
        card_no: _CARD,
        status: Annotated[str, Query(pattern="^unpaid$")] = "unpaid",
    ) -> Any:
        return {"items": await _read(request, lambda s: service.unpaid_orders(s, card_no))}

    @r.post(
        "/orders/pre-settle",
        response_model=PreSettlement,
        responses=errors,
        operation_id="pre_settle",
    )
    async def pre_settle(request: Request, body: p.PreSettleRequest) -> Any:
        return await _read(
            request, lambda s: service.pre_settle(s, card_no=body.card_no, order_ids=body.order_ids)
        )

    @r.post("/settlements", response_model=Settlement, responses=errors, operation_id="settle")
    async def settle(
        request: Request, body: p.SettleRequest, idempotency_key: IdemKey = None
    ) -> Any:
        return await _write(
            request,
            "settle",
            idempotency_key,
            body,
            lambda s: service.settle(
                s,
                card_no=body.card_no,
                order_ids=body.order_ids,
                payment_ref=body.payment_ref,
                self_pay_fen=body.self_pay_fen,
                channel="wechat",
            ),
        )

    @r.get(
        "/refundable-items",
        response_model=p.Items[RefundableItem],
        responses=errors,
        operation_id="refundable_items",
    )
    async def refundable(request: Request, card_no: _CARD) -> Any:
        return {"items": await _read(request, lambda s: service.refundable_items(s, card_no))}

    @r.post("/refunds", response_model=Refund, responses=errors, operation_id="refund")
    async def refund(
        request: Request, body: p.RefundRequest, idempotency_key: IdemKey = None
    ) -> Any:
        return await _write(
            request,
            "refund",
            idempotency_key,
            body,
            lambda s: service.refund(
                s,
                card_no=body.card_no,
                item_ids=body.item_ids,
                refund_ref=body.refund_ref,
                channel="wechat",
            ),
        )

    @r.get(
        "/orders/{order_id}/execution",
        response_model=OrderExecution,
        responses=errors,
        operation_id="execution_status",
    )
    async def execution(request: Request, order_id: _ID) -> Any:
        return await _read(request, lambda s: service.execution_status(s, order_id))

    @r.get(
        "/reports", response_model=p.Items[ReportSummary], responses=errors, operation_id="reports"
    )
    async def reports(request: Request, card_no: _CARD, since: date) -> Any:
        return {
            "items": await _read(
                request, lambda s: service.reports(s, card_no=card_no, since=since)
            )
        }

    @r.get(
        "/reports/{report_id}",
        response_model=p.ReportEnvelope,
        responses=errors,
        operation_id="report",
    )
    async def report(request: Request, report_id: _ID) -> Any:
        return await _read(request, lambda s: service.report(s, report_id))

    @r.post(
        "/reports/batch",
        response_model=p.Items[p.ReportEnvelope],
        responses=errors,
        operation_id="report_bodies",
    )
    async def report_bodies(request: Request, body: p.ReportBatchRequest) -> Any:
        return {"items": await _read(request, lambda s: service.report_bodies(s, body.report_ids))}

    @r.get(
        "/settlements",
        response_model=p.Items[SettlementRecord],
        responses=errors,
        operation_id="day_settlements",
    )
    async def day_settlements(request: Request, on_date: date) -> Any:
        return {"items": await _read(request, lambda s: service.day_settlements(s, on_date))}

    @r.get(
        "/settlements/{payment_ref}",
        response_model=Settlement,
        responses=errors,
        operation_id="settlement",
    )
    async def settlement(request: Request, payment_ref: _REF) -> Any:
        return await _read(request, lambda s: service.settlement_by_ref(s, payment_ref))

    @r.get("/events", response_model=EventPage, responses=errors, operation_id="events")
    async def events(
        request: Request,
        after: Annotated[str, Query(pattern=r"^[0-9]{0,18}$")] = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        return await _read(
            request, lambda s: service.events_after(s, after=int(after or 0), limit=limit)
        )

    return r


# --------------------------------------------------------------------------- operator


class _OpBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class NewItem(_OpBody):
    name: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=1000)
    unit: str = Field(default="次", max_length=16)
    unit_price_fen: int = Field(ge=0, le=100_000_000)
    eligible_pct: int = Field(default=100, ge=0, le=100)


class NewOrder(_OpBody):
    card_no: str
    kind: str = Field(pattern="^(prescription|exam|lab)$")
    title: str = Field(min_length=1, max_length=100)
    ordering_department: str = "肝病科"
    executing_department: str = "门诊西药房"
    doctor_name: str = "值班医生"
    # The visit (就诊) the order belongs to; empty: the card's latest visit today, or a new one.
    visit_no: str = Field(default="", max_length=32, pattern=r"^[A-Za-z0-9_-]*$")
    items: list[NewItem] = Field(min_length=1, max_length=50)


class NewReport(_OpBody):
    card_no: str
    kind: str = Field(pattern="^(lab|exam)$")
    seed_no: int = 1


class Suspend(_OpBody):
    reason: str = Field(default="医生临时停诊", max_length=200)


class AddSlots(_OpBody):
    count: int = Field(ge=1, le=50)


class EndOfDay(_OpBody):
    on_date: date = Field(strict=False)  # JSON has no date type: "2026-11-27"


class WindowPayment(_OpBody):
    card_no: str
    order_ids: list[str] = Field(min_length=1)


class WindowRefund(_OpBody):
    card_no: str
    item_ids: list[str] = Field(min_length=1)


class MergeCard(_OpBody):
    into: str = Field(min_length=1, max_length=20)


class FaultSpec(_OpBody):
    mode: str = Field(pattern="^(latency|error|timeout|refuse|malformed)$")
    count: int | None = Field(default=None, ge=1)
    path_contains: str = ""
    method: str = Field(default="", pattern="^(|GET|POST|PUT|DELETE)$")
    latency_ms: int = Field(default=500, ge=0, le=120_000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)


def operator_router() -> APIRouter:
    r = APIRouter(prefix="/operator", tags=["operator"])

    async def act(request: Request, op: Op) -> Any:
        try:
            return await _read(request, op)
        except SimRejected as exc:
            return envelope(exc.status, exc.code, exc.message)

    @r.get("", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(OPERATOR_PAGE)

    @r.post("/orders")
    async def write_order(request: Request, body: NewOrder) -> Any:
        return await act(
            request,
            lambda s: service.write_order(
                s,
                card_no=body.card_no,
                kind=body.kind,
                title=body.title,
                ordering_department=body.ordering_department,
                executing_department=body.executing_department,
                doctor_name=body.doctor_name,
                items=[i.model_dump() for i in body.items],
                visit_no=body.visit_no,
            ),
        )

    @r.post("/orders/{order_id}/execute")
    async def execute(request: Request, order_id: str) -> Any:
        return await act(request, lambda s: service.execute_order(s, order_id))

    @r.post("/reports")
    async def add_report(request: Request, body: NewReport) -> Any:
        return await act(
            request,
            lambda s: service.add_report(
                s, card_no=body.card_no, kind=body.kind, seed_no=body.seed_no
            ),
        )

    @r.post("/reports/{report_id}/review")
    async def review(request: Request, report_id: str) -> Any:
        return await act(request, lambda s: service.review_report(s, report_id))

    @r.post("/schedules/{schedule_id}/suspend")
    async def suspend(request: Request, schedule_id: str, body: Suspend) -> Any:
        return await act(request, lambda s: service.suspend_schedule(s, schedule_id, body.reason))

    @r.post("/schedules/{schedule_id}/slots")
    async def add_slots(request: Request, schedule_id: str, body: AddSlots) -> Any:
        return await act(request, lambda s: service.add_slots(s, schedule_id, body.count))

    @r.post("/appointments/{appointment_id}/check-in")
    async def check_in(request: Request, appointment_id: str) -> Any:
        return await act(request, lambda s: service.check_in(s, appointment_id))

    @r.post("/window-payments")
    async def window_payment(request: Request, body: WindowPayment) -> Any:
        return await act(
            request,
            lambda s: service.window_payment(s, card_no=body.card_no, order_ids=body.order_ids),
        )

    @r.post("/window-refunds")
    async def window_refund(request: Request, body: WindowRefund) -> Any:
        return await act(
            request,
            lambda s: service.window_refund(s, card_no=body.card_no, item_ids=body.item_ids),
        )

    @r.post("/cards/{card_no}/void")
    async def void_card(request: Request, card_no: str) -> Any:
        return await act(request, lambda s: service.change_card(s, card_no, status="voided"))

    @r.post("/cards/{card_no}/merge")
    async def merge_card(request: Request, card_no: str, body: MergeCard) -> Any:
        return await act(
            request,
            lambda s: service.change_card(s, card_no, status="merged", merged_into=body.into),
        )

    @r.post("/end-of-day")
    async def end_of_day(request: Request, body: EndOfDay) -> Any:
        return await act(request, lambda s: service.end_of_day(s, body.on_date))

    @r.get("/cards")
    async def cards(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
        """Demo cards with their holders, so a person can bind one (the sim is not the
        front server: it may show its own patients in full)."""

        async def op(s: AsyncSession) -> Any:
            rows = (
                await s.execute(
                    select(
                        m.card.c.card_no,
                        m.card.c.card_type,
                        m.patient.c.name,
                        m.patient.c.id_number,
                        m.patient.c.phone,
                    )
                    .join(m.patient, m.patient.c.id == m.card.c.patient_id)
                    .order_by(m.card.c.card_no)
                    .limit(limit)
                )
            ).all()
            return [dict(r._mapping) for r in rows]

        return await _read(request, op)

    @r.put("/faults")
    async def set_faults(request: Request, body: FaultSpec) -> Any:
        _state(request).faults = Faults(**body.model_dump())
        return {"faults": body.model_dump()}

    @r.delete("/faults")
    async def clear_faults(request: Request) -> Any:
        _state(request).faults = Faults()
        return {"faults": None}

    return r


OPERATOR_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>演示 HIS · 操作台</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:56rem}
form{border:1px solid #ccc;padding:.6rem;margin:.6rem 0}
label{display:inline-block;margin-right:.6rem}
pre{background:#f4f4f4;padding:.6rem;white-space:pre-wrap}
</style></head><body>
<h1>演示 HIS 操作台 (demo HIS operator)</h1>
<p>Act as hospital staff. Each form posts JSON to <code>/operator/...</code>.</p>
<form data-method="POST" data-path="/operator/orders" data-json='{"kind":"lab",
"title":"血常规（五分类）","items":[{"name":"血常规（五分类）","quantity":1,
"unit_price_fen":2000}]}'>
<b>开单 write an order</b> <label>card_no <input name="card_no"></label>
<button>submit</button></form>
<form data-method="POST" data-path="/operator/orders/{order_id}/execute">
<b>执行 execute an order</b> <label>order_id <input name="order_id"></label>
<button>submit</button></form>
<form data-method="POST" data-path="/operator/reports" data-json='{"kind":"lab"}'>
<b>出报告 new report</b> <label>card_no <input name="card_no"></label>
<button>submit</button></form>
<form data-method="POST" data-path="/operator/reports/{report_id}/review">
<b>审核 review a report</b> <label>report_id <input name="report_id"></label>
<button>submit</button></form>
<form data-method="POST" data-path="/operator/schedules/{schedule_id}/suspend"
 data-json='{}'><b>停诊 suspend a clinic</b>
<label>schedule_id <input name="schedule_id"></label><button>submit</button></form>
<form data-method="POST" data-path="/operator/appointments/{appointment_id}/check-in">
<b>签到 check in</b> <label>appointment_id <input name="appointment_id"></label>
<button>submit</button></form>
<form data-method="POST" data-path="/operator/window-payments" data-list="order_ids">
<b>窗口缴费 window payment</b> <label>card_no <input name="card_no"></label>
<label>order_ids (comma) <input name="order_ids"></label><button>submit</button></form>
<form data-method="POST" data-path="/operator/window-refunds" data-list="item_ids">
<b>窗口退费 window refund</b> <label>card_no <input name="card_no"></label>
<label>item_ids (comma) <input name="item_ids"></label><button>submit</button></form>
<form data-method="POST" data-path="/operator/end-of-day">
<b>日终 end of day</b> <label>on_date <input name="on_date" placeholder="2026-11-27">
</label><button>submit</button></form>
<form data-method="PUT" data-path="/operator/faults" data-int="count,latency_ms">
<b>故障注入 faults</b> <label>mode <select name="mode"><option>error</option>
<option>latency</option><option>timeout</option><option>refuse</option>
<option>malformed</option></select></label><label>count <input name="count" value="1">
</label><label>latency_ms <input name="latency_ms" value="500"></label>
<button>submit</button></form>
<form data-method="DELETE" data-path="/operator/faults"><b>清除故障 clear faults</b>
<button>submit</button></form>
<form class="open" method="get" action="/operator/sheet">
<b>打印缴费单 order sheet with the payment QR</b>
<label>card_no <input name="card_no"></label> <label>visit_no <input name="visit_no"></label>
<button>open</button></form>
<pre id="out"></pre>
<script>
for (const form of document.querySelectorAll("form:not(.open)")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = JSON.parse(form.dataset.json || "{}");
    let path = form.dataset.path;
    const lists = (form.dataset.list || "").split(",");
    const ints = (form.dataset.int || "").split(",");
    for (const input of form.querySelectorAll("input,select")) {
      const marker = "{" + input.name + "}";
      if (path.includes(marker)) {
        path = path.replace(marker, encodeURIComponent(input.value));
        continue;
      }
      if (input.value === "") continue;
      if (lists.includes(input.name)) body[input.name] = input.value.split(",").map(s => s.trim());
      else if (ints.includes(input.name)) body[input.name] = parseInt(input.value, 10);
      else body[input.name] = input.value;
    }
    const init = {method: form.dataset.method, headers: {"content-type": "application/json"}};
    if (form.dataset.method !== "DELETE") init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    document.getElementById("out").textContent = response.status + "\\n" +
      JSON.stringify(await response.json(), null, 2);
  });
}
</script></body></html>
"""


# --------------------------------------------------------------------------- the app


def _make_engine(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url, pool_size=4, max_overflow=4)
    if engine.dialect.name == "postgresql":
        # Its own schema, so it can share a PostgreSQL server (even a database) with
        # nothing of Frontdesk's schema touched.
        engine = engine.execution_options(schema_translate_map={None: PG_SCHEMA})
    return engine


async def _ensure_schema(engine: AsyncEngine) -> bool:
    """Create the tables if missing; True if the database was empty."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{PG_SCHEMA}"'))
        empty = not await conn.run_sync(
            lambda c: inspect(c).has_table(
                "his_department", schema=PG_SCHEMA if c.dialect.name == "postgresql" else None
            )
        )
        await conn.run_sync(m.metadata.create_all)
        await conn.run_sync(_add_missing_columns)
    return empty


def _add_missing_columns(conn: Any) -> None:
    """Columns added to the demo HIS after its first release, for databases made before."""
    schema = PG_SCHEMA if conn.dialect.name == "postgresql" else None
    have = {c["name"] for c in inspect(conn).get_columns("his_order", schema=schema)}
    if "visit_no" not in have:
        table = f'"{PG_SCHEMA}".his_order' if schema else "his_order"
        conn.execute(
            text(f"ALTER TABLE {table} ADD COLUMN visit_no VARCHAR(32) NOT NULL DEFAULT ''")
        )


def create_his_sim_app(
    *,
    database_url: str = DEFAULT_DATABASE_URL,
    seed: int = 1,
    size: str = "small",
    key_id: str = DEFAULT_KEY_ID,
    secret: str = DEFAULT_SECRET,
    reset: bool = False,
    verify_signatures: bool = True,
    front_base_url: str | None = None,
) -> FastAPI:
    """The demo HIS. Under a server, its lifespan seeds the database when it is empty (or
    ``reset``); in-process callers ``await seed(app)`` themselves."""
    if size not in seeding.SIZES:
        raise ValueError(f"size must be one of {sorted(seeding.SIZES)}")
    engine = _make_engine(database_url)
    state = SimState(
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
        keys={key_id: secret},
        seed_no=seed,
        size=size,
        verify_signatures=verify_signatures,
        front_base_url=front_base_url,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        empty = await _ensure_schema(engine)
        if empty or reset:
            counts = await seeding.seed(engine, seed=seed, size=size)
            log.info("demo HIS seeded: %s", counts)
        yield
        await engine.dispose()

    app = FastAPI(
        title="Frontdesk HIS bridge (demo HIS)",
        version=p.VERSION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        description="The server side of the HIS bridge protocol. "
        "See docs/his-bridge.md for signing and idempotency.",
    )
    app.state.his_sim = state
    app.include_router(bridge_router())
    app.include_router(operator_router())
    app.include_router(order_sheet_router())

    @app.exception_handler(SimRejected)
    async def _rejected(_request: Request, exc: SimRejected) -> Response:
        return envelope(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return envelope(400, "malformed_json", "the body is not valid JSON")
        where = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5]
        )
        return envelope(422, "invalid_request", where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return envelope(
                exc.status_code, "unknown_operation", "no such operation in this protocol version"
            )
        return envelope(exc.status_code, "invalid_request", str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> Response:
        log.exception("demo HIS failed")
        return envelope(500, "internal_error", "the HIS failed", retryable=True)

    @app.get("/his-sim/photos/{doctor_code}.svg", include_in_schema=False)
    async def photo(doctor_code: str) -> Response:
        # A drawn placeholder portrait: the demo has no photographs of people.
        digits = "".join(c for c in doctor_code if c.isdigit())[-4:] or "0"
        hue = int(digits) * 47 % 360
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120" '
            'viewBox="0 0 120 120">'
            f'<rect width="120" height="120" fill="hsl({hue},45%,85%)"/>'
            f'<circle cx="60" cy="46" r="22" fill="hsl({hue},35%,55%)"/>'
            f'<path d="M20 112c4-26 20-38 40-38s36 12 40 38z" fill="hsl({hue},35%,55%)"/>'
            "</svg>"
        )
        return Response(svg, media_type="image/svg+xml")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BridgeGate, state=state)
    return app


async def seed(
    app: FastAPI, *, seed_no: int | None = None, size: str | None = None, today: date | None = None
) -> dict[str, int]:
    """(Re)create and fill the demo HIS database of ``app`` (tests, benchmarks, CLI)."""
    state: SimState = app.state.his_sim
    await _ensure_schema(state.engine)
    return await seeding.seed(
        state.engine,
        seed=state.seed_no if seed_no is None else seed_no,
        size=size or state.size,
        today=today,
    )


def sim_state(app: FastAPI) -> SimState:
    state: SimState = app.state.his_sim
    return state
