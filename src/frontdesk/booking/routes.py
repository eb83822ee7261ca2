"""Patient pages (H5) and the patient JSON API for browsing the catalog and booking.

Presentation only: the rules are in ``booking.service`` and ``catalog.service``. Every
route takes ``PatientScopeDep``; a booking or card outside the caller's scope is "not
found". Booking requests carry an idempotency key (the H5 confirm page embeds a fresh one;
API clients send ``Idempotency-Key``); attempts are rate-limited per account and per IP in
their own short transaction, before anything else.

The JSON API is authenticated by the same session cookie as the pages. It is not open to
cross-site forgery: its writes need a JSON body and an ``Idempotency-Key`` header, which a
browser only sends cross-origin after a CORS preflight that this app never grants.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.schemas import PatientScope
from frontdesk.booking import errors
from frontdesk.booking import service as booking
from frontdesk.booking.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    BookingPolicy,
    BookingView,
    BookRequest,
)
from frontdesk.catalog import service as catalog
from frontdesk.core import ratelimit
from frontdesk.core.clock import get_clock, now
from frontdesk.core.errors import DomainError, Invalid, TooManyRequests
from frontdesk.core.money import format_fen
from frontdesk.core.ratelimit import Limit
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.errors import error_response
from frontdesk.web.patient import (
    OpenIdDep,
    PatientScopeDep,
    SignInRequired,
    check_csrf,
    patient_scope,
    render,
    signed_in_openid,
)

router = APIRouter(prefix="/h5/booking", include_in_schema=False)
api = APIRouter(prefix="/api/patient/booking", tags=["booking"])

# Schedule pages are the read storm at release time: a few seconds of staleness is fine
# (the guarded UPDATE decides who gets a slot), so they come from memory.
_schedule_cache = catalog.page_cache


class BodyInvalid(Invalid):
    code = "invalid"


def _policy(request: Request) -> BookingPolicy:
    return BookingPolicy.from_settings(request.app.state.settings)


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _window(request: Request) -> tuple[date, date]:
    today = get_clock().today()
    days = request.app.state.settings.booking_schedule_days
    return today, today + timedelta(days=days - 1)


def _local(value: Any) -> Any:
    return value.astimezone(get_clock().tz)


def _ctx(**extra: Any) -> dict[str, Any]:
    return {"fen": format_fen, "local": _local, **extra}


async def _credit(session: AsyncSession, scope: PatientScope, policy: BookingPolicy) -> Any:
    active = scope.active
    if active is None:
        return None
    return await booking.credit_status(session, card_id=active.card_id, policy=policy, now=now())


# --------------------------------------------------------------------------- the booking core


@dataclass(frozen=True)
class Gate:
    """A booking attempt that passed admission, the per-IP limit and its own checks."""

    openid: str
    key: str
    body: BookRequest


# Per-IP attempts are counted in memory (see ``ratelimit.LocalLimiter``): one row per IP in
# the database would be locked by every booking transaction from that IP in turn.
_ip_limiters: dict[int, ratelimit.LocalLimiter] = {}


def _ip_limiter(request: Request) -> ratelimit.LocalLimiter:
    n = request.app.state.settings.booking_attempts_per_minute_ip
    limiter = _ip_limiters.get(n)
    if limiter is None:
        limiter = _ip_limiters[n] = ratelimit.LocalLimiter(Limit("booking.ip", n, 60))
    return limiter


def _account_limit(request: Request) -> Limit:
    return Limit(
        "booking.account", request.app.state.settings.booking_attempts_per_minute_account, 60
    )


async def _read_attempt(request: Request, openid: str) -> tuple[str, BookRequest]:
    if request.scope["path"].startswith("/api/"):
        key = request.headers.get("idempotency-key", "")
        try:
            return key, BookRequest.model_validate_json(await request.body())
        except (ValueError, ValidationError) as exc:
            raise BodyInvalid from exc
    form = await request.form()
    token = form.get("csrf")
    check_csrf(request, openid, token if isinstance(token, str) else None)
    form_key = form.get("idempotency_key")
    card_id, slot_id = form.get("card_id"), request.path_params.get("slot_id", "")
    if not isinstance(card_id, str) or not card_id.isdigit() or not str(slot_id).isdigit():
        raise BodyInvalid
    try:
        body = BookRequest(card_id=int(card_id), slot_id=int(slot_id))
    except ValidationError as exc:
        raise BodyInvalid from exc
    return form_key if isinstance(form_key, str) else "", body


def _caches(request: Request) -> None:
    catalog.configure_caches(request.app.state.settings.booking_cache_seconds)


async def booking_gate(request: Request) -> Gate:
    """The route's first dependency, before its transaction opens (load shedding happened
    before routing, in ``web.middleware.InFlightLimitMiddleware``): the per-IP limit, the
    request's own checks, and "full" for a pool this process knows is empty. None of it
    touches the database, except one primary-key read of the key when the pool is known
    full (a retried request that already booked still gets its booking)."""
    openid = signed_in_openid(request)
    key, body = await _read_attempt(request, openid)
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise errors.IdempotencyKeyInvalid
    at = now()
    limiter = _ip_limiter(request)
    if limiter.hit(_ip(request), now=at) > limiter.limit.max_events:
        raise TooManyRequests(retry_after=ratelimit.retry_after(limiter.limit, at))
    _caches(request)
    slot = catalog.cached_slot(body.slot_id)
    if slot is not None and catalog.known_full(slot.schedule_id):
        async with request.app.state.session_provider() as s:
            replay = await booking.replayed_booking(s, openid=openid, key=key)
        if replay is None:
            raise errors.ScheduleFull
    return Gate(openid=openid, key=key, body=body)


GateDep = Annotated[Gate, Depends(booking_gate)]


@dataclass(frozen=True)
class Booked:
    view: BookingView
    replayed: bool


async def _book(request: Request, session: AsyncSession, scope: PatientScope, gate: Gate) -> Booked:
    """One transaction per attempt (the request's): ``booking.attempt`` counts it for the
    account, claims the idempotency key, books and records the booking under the key. A
    refusal raises; the routes answer it without raising, so the count commits (a loop
    cannot reset its own counter by failing) with the key's claim already dropped."""
    if gate.openid != scope.openid:  # the same cookie feeds both; never trust a mix
        raise SignInRequired
    view, replayed = await booking.attempt(
        session,
        scope=scope,
        key=gate.key,
        request_hash=gate.body.fingerprint(),
        card_id=gate.body.card_id,
        slot_id=gate.body.slot_id,
        limit=_account_limit(request),
        policy=_policy(request),
        now=now(),
        ip=_ip(request),
    )
    return Booked(view, replayed=replayed)


def _refusal(request: Request, exc: DomainError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return error_response(request, status=exc.status, code=exc.code, headers=headers, **exc.params)


# --------------------------------------------------------------------------- H5 pages


@router.get("")
async def departments_page(
    request: Request,
    scope: PatientScopeDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    depts = await catalog.departments(session, query=q)
    groups: dict[str, list[Any]] = {}
    for d in depts:
        groups.setdefault(d.group, []).append(d)
    policy = _policy(request)
    return render(
        request,
        "catalog/departments.html",
        _ctx(groups=groups, q=q, credit=await _credit(session, scope, policy), active=scope.active),
        openid=scope.openid,
    )


@router.get("/departments/{code}")
async def doctors_page(
    request: Request, code: str, scope: PatientScopeDep, session: SessionDep
) -> Response:
    dept = await catalog.department(session, code[:32])
    start, end = _window(request)
    docs = await catalog.doctors(session, department_code=dept.code, start=start, end=end)
    return render(
        request,
        "catalog/doctors.html",
        _ctx(department=dept, doctors=docs),
        openid=scope.openid,
    )


async def _doctor_schedule(request: Request, session: AsyncSession, code: str) -> Any:
    start, end = _window(request)
    key = (code, start)
    _caches(request)
    hit = _schedule_cache.get(key)
    if hit is not None:
        return hit
    doc = await catalog.doctor(session, code, start=start, end=end)
    scheds = await catalog.schedules(session, start=start, end=end, doctor_code=code)
    value = (doc, scheds, [start + timedelta(days=n) for n in range((end - start).days + 1)])
    _schedule_cache.put(key, value)
    return value


async def _schedule_slots(request: Request, session: AsyncSession, schedule_id: int) -> Any:
    """A session's slots page data, from memory for ``booking_cache_seconds`` (the read
    storm at the release time; the guarded UPDATE decides who gets a slot)."""
    start, end = _window(request)
    key = ("slots", schedule_id, start)
    _caches(request)
    hit = _schedule_cache.get(key)
    if hit is not None:
        return hit
    sched = await catalog.schedule(session, schedule_id)
    doc = await catalog.doctor(session, sched.doctor_code, start=start, end=end)
    slots = await catalog.slots(session, schedule_id=schedule_id)
    value = (sched, doc, slots)
    _schedule_cache.put(key, value)
    return value


@router.get("/doctors/{code}")
async def doctor_page(
    request: Request, code: str, scope: PatientScopeDep, session: SessionDep
) -> Response:
    doc, scheds, days = await _doctor_schedule(request, session, code[:32])
    policy = _policy(request)
    by_day: dict[date, dict[str, Any]] = {d: {} for d in days}
    for s in scheds:
        by_day.setdefault(s.on_date, {})[s.period] = s
    return render(
        request,
        "catalog/doctor.html",
        _ctx(
            doctor=doc,
            days=days,
            by_day=by_day,
            release=lambda d: _local(booking.release_at(d, policy)),
            released=lambda d: now() >= booking.release_at(d, policy),
            credit=await _credit(session, scope, policy),
            rebook=request.query_params.get("rebook", ""),
        ),
        openid=scope.openid,
    )


@router.get("/schedules/{schedule_id}")
async def schedule_page(
    request: Request, schedule_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    sched, doc, slots = await _schedule_slots(request, session, schedule_id)
    policy = _policy(request)
    return render(
        request,
        "booking/slots.html",
        _ctx(
            schedule=sched,
            doctor=doc,
            slots=slots,
            released=now() >= booking.release_at(sched.on_date, policy),
            opens_at=_local(booking.release_at(sched.on_date, policy)),
            cutoff=policy.cutoff,
            now=now(),
        ),
        openid=scope.openid,
    )


async def _confirm_context(
    request: Request, session: AsyncSession, scope: PatientScope, slot_id: int
) -> dict[str, Any]:
    slot = await catalog.slot_for_booking(session, slot_id=slot_id)
    if slot is None:
        raise errors.SlotUnknown
    start, end = _window(request)
    doc = await catalog.doctor(session, slot.doctor_code, start=start, end=end)
    dept = await catalog.department(session, slot.department_code)
    policy = _policy(request)
    return _ctx(
        slot=slot,
        doctor=doc,
        department=dept,
        card=scope.active,
        deadline=_local(booking.cancel_deadline(slot.on_date, policy)),
        credit=await _credit(session, scope, policy),
        idempotency_key=secrets.token_urlsafe(24),
        pay_at_booking=policy.pay_at_booking,
        hold_minutes=int(policy.hold.total_seconds() // 60),
    )


@router.get("/slots/{slot_id}/confirm")
async def confirm_page(
    request: Request, slot_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    ctx = await _confirm_context(request, session, scope, slot_id)
    return render(request, "booking/confirm.html", ctx, openid=scope.openid)


@router.post("/slots/{slot_id}")
async def book_page(
    gate: GateDep,
    request: Request,
    slot_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
) -> Response:
    try:
        view = (await _book(request, session, scope, gate)).view
    except DomainError as exc:
        if exc.status in (401, 404, 429):
            # Answer here (not by raising) so the count and the dropped claim commit.
            return _refusal(request, exc)
        ctx = await _confirm_context(request, session, scope, slot_id)
        ctx.update(error=exc.code, error_params=exc.params)
        return render(request, "booking/confirm.html", ctx, status=exc.status, openid=scope.openid)
    # at_booking fee mode: the booking is a hold; its page is the pay step.
    notice = "held" if view.status == "held" else "booked"
    return RedirectResponse(
        f"/h5/booking/appointments/{view.booking_id}?notice={notice}", status_code=303
    )


_UPCOMING = ("booked", "held")


@router.get("/appointments")
async def appointments_page(
    request: Request, scope: PatientScopeDep, session: SessionDep
) -> Response:
    policy = _policy(request)
    views = await booking.bookings_of(session, scope=scope, policy=policy, now=now())
    today = get_clock().today()
    names = await catalog.doctor_names(session, sorted({v.doctor_code for v in views}))
    return render(
        request,
        "booking/appointments.html",
        _ctx(
            upcoming=[v for v in views if v.on_date >= today and v.status in _UPCOMING],
            past=[v for v in views if not (v.on_date >= today and v.status in _UPCOMING)],
            doctors=names,
            cards={c.card_id: c for c in scope.cards},
            credit=await _credit(session, scope, policy),
            notice=request.query_params.get("notice", ""),
        ),
        openid=scope.openid,
    )


@router.get("/appointments/{booking_id}")
async def appointment_page(
    request: Request, booking_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    policy = _policy(request)
    view = await booking.booking_of(
        session, scope=scope, booking_id=booking_id, policy=policy, now=now()
    )
    names = await catalog.doctor_names(session, [view.doctor_code])
    dept = await catalog.department(session, view.department_code)
    return render(
        request,
        "booking/appointment.html",
        _ctx(
            b=view,
            doctor=names.get(view.doctor_code),
            department=dept,
            card={c.card_id: c for c in scope.cards}.get(view.card_id),
            notice=request.query_params.get("notice", ""),
        ),
        openid=scope.openid,
    )


@router.post("/appointments/{booking_id}/cancel")
async def cancel_page(
    request: Request,
    booking_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    await booking.cancel(
        session, scope=scope, booking_id=booking_id, policy=_policy(request), now=now()
    )
    return RedirectResponse(
        f"/h5/booking/appointments/{booking_id}?notice=cancelled", status_code=303
    )


@router.post("/appointments/{booking_id}/pay")
async def pay_fee_page(
    request: Request,
    booking_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The pay step of a hold (at_booking fee mode): start (or resume) the JSAPI payment of
    the schedule's fee and go to billing's payment page (the WeChat JS bridge)."""
    check_csrf(request, scope.openid, csrf)
    placed = await _pay_fee(request, session, scope, container, booking_id)
    return RedirectResponse(f"/h5/payments/{placed.payment_id}", status_code=303)


async def _pay_fee(
    request: Request, session: AsyncSession, scope: PatientScope, container: Any, booking_id: int
) -> Any:
    pay_service = container.services.get("pay")
    if pay_service is None:
        raise errors.NotAwaitingPayment("WeChat Pay is not configured")
    async with session.begin_nested():
        return await booking.start_fee_payment(
            session,
            scope=scope,
            booking_id=booking_id,
            pay=pay_service,
            now=now(),
            client_ip=_ip(request),
        )


# --------------------------------------------------------------------------- JSON API


def _json(view: BookingView) -> dict[str, Any]:
    return {
        "booking_id": view.booking_id,
        "booking_ref": view.booking_ref,
        "card_id": view.card_id,
        "schedule_id": view.schedule_id,
        "doctor_code": view.doctor_code,
        "department_code": view.department_code,
        "on_date": view.on_date.isoformat(),
        "period": view.period,
        "sequence_no": view.sequence_no,
        "starts_at": view.starts_at.isoformat(),
        "ends_at": view.ends_at.isoformat(),
        "fee_fen": view.fee_fen,
        "status": view.status,
        "his_state": view.his_state,
        "cancel_deadline_at": view.cancel_deadline_at.isoformat(),
        "cancellable": view.cancellable,
        "not_cancellable_reason": view.not_cancellable_reason,
        "hold_expires_at": view.hold_expires_at.isoformat() if view.hold_expires_at else None,
        "fee_payment_id": view.fee_payment_id,
        "fee_state": view.fee_state,
    }


BOOK_API_PATH = "/api/patient/booking/bookings"


async def book_attempt(request: Request) -> Response:
    """``POST /api/patient/booking/bookings``, the request of the release-time rush.

    The app serves it before routing (``web.middleware.HotRouteMiddleware``; the routed
    ``api_book`` below is the same function, for the OpenAPI schema and apps built without
    the hot lane): the gate (admission, per-IP limit, body, "known full"), then one
    transaction (the app's session provider) with the caller's scope read by
    ``web.patient.patient_scope``, the one place it is decided, and the attempt. A refusal
    is answered, not raised, so the count and the dropped claim commit."""
    gate = await booking_gate(request)
    async with request.app.state.session_provider() as session:
        scope = await patient_scope(request, session)
        refused: Response | None = None
        try:
            done = await _book(request, session, scope, gate)
        except DomainError as exc:
            refused = _refusal(request, exc)
    if refused is not None:
        return refused
    return JSONResponse(_json(done.view), status_code=200 if done.replayed else 201)


@api.post("/bookings", status_code=201)
async def api_book(request: Request, _openid: OpenIdDep) -> Response:
    """Book a slot for one of the caller's cards: body ``{"card_id", "slot_id"}``, header
    ``Idempotency-Key``. The same key returns the same booking (200); with another body it
    is refused (422); while the first request is still running, 409."""
    return await book_attempt(request)


@api.get("/bookings")
async def api_bookings(request: Request, scope: PatientScopeDep, session: SessionDep) -> Any:
    views = await booking.bookings_of(session, scope=scope, policy=_policy(request), now=now())
    return {"bookings": [_json(v) for v in views]}


@api.get("/bookings/{booking_id}")
async def api_booking(
    request: Request, booking_id: int, scope: PatientScopeDep, session: SessionDep
) -> Any:
    view = await booking.booking_of(
        session, scope=scope, booking_id=booking_id, policy=_policy(request), now=now()
    )
    return _json(view)


@api.post("/bookings/{booking_id}/cancel")
async def api_cancel(
    request: Request, booking_id: int, scope: PatientScopeDep, session: SessionDep
) -> Any:
    view = await booking.cancel(
        session, scope=scope, booking_id=booking_id, policy=_policy(request), now=now()
    )
    return _json(view)


@api.post("/bookings/{booking_id}/pay")
async def api_pay_fee(
    request: Request,
    booking_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """The JSAPI pay params of a hold's fee (the amount is the schedule's, never the
    body's: the body is ignored)."""
    placed = await _pay_fee(request, session, scope, container, booking_id)
    return {"payment_id": placed.payment_id, "pay_params": placed.pay_params}


@api.get("/schedules/{schedule_id}/slots")
async def api_slots(
    request: Request, schedule_id: int, scope: PatientScopeDep, session: SessionDep
) -> Any:
    sched, _doc, slots = await _schedule_slots(request, session, schedule_id)
    return {
        "schedule_id": sched.schedule_id,
        "status": sched.status,
        "fee_fen": sched.fee_fen,
        "slots_left": sched.slots_left,
        "slots": [
            {
                "slot_id": s.slot_id,
                "sequence_no": s.sequence_no,
                "starts_at": s.starts_at.isoformat(),
                "ends_at": s.ends_at.isoformat(),
                "free": s.free,
            }
            for s in slots
        ],
    }
