"""Console page for the scheduling office: the WeChat pools and fill rates per session, the
bookings of a session with their check-in state, no-show blocks with a lift (reason
required, audited), and the clinic-suspension entry: pick a session, give a reason, confirm
against the number of patients booked; the suspension is pushed to the HIS through the
outbox and takes effect here once the HIS accepts it (a refusal is shown on the page; a
push the outbox gave up on is shown as "HIS not reached" with a push-again button).
Suspensions entered at the HIS itself still reach us through its event feed, with the HIS's
reason shown when it gave one."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from frontdesk.booking import service as booking
from frontdesk.booking.errors import (
    BlockNotFound,
    LiftReasonRequired,
    SchedulePast,
    ScheduleSuspended,
    SuspensionCountChanged,
    SuspensionNotFound,
    SuspensionNotUnreached,
    SuspensionPending,
    SuspensionReasonRequired,
    SuspensionScheduleUnknown,
)
from frontdesk.catalog import service as catalog
from frontdesk.console.auth import ALL_ROLES, require_role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core.clock import get_clock, now
from frontdesk.core.money import format_fen
from frontdesk.web.deps import SessionDep

router = APIRouter(prefix="/console", include_in_schema=False)
# Roles by value: presentation outside the console does not import its models.
OFFICE_ROLES = frozenset(r for r in ALL_ROLES if r.value in {"scheduling", "admin"})
Office = Annotated[Principal, Depends(require_role(*OFFICE_ROLES))]
register_nav_item("/console/booking", "console.nav.booking", set(OFFICE_ROLES), order=200)


@router.get("/booking")
async def booking_page(
    principal: Office,
    request: Request,
    session: SessionDep,
    day: Annotated[date | None, Query()] = None,
    notice: Annotated[str, Query(max_length=32)] = "",
    error: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    on = day or get_clock().today()
    scheds = await catalog.schedules(session, start=on, end=on)
    counts = await booking.counts_by_schedule(session, schedule_ids=[s.schedule_id for s in scheds])
    names = await catalog.doctor_names(session, sorted({s.doctor_code for s in scheds}))
    rows = []
    for s in scheds:
        c = counts.get(s.schedule_id, {})
        taken = s.slots_total - s.slots_left
        rows.append(
            {
                "s": s,
                "doctor": names[s.doctor_code].name if s.doctor_code in names else s.doctor_code,
                "fill": round(100 * taken / s.slots_total) if s.slots_total else 0,
                "booked": c.get("booked", 0),
                "checked_in": c.get("checked_in", 0),
                "no_show": c.get("no_show", 0),
            }
        )
    return render(
        request,
        "booking.html",
        {
            "day": on,
            "rows": rows,
            "blocks": await booking.blocks(session, now=now()),
            "fen": format_fen,
            "notice": notice,
            "error": error,
        },
        principal=principal,
    )


# The HIS's refusal codes of a suspension that have their own words for staff.
HIS_REFUSALS = frozenset({"schedule_past", "schedule_started", "not_found", "invalid_request"})
SUSPENSION_REFUSALS = (
    SuspensionScheduleUnknown,
    SuspensionReasonRequired,
    SuspensionPending,
    SchedulePast,
    ScheduleSuspended,
)


@router.get("/booking/schedules/{schedule_id}")
async def session_page(
    principal: Office,
    request: Request,
    schedule_id: int,
    session: SessionDep,
    notice: Annotated[str, Query(max_length=32)] = "",
    error: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    sched = await catalog.schedule(session, schedule_id)
    rows = await booking.session_bookings(session, schedule_id=schedule_id)
    return render(
        request,
        "booking_session.html",
        {
            "s": sched,
            "rows": rows,
            "mask": booking.mask_card_no,
            "local": lambda v: v.astimezone(get_clock().tz).strftime("%H:%M"),
            "suspensions": [
                {
                    "x": x,
                    "state": "his_unreached" if x.his_unreached else x.state,
                    "state_key": "console.booking.suspension_"
                    + ("his_unreached" if x.his_unreached else x.state),
                    "refusal_key": "console.booking.his_refused_"
                    + (x.refusal_code if x.refusal_code in HIS_REFUSALS else "other"),
                }
                for x in await booking.suspensions(session, schedule_id=schedule_id)
            ],
            "booked": await booking.booked_count(session, schedule_id=schedule_id),
            "notice": notice,
            "error": error,
        },
        principal=principal,
    )


@router.post("/booking/schedules/{schedule_id}/suspend")
async def suspend(
    principal: Office,
    request: Request,
    schedule_id: int,
    session: SessionDep,
    reason: Annotated[str, Form(max_length=1000)] = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    booked: Annotated[int, Form(ge=0, le=1_000_000)] = -1,
) -> Response:
    """Without ``confirm``: check, then show how many patients would be told. With it (and
    the count shown): record the suspension and push it to the HIS."""
    back = f"/console/booking/schedules/{schedule_id}"
    clean = " ".join(reason.split())
    try:
        if not clean or len(clean) > booking.SUSPENSION_REASON_MAX:
            raise SuspensionReasonRequired
        if confirm == "1":
            await booking.request_suspension(
                session,
                schedule_id=schedule_id,
                reason=clean,
                staff=principal.actor,
                booked_seen=booked,
                now=now(),
            )
            return RedirectResponse(f"{back}?notice=suspension_requested", status_code=303)
        count = await booking.check_suspendable(session, schedule_id=schedule_id, now=now())
    except SuspensionCountChanged:
        count = await booking.check_suspendable(session, schedule_id=schedule_id, now=now())
        changed = True
    except SuspensionScheduleUnknown as exc:
        return RedirectResponse(f"/console/booking?error={exc.code}", status_code=303)
    except SUSPENSION_REFUSALS as exc:
        return RedirectResponse(f"{back}?error={exc.code}", status_code=303)
    else:
        changed = False
    return render(
        request,
        "booking_suspend_confirm.html",
        {
            "s": await catalog.schedule(session, schedule_id),
            "booked": count,
            "reason": clean,
            "changed": changed,
        },
        principal=principal,
    )


@router.post("/booking/suspensions/{suspension_id}/push")
async def push_again(
    principal: Office,
    request: Request,
    suspension_id: int,
    session: SessionDep,
) -> Response:
    """Push again a suspension the HIS was not reached with (same request_ref)."""
    try:
        row = await booking.push_suspension_again(
            session, suspension_id=suspension_id, staff=principal.actor, now=now()
        )
    except SuspensionNotFound as exc:
        return RedirectResponse(f"/console/booking?error={exc.code}", status_code=303)
    except SuspensionNotUnreached as exc:
        back = f"/console/booking/schedules/{exc.params['schedule_id']}"
        return RedirectResponse(f"{back}?error={exc.code}", status_code=303)
    return RedirectResponse(
        f"/console/booking/schedules/{row.schedule_id}?notice=suspension_pushed_again",
        status_code=303,
    )


@router.post("/booking/blocks/{block_id}/lift")
async def lift(
    principal: Office,
    request: Request,
    block_id: int,
    session: SessionDep,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        await booking.lift_block(
            session, block_id=block_id, staff=principal.actor, reason=reason, now=now()
        )
    except (BlockNotFound, LiftReasonRequired) as exc:
        return RedirectResponse(f"/console/booking?error={exc.code}", status_code=303)
    return RedirectResponse("/console/booking?notice=lifted", status_code=303)
