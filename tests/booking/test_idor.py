"""IDOR matrix over every booking endpoint: only the owner gets a 2xx; another account, an
account that unbound the card, a signed-out visitor, an expired or forged session and a
tampered id all get a refusal, and nothing changes."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import select

from frontdesk.booking.models import Booking, BookingRequest
from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.oa.oauth_routes import SESSION_COOKIE
from tests.accounts.helpers import sim_patients
from tests.accounts.test_pages import csrf_of
from tests.booking.pages import book_via_page, phone

FRONT = "http://testserver"


async def _openid_of(env: Any, booking_id: int) -> str:
    async with env.container.db.session() as s:
        return str(
            (await s.execute(select(Booking.openid).where(Booking.id == booking_id))).scalar_one()
        )


async def _state(env: Any) -> list[tuple[Any, ...]]:
    async with env.container.db.session() as s:
        rows = (await s.execute(select(Booking.id, Booking.status, Booking.card_id))).all()
    return sorted(tuple(r) for r in rows)


async def test_only_the_owner_reaches_a_booking(
    env: Any,
    world: Any,
    his_sim: Any,
    sms_sim: Any,
    clock: FrozenClock,
) -> None:
    alice, bob = world["alice"], world["bob"]
    done = await book_via_page(alice, world["slots"][0])
    booking_id = int(done.headers["location"].split("?")[0].rsplit("/", 1)[1])
    mine = (await alice.get(f"/api/patient/booking/bookings/{booking_id}")).json()
    card_id = mine["card_id"]
    # a family member who bound alice's card and then unbound it
    patients = await sim_patients(his_sim, count=4)
    sms_sim.state.sim.per_minute = 10  # the same phone gets a second code within the minute
    carol = await phone(env, "王五", sms_sim, [patients[0]])
    cards_page = await carol.get("/h5/cards")
    carol_card = re.search(r'href="/h5/cards/(\d+)/unbind"', cards_page.text)
    assert carol_card is not None and int(carol_card.group(1)) == card_id
    unbind_page = await carol.get(f"/h5/cards/{card_id}/unbind")
    gone = await carol.post(f"/h5/cards/{card_id}/unbind", data={"csrf": csrf_of(unbind_page)})
    assert gone.status_code == 303
    signed_out = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.front_app), base_url=FRONT)
    forged = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.front_app), base_url=FRONT)
    forged.cookies.set(SESSION_COOKIE, "forged." + "A" * 40)
    bob_csrf = csrf_of(await bob.get(f"/h5/booking/slots/{world['slots'][2]}/confirm"))
    other_slot = world["slots"][1]

    def requests(csrf: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            ("GET", f"/h5/booking/appointments/{booking_id}", {}),
            ("POST", f"/h5/booking/appointments/{booking_id}/cancel", {"data": {"csrf": csrf}}),
            ("GET", f"/api/patient/booking/bookings/{booking_id}", {}),
            ("POST", f"/api/patient/booking/bookings/{booking_id}/cancel", {}),
            (
                "POST",
                f"/h5/booking/slots/{other_slot}",
                {
                    "data": {
                        "csrf": csrf,
                        "idempotency_key": uuid.uuid4().hex,
                        "card_id": str(card_id),
                    }
                },
            ),
            (
                "POST",
                "/api/patient/booking/bookings",
                {
                    "json": {"card_id": card_id, "slot_id": other_slot},
                    "headers": {"Idempotency-Key": uuid.uuid4().hex},
                },
            ),
        ]

    before = await _state(env)
    carol_csrf = csrf_of(await carol.get("/h5/consent/withdraw"))
    for who, client, csrf in (
        ("another account", bob, bob_csrf),
        ("unbound family member", carol, carol_csrf),
        ("signed out", signed_out, ""),
        ("forged session", forged, ""),
    ):
        for method, url, kwargs in requests(csrf):
            r = await client.request(method, url, **kwargs)
            assert not 200 <= r.status_code < 300, (who, method, url, r.status_code)
            if r.status_code in (302, 303):  # only the sign-in redirect is allowed
                assert r.headers["location"].startswith("/wechat/oauth/start"), (who, url)
    # the lists show nothing of alice's
    assert (await bob.get("/api/patient/booking/bookings")).json() == {"bookings": []}
    assert (await carol.get("/api/patient/booking/bookings")).json() == {"bookings": []}
    # a tampered id (one that does not exist) is "not found" for the owner too
    assert (await alice.get(f"/api/patient/booking/bookings/{booking_id + 999}")).status_code == 404
    assert (
        await alice.post(f"/api/patient/booking/bookings/{booking_id + 999}/cancel")
    ).status_code == 404
    assert await _state(env) == before
    async with env.container.db.session() as s:
        claims = (await s.execute(select(BookingRequest.state))).scalars().all()
    assert claims == ["done"]  # alice's own; refusals leave no claim behind
    # an expired session (a genuine cookie of alice, signed past its max age) is signed out
    settings = env.container.settings
    max_age = settings.wechat_session_max_age_seconds

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - int(max_age) - 60

    old = PastSigner(settings.secret_key.get_secret_value().encode(), salt="wechat-openid-session")
    alice_openid = mine_openid = await _openid_of(env, booking_id)
    expired = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.front_app), base_url=FRONT)
    expired.cookies.set(SESSION_COOKIE, old.sign(mine_openid).decode())
    for method, url, kwargs in requests(""):
        r = await expired.request(method, url, **kwargs)
        assert r.status_code in (401, 303), (url, r.status_code)
    assert alice_openid
    assert await _state(env) == before
    await expired.aclose()
    await signed_out.aclose()
    await forged.aclose()
    await carol.aclose()


async def test_booking_attempts_are_rate_limited(
    env: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = world["alice"]
    monkeypatch.setattr(env.container.settings, "booking_attempts_per_minute_account", 2)
    mine = await alice.get(f"/h5/booking/slots/{world['slots'][0]}/confirm")
    card_id = int(re.findall(r'name="card_id" value="(\d+)"', mine.text)[0])
    answers = []
    for n in range(3):
        r = await alice.post(
            "/api/patient/booking/bookings",
            json={"card_id": card_id, "slot_id": world["slots"][n]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        answers.append(r)
    assert [r.status_code for r in answers] == [201, 409, 429]  # 409: one per doctor per day
    assert answers[2].json()["error"]["code"] == "too_many_requests"
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert len(await _state(env)) == 1


async def test_a_saturated_process_sheds_with_busy(
    env: Any, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frontdesk.web.middleware import InFlightLimitMiddleware

    alice = world["alice"]
    mine = await alice.get(f"/h5/booking/slots/{world['slots'][0]}/confirm")
    card_id = int(re.findall(r'name="card_id" value="(\d+)"', mine.text)[0])
    limit = env.container.settings.booking_max_in_flight
    shedder = _middleware(env.front_app, InFlightLimitMiddleware)
    monkeypatch.setattr(shedder, "in_flight", limit)  # as if that many were running
    r = await alice.post(
        "/api/patient/booking/bookings",
        json={"card_id": card_id, "slot_id": world["slots"][0]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (r.status_code, r.json()["error"]["code"], r.headers["Retry-After"]) == (
        503,
        "busy",
        "1",
    )
    assert await _state(env) == []
    monkeypatch.setattr(shedder, "in_flight", 0)
    ok = await alice.post(
        "/api/patient/booking/bookings",
        json={"card_id": card_id, "slot_id": world["slots"][0]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert ok.status_code == 201 and shedder.in_flight == 0 and shedder.shed == 1


def _middleware(app: Any, kind: type) -> Any:
    """The instance of a middleware class in a built app's stack."""
    node = app.middleware_stack
    while node is not None and not isinstance(node, kind):
        node = getattr(node, "app", None)
    assert node is not None, kind
    return node
