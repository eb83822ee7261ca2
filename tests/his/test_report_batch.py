"""Reading many reports in one bridge call (trends), through the real adapter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from frontdesk.core.clock import FrozenClock
from frontdesk.his.port import REPORT_BATCH_MAX, ExamReport, LabReport
from tests.accounts.helpers import sim_patients


async def test_many_reports_in_one_call_unknown_ids_left_out(
    his_gateway: Any, his_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    summaries = await his_gateway.reports(
        card_no=p.card_no, since=clock.today() - timedelta(days=3 * 366)
    )
    assert summaries, "the demo HIS seeds reports for its patients"
    ids = [s.report_id for s in summaries][:REPORT_BATCH_MAX]
    one_by_one = [await his_gateway.report(i) for i in ids]
    batch = await his_gateway.report_bodies([*ids, "R-NO-SUCH", ids[0]])
    assert batch == one_by_one
    assert all(isinstance(b, LabReport | ExamReport) for b in batch)
    assert await his_gateway.report_bodies([]) == []


async def test_more_than_the_batch_limit_is_refused_before_any_call(his_gateway: Any) -> None:
    with pytest.raises(ValueError, match="at most"):
        await his_gateway.report_bodies([f"R{i}" for i in range(REPORT_BATCH_MAX + 1)])


async def test_the_demo_his_refuses_bad_batches(his_sim: Any, his_secret: str) -> None:
    from tests.sims.his_helpers import client_for, signed

    async with client_for(his_sim) as client:
        bodies: list[dict[str, Any]] = [
            {"report_ids": [f"R{i}" for i in range(REPORT_BATCH_MAX + 1)]},
            {"report_ids": []},
            {"report_ids": ["../etc/passwd"]},
            {"ids": ["R1"]},
            {"report_ids": "R1"},
        ]
        for body in bodies:
            response = await signed(client, his_secret, "POST", "/his/v1/reports/batch", body=body)
            assert response.status_code in (400, 422), body
            assert set(response.json()) >= {"code", "message", "retryable"}
