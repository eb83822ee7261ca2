"""The conformance kit passes against the demo HIS and fails against a broken one."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from frontdesk.core.clock import get_clock
from frontdesk.his.conformance import CHECKS, Target, check_and_report, run_checks
from frontdesk.sims.his_sim.app import sim_state
from tests.sims.his_helpers import card_holder, client_for


async def _with_events(his_sim: Any, count: int = 12) -> None:
    async with client_for(his_sim) as staff:
        for n in range(count):
            response = await staff.post(
                "/operator/orders",
                json={
                    "card_no": "6100000001",
                    "kind": "lab",
                    "title": f"检验{n}",
                    "items": [{"name": "空腹血糖", "quantity": 1, "unit_price_fen": 500}],
                },
            )
            assert response.status_code == 200


async def _target(his_sim: Any, secret: str) -> Target:
    name, id_number, _phone, _ = await card_holder(his_sim, "6100000001")
    return Target(
        key_id="test-key",
        secret=secret,
        card_no="6100000001",
        holder_name=name,
        last4=id_number[-4:],
    )


async def test_the_demo_his_conforms(his_sim: Any, his_secret: str) -> None:
    await _with_events(his_sim)
    lines: list[str] = []
    async with client_for(his_sim) as client:
        code = await check_and_report(client, await _target(his_sim, his_secret), lines.append)
    assert code == 0, lines[0]
    table = lines[0]
    assert f"{len(CHECKS)} passed, 0 failed" in table
    assert "12 event(s) in order" in table


async def test_the_kit_suspends_only_the_session_set_aside_for_it(
    his_sim: Any, his_secret: str, his_gateway: Any
) -> None:
    today = get_clock().today()
    schedules = await his_gateway.schedules(
        start=today + timedelta(days=8), end=today + timedelta(days=8)
    )
    spare = schedules[-1].schedule_id
    target = dataclasses.replace(await _target(his_sim, his_secret), suspend_schedule_id=spare)
    async with client_for(his_sim) as client:
        results = {r.name: r for r in await run_checks(client, target)}
    assert all(r.passed for r in results.values()), results
    assert results["suspension write"].detail == (
        f"{spare} suspended once, replayed, pool closed, a second request refused"
    )
    after = await his_gateway.schedules(start=today, end=today + timedelta(days=13))
    assert [s.schedule_id for s in after if s.status.value == "suspended"] == [spare]


async def test_the_kit_fails_a_his_whose_suspension_write_is_broken(
    his_sim: Any, his_secret: str, his_gateway: Any
) -> None:
    today = get_clock().today()
    spare = (
        await his_gateway.schedules(start=today + timedelta(days=8), end=today + timedelta(days=8))
    )[0]
    target = dataclasses.replace(
        await _target(his_sim, his_secret), suspend_schedule_id=spare.schedule_id
    )
    # a broken HIS: every call of the suspension write answers 503
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "error", "path_contains": "/suspend"})
    async with client_for(his_sim) as client:
        results = {r.name: r for r in await run_checks(client, target)}
    assert not results["suspension write"].passed
    assert results["idempotency of a write"].passed


async def test_the_kit_fails_a_his_that_does_not_check_signatures(
    his_sim: Any, his_secret: str
) -> None:
    await _with_events(his_sim, 3)
    sim_state(his_sim).verify_signatures = False  # the deliberately broken variant
    async with client_for(his_sim) as client:
        target = await _target(his_sim, his_secret)
        results = {r.name: r for r in await run_checks(client, target)}
        lines: list[str] = []
        code = await check_and_report(client, target, lines.append)
    failed = sorted(name for name, r in results.items() if not r.passed)
    assert failed == [
        "forged signature refused",
        "nonce replay refused",
        "signature required",
        "stale timestamp refused",
    ]
    assert results["signature required"].detail == "expected HTTP [401], got 200"
    assert code == 1
    assert "FAIL" in lines[0]


async def test_the_kit_fails_a_his_with_broken_responses(his_sim: Any, his_secret: str) -> None:
    async with client_for(his_sim) as staff:
        await staff.put("/operator/faults", json={"mode": "malformed", "path_contains": "/reports"})
    async with client_for(his_sim) as client:
        results = {r.name: r for r in await run_checks(client, await _target(his_sim, his_secret))}
    assert not results["report shapes"].passed
    assert results["catalog shapes"].passed


async def test_the_kit_reads_back_a_settlement_of_today(
    his_sim: Any, his_secret: str, his_gateway: Any
) -> None:
    """With a settlement on today's list, ``settlement read`` fetches it by its payment
    reference and compares it with the list; unknown and refused references are 404."""
    await _with_events(his_sim, 3)
    [first, *_rest] = await his_gateway.unpaid_orders(card_no="6100000001")
    pre = await his_gateway.pre_settle(card_no="6100000001", order_ids=[first.order_id])
    await his_gateway.settle(
        card_no="6100000001",
        order_ids=[first.order_id],
        payment_ref="PCONFTEST000001",
        self_pay_fen=pre.self_pay_fen,
    )
    async with client_for(his_sim) as client:
        results = {r.name: r for r in await run_checks(client, await _target(his_sim, his_secret))}
    assert all(r.passed for r in results.values()), results
    assert results["settlement read"].detail == (
        "unknown reference is not_found; PCONFTEST000001 reads back as listed"
    )


async def test_the_kit_fails_a_his_whose_settlement_read_is_broken(
    his_sim: Any, his_secret: str, his_gateway: Any
) -> None:
    await _with_events(his_sim, 3)
    async with client_for(his_sim) as staff:
        await staff.put(
            "/operator/faults", json={"mode": "malformed", "path_contains": "/settlements/"}
        )
    async with client_for(his_sim) as client:
        results = {r.name: r for r in await run_checks(client, await _target(his_sim, his_secret))}
    failed = sorted(name for name, r in results.items() if not r.passed)
    assert failed == ["settlement read"]
