"""The cashier API (docs/cashier-api.md): the HIS cashier station charges a patient's
payment code for HIS orders and refunds to the original route, through our real app, the
real HIS client and the real WeChat Pay client talking to the simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.billing.conftest import World
from tests.billing.helpers import count, drain, his_rows, his_unpaid, payment_row, snapshot
from tests.billing.window_helpers import HisCaller, requests_count

from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.wechat_sim.pay_state import new_auth_code

PAY = "/front/v1/cashier/payments"
REFUND = "/front/v1/cashier/refunds"


@pytest.fixture
async def station(world: World, clock: FrozenClock) -> AsyncIterator[HisCaller]:
    caller = HisCaller(world.env.front_app, world.env.container.settings, clock)
    yield caller
    await caller.aclose()


async def _order_ids(his_sim: Any, card_no: str) -> list[str]:
    return [o.id for o in await his_unpaid(his_sim, card_no)]


async def _pre(world: World, card_no: str, ids: list[str]) -> Any:
    his = world.env.container.services["his"]
    return await his.pre_settle(card_no=card_no, order_ids=ids)


async def test_a_payment_code_pays_the_orders_and_the_saga_settles_them_once(
    world: World, station: HisCaller, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    pre = await _pre(world, card_no, ids)
    body = {
        "request_id": "W-20261127-0001",
        "card_no": card_no,
        "order_ids": ids,
        "auth_code": new_auth_code("success"),
        "self_pay_fen": pre.self_pay_fen,
        "operator": "C07",
    }

    answer = await station.post(PAY, body)

    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["replayed"] is False and got["failure"] is None
    payment = got["payment"]
    assert payment["state"] == "paid" and payment["channel"] == "MICROPAY"
    assert payment["amount_fen"] == pre.self_pay_fen and payment["order_ids"] == ids
    assert payment["his_state"] == "pending" and payment["transaction_id"]
    assert pay_sim.sim.orders[payment["out_trade_no"]].trade_type == "MICROPAY"

    await drain(container)  # the settlement saga
    status = await station.get(f"{PAY}/{payment['out_trade_no']}", f"card_no={card_no}")
    assert status.status_code == 200
    assert status.json()["payment"]["his_state"] == "settled"
    [settlement] = await his_rows(his_sim, hm.settlement, payment_ref=payment["out_trade_no"])
    assert settlement.self_pay_fen == pre.self_pay_fen
    assert await his_unpaid(his_sim, card_no) == []

    # The station repeats the request (its answer was lost): the same payment, nothing new.
    again = await station.post(PAY, body)
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["payment"]["out_trade_no"] == payment["out_trade_no"]
    assert again.json()["payment"]["his_state"] == "settled"
    assert await count(container, bm.BillingPayment) == 1
    assert len(pay_sim.sim.orders) == 1
    # The same request id with another body is refused.
    other = await station.post(PAY, {**body, "auth_code": new_auth_code("success")})
    assert other.status_code == 422
    assert other.json()["code"] == "billing_request_id_reused"
    assert await count(container, bm.BillingPayment) == 1


@pytest.mark.parametrize(
    ("scenario", "state", "failure"),
    [
        ("userpaying_success", "paid", None),
        ("userpaying_fail", "failed", "payment_failed"),
        ("expired", "failed", "auth_code_invalid"),
        ("insufficient", "failed", "insufficient_funds"),
        ("never", "failed", "payment_cancelled"),
    ],
)
async def test_payment_code_scenarios(
    world: World,
    station: HisCaller,
    his_sim: Any,
    pay_sim: Any,
    scenario: str,
    state: str,
    failure: str | None,
) -> None:
    """5: the patient types a password, we poll, paid; 6: then fails; 7: expired code;
    8: insufficient funds; 9: never confirmed, so the order is reversed at the deadline."""
    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    pre = await _pre(world, card_no, ids)
    answer = await station.post(
        PAY,
        {
            "request_id": f"W-{scenario}",
            "card_no": card_no,
            "order_ids": ids,
            "auth_code": new_auth_code(scenario),
            "self_pay_fen": pre.self_pay_fen,
        },
    )
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["payment"]["state"] == state
    assert got["failure"] == failure
    sim_order = pay_sim.sim.orders[got["payment"]["out_trade_no"]]
    if scenario == "never":
        assert sim_order.state == "REVOKED"  # reversed: the patient can never be charged
    await drain(container)
    row = await payment_row(container, (await _payment_id(container)))
    assert row.state == state
    settled = await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no)
    assert len(settled) == (1 if state == "paid" else 0)
    assert (await his_unpaid(his_sim, card_no) == []) is (state == "paid")


async def _payment_id(container: Any) -> int:
    from sqlalchemy import select

    async with container.db.session() as s:
        return int((await s.execute(select(bm.BillingPayment.id))).scalar_one())


async def test_refunds_to_the_original_route_by_amount_and_by_items_once_per_request(
    world: World, station: HisCaller, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    pre = await _pre(world, card_no, ids)
    paid = await station.post(
        PAY,
        {
            "request_id": "W-pay-1",
            "card_no": card_no,
            "order_ids": ids,
            "auth_code": new_auth_code(),
            "self_pay_fen": pre.self_pay_fen,
        },
    )
    out_trade_no = paid.json()["payment"]["out_trade_no"]
    await drain(container)

    # An amount (money only; e.g. the HIS already reversed the charge at its desk).
    by_amount = {
        "request_id": "W-ref-1",
        "card_no": card_no,
        "out_trade_no": out_trade_no,
        "amount_fen": 100,
        "reason": "患者多缴，退还差额",
    }
    first = await station.post(REFUND, by_amount)
    assert first.status_code == 200, first.text
    refund = first.json()["refund"]
    assert refund["out_refund_no"] == f"{out_trade_no}R01"
    assert (refund["amount_fen"], refund["reason"]) == (100, "患者多缴，退还差额")
    again = await station.post(REFUND, by_amount)
    assert again.json()["replayed"] is True
    assert again.json()["refund"]["out_refund_no"] == refund["out_refund_no"]
    assert await count(container, bm.BillingRefund) == 1
    await drain(container)
    clock.advance(seconds=61)  # WeChat takes refunds of one order at least 60 s apart

    # Items the HIS lists as refundable: the HIS confirms, then WeChat refunds.
    items = await his_rows(his_sim, hm.order_item, order_id=ids[-1])
    by_items = {
        "request_id": "W-ref-2",
        "card_no": card_no,
        "out_trade_no": out_trade_no,
        "item_ids": [items[0].id],
        "reason": "检查取消",
    }
    second = await station.post(REFUND, by_items)
    assert second.status_code == 200, second.text
    assert second.json()["refund"]["out_refund_no"] == f"{out_trade_no}R02"
    await drain(container)
    [his_refund] = await his_rows(his_sim, hm.refund, refund_ref=f"{out_trade_no}R02")
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    await drain(container)
    async with container.db.session() as s:
        from sqlalchemy import select

        refunds = list(await s.scalars(select(bm.BillingRefund).order_by(bm.BillingRefund.id)))
    assert [r.state for r in refunds] == ["success", "success"]
    assert refunds[1].amount_fen == his_refund.amount_fen
    assert [r.reason for r in refunds] == ["window", "window"]
    row = await payment_row(container, refunds[0].payment_id)
    assert row.refunded_fen == 100 + his_refund.amount_fen
    assert sum(r.refund_fen for r in pay_sim.sim.refunds.values()) == row.refunded_fen

    # More than is left is refused, nothing reserved.
    too_much = await station.post(
        REFUND,
        {**by_amount, "request_id": "W-ref-3", "amount_fen": pre.self_pay_fen},
    )
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "billing_refund_exceeds_payment"
    assert await count(container, bm.BillingRefund) == 2
    assert (await payment_row(container, row.id)).refunded_fen == row.refunded_fen
    assert await requests_count(container) == 3  # pay-1, ref-1, ref-2


# --------------------------------------------------------------------------- bad input

STRANGER = "stranger"  # stands for the other card's orders (filled in by the test)


def _bad_payments(good: dict[str, Any], stranger_ids: list[str]) -> list[tuple[str, Any, int, str]]:
    """(name, body, status, code) of pay requests that are signed correctly but refused."""
    fen = good["self_pay_fen"]
    return [
        ("unknown order", {**good, "order_ids": ["O999999999"]}, 404, "billing_order_not_found"),
        (
            "other card's orders",
            {**good, "order_ids": stranger_ids},
            404,
            "billing_order_not_found",
        ),
        (
            "mixed with another card's",
            {**good, "order_ids": [*good["order_ids"], *stranger_ids]},
            404,
            "billing_order_not_found",
        ),
        ("malformed order id", {**good, "order_ids": ["../x"]}, 422, "billing_selection_invalid"),
        (
            "repeated order id",
            {**good, "order_ids": good["order_ids"] * 2},
            422,
            "billing_selection_invalid",
        ),
        ("no orders", {**good, "order_ids": []}, 422, "invalid_request"),
        ("yuan as text", {**good, "self_pay_fen": f"{fen / 100:.2f}"}, 422, "invalid_request"),
        ("yuan as a number", {**good, "self_pay_fen": fen / 100}, 422, "invalid_request"),
        ("fen as a float", {**good, "self_pay_fen": float(fen)}, 422, "invalid_request"),
        ("a boolean", {**good, "self_pay_fen": True}, 422, "invalid_request"),
        ("negative", {**good, "self_pay_fen": -fen}, 422, "billing_amount_invalid"),
        ("zero", {**good, "self_pay_fen": 0}, 422, "billing_amount_invalid"),
        ("overflowing", {**good, "self_pay_fen": 10**20}, 422, "billing_amount_invalid"),
        ("one fen off", {**good, "self_pay_fen": fen + 1}, 409, "billing_amount_mismatch"),
        (
            "amount in yuan units",
            {**good, "self_pay_fen": fen // 100},
            409,
            "billing_amount_mismatch",
        ),
        (
            "bad payment code",
            {**good, "auth_code": "99" + good["auth_code"][2:]},
            422,
            "billing_auth_code_invalid",
        ),
        ("short payment code", {**good, "auth_code": "1300"}, 422, "billing_auth_code_invalid"),
        ("missing card", {k: v for k, v in good.items() if k != "card_no"}, 422, "invalid_request"),
        ("unknown card", {**good, "card_no": "6199999999"}, 404, "billing_order_not_found"),
        ("short request id", {**good, "request_id": "x"}, 422, "billing_selection_invalid"),
    ]


async def test_refused_pay_requests_change_nothing(
    world: World, station: HisCaller, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    stranger_ids = await _order_ids(his_sim, world.stranger.card_no)
    assert stranger_ids
    pre = await _pre(world, card_no, ids)
    good = {
        "request_id": "W-good-0001",
        "card_no": card_no,
        "order_ids": ids,
        "auth_code": new_auth_code(),
        "self_pay_fen": pre.self_pay_fen,
    }
    before = await snapshot(container)
    his_before = [o.id for o in await his_unpaid(his_sim, card_no)]
    body = _json(good)

    signed_refusals: list[tuple[str, dict[str, str], bytes, int, str]] = [
        ("no signature", {"Content-Type": "application/json"}, body, 401, "signature_missing"),
        (
            "wrong secret",
            station.headers("POST", PAY, body, secret="not-the-secret"),
            body,
            401,
            "signature_invalid",
        ),
        (
            "unknown key id",
            station.headers("POST", PAY, body, key_id="someone-else"),
            body,
            401,
            "unknown_key",
        ),
        (
            "stale",
            station.headers("POST", PAY, body, skew_seconds=-301),
            body,
            401,
            "timestamp_out_of_window",
        ),
        (
            "from the future",
            station.headers("POST", PAY, body, skew_seconds=301),
            body,
            401,
            "timestamp_out_of_window",
        ),
        (
            "altered body",
            station.headers("POST", PAY, body),
            _json({**good, "self_pay_fen": 1}),
            401,
            "signature_invalid",
        ),
        (
            "signed for another path",
            station.headers("POST", REFUND, body),
            body,
            401,
            "signature_invalid",
        ),
        (
            "malformed nonce",
            station.headers("POST", PAY, body, nonce="short"),
            body,
            401,
            "signature_invalid",
        ),
        (
            "not JSON",
            station.headers("POST", PAY, b"{not json"),
            b"{not json",
            400,
            "malformed_json",
        ),
    ]
    for name, headers, sent, status, code in signed_refusals:
        answer = await station.http.post(PAY, content=sent, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (status, code), name
        assert set(answer.json()) == {"code", "message", "retryable"}, name
    for name, bad, status, code in _bad_payments(good, stranger_ids):
        answer = await station.post(PAY, bad)
        assert (answer.status_code, answer.json().get("code")) == (status, code), (
            name,
            answer.text,
        )

    # Nothing changed: no payment, event, job, request, WeChat order or HIS change.
    assert await snapshot(container) == before
    assert await requests_count(container) == 0
    assert pay_sim.sim.orders == {}
    assert [o.id for o in await his_unpaid(his_sim, card_no)] == his_before

    # A correctly signed request replayed (same nonce) is refused, even a successful one.
    headers = station.headers("POST", PAY, body)
    first = await station.http.post(PAY, content=body, headers=headers)
    assert first.status_code == 200
    replay = await station.http.post(PAY, content=body, headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "nonce_reused")
    assert await count(container, bm.BillingPayment) == 1
    assert len(pay_sim.sim.orders) == 1


def _json(payload: Any) -> bytes:
    import json

    return json.dumps(payload, ensure_ascii=False).encode()


async def test_refused_refund_requests_change_nothing(
    world: World, station: HisCaller, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    pre = await _pre(world, card_no, ids)
    paid = await station.post(
        PAY,
        {
            "request_id": "W-pay-refunds",
            "card_no": card_no,
            "order_ids": ids,
            "auth_code": new_auth_code(),
            "self_pay_fen": pre.self_pay_fen,
        },
    )
    out_trade_no = paid.json()["payment"]["out_trade_no"]
    await drain(container)
    item = (await his_rows(his_sim, hm.order_item, order_id=ids[0]))[0].id
    good = {
        "request_id": "W-ref-bad",
        "card_no": card_no,
        "out_trade_no": out_trade_no,
        "amount_fen": 100,
        "reason": "患者多缴",
    }
    before = await snapshot(container)
    requests_before = await requests_count(container)
    fen = pre.self_pay_fen
    cases: list[tuple[str, Any, int, str]] = [
        (
            "another card",
            {**good, "card_no": world.stranger.card_no},
            404,
            "billing_payment_not_found",
        ),
        (
            "the other bound card",
            {**good, "card_no": world.family.card_no},
            404,
            "billing_payment_not_found",
        ),
        (
            "unknown payment",
            {**good, "out_trade_no": "P20261127000000000XXXXXXXXXX"},
            404,
            "billing_payment_not_found",
        ),
        ("amount and items", {**good, "item_ids": [item]}, 422, "billing_refund_target_invalid"),
        (
            "neither",
            {k: v for k, v in good.items() if k != "amount_fen"},
            422,
            "billing_refund_target_invalid",
        ),
        ("yuan as text", {**good, "amount_fen": "1.00"}, 422, "invalid_request"),
        ("yuan as a number", {**good, "amount_fen": 1.5}, 422, "invalid_request"),
        ("negative", {**good, "amount_fen": -100}, 422, "billing_amount_invalid"),
        ("zero", {**good, "amount_fen": 0}, 422, "billing_amount_invalid"),
        ("overflowing", {**good, "amount_fen": 2**63}, 422, "billing_amount_invalid"),
        ("more than paid", {**good, "amount_fen": fen + 1}, 409, "billing_refund_exceeds_payment"),
        ("no reason", {k: v for k, v in good.items() if k != "reason"}, 422, "invalid_request"),
        ("blank reason", {**good, "reason": "   "}, 422, "billing_reason_required"),
        (
            "unknown item",
            {**{k: v for k, v in good.items() if k != "amount_fen"}, "item_ids": ["I999999999"]},
            409,
            "billing_items_not_refundable",
        ),
    ]
    for name, bad, status, code in cases:
        answer = await station.post(REFUND, bad)
        assert (answer.status_code, answer.json().get("code")) == (status, code), (
            name,
            answer.text,
        )
    stale = await station.post(REFUND, good, skew_seconds=-400)
    assert stale.json()["code"] == "timestamp_out_of_window"
    assert await snapshot(container) == before
    assert await requests_count(container) == requests_before
    assert pay_sim.sim.refunds == {}
    assert await his_rows(his_sim, hm.refund) == []


async def test_other_writes_complete_while_the_patient_types_the_password(
    world: World,
    station: HisCaller,
    his_sim: Any,
    pay_sim: Any,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A code ending in 5 stays USERPAYING while the adapter polls (up to ~30 s). The
    payment is committed before WeChat is asked and no transaction is open while it
    polls: another writer changes that very payment row (and writes elsewhere) during the
    poll, within a second, on SQLite (one writer at a time) as on PostgreSQL."""
    import asyncio

    from sqlalchemy import update

    from frontdesk.core import audit

    container = world.env.container
    card_no = world.mine.card_no
    ids = await _order_ids(his_sim, card_no)
    pre = await _pre(world, card_no, ids)
    seen: list[tuple[str, int]] = []
    real_sleep = pay_sim.pay._sleep

    async def other_writer() -> None:
        async with container.db.session() as s:
            pid = await _payment_id(container)
            row = await s.get(bm.BillingPayment, pid)
            assert row is not None and row.state == "pending"  # committed before the charge
            moved = await s.execute(
                update(bm.BillingPayment)
                .where(bm.BillingPayment.id == pid, bm.BillingPayment.state == "pending")
                .values(updated_at=clock.now())
            )
            await audit.record(
                s,
                at=clock.now(),
                actor="test:other-writer",
                action="test.write",
                record_type="billing_payment",
                record_id=pid,
            )
            seen.append((pay_sim.sim.orders[row.out_trade_no].state, moved.rowcount))

    async def poll_sleep(seconds: float) -> None:
        if not seen:
            await asyncio.wait_for(other_writer(), timeout=1.0)
        await real_sleep(seconds)

    monkeypatch.setattr(pay_sim.pay, "_sleep", poll_sleep)
    answer = await station.post(
        PAY,
        {
            "request_id": "W-concurrent",
            "card_no": card_no,
            "order_ids": ids,
            "auth_code": new_auth_code("userpaying_success"),
            "self_pay_fen": pre.self_pay_fen,
        },
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["payment"]["state"] == "paid"
    assert seen == [("USERPAYING", 1)]  # the other write went through mid-poll
    row = await payment_row(container, await _payment_id(container))
    assert row.state == "paid" and row.transaction_id
