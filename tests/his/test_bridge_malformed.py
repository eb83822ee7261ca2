"""A HIS that answers something other than the protocol is unavailable, never a crash.

The counterpart here is a deliberately broken HIS (an ``httpx.MockTransport`` returning
canned bytes); the adapter under test is the real one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import httpx
import pytest

from frontdesk.his.bridge import HttpHisGateway
from frontdesk.his.port import HisRejected, HisUnavailable

SCHEDULE = (
    '{"schedule_id": "S1", "doctor_code": "D1", "department_code": "GIM", '
    '"on_date": "2026-11-27", "period": "am", "level": "expert", '
    '"fee_fen": FEE, "status": "open", "wechat_quota": 9}'
)
APPOINTMENT = (
    '{"appointment_id": "A1", "schedule_id": "S1", "sequence_no": 1, '
    '"card_no": "6100000001", "booking_ref": "BK000001", "status": "booked", '
    '"registered_at": "AT"}'
)


def _gateway(
    status: int, body: bytes, calls: list[int] | None = None, content_type: str = "application/json"
) -> HttpHisGateway:
    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(1)
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://his")
    return HttpHisGateway(
        base_url="http://his",
        key_id="k",
        secret="s",
        attempts=2,
        backoff_seconds=0.001,
        client=client,
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b"<html>Bad Gateway</html>"),
        (200, b"not json"),
        (200, b'{"items": [' + SCHEDULE.replace("FEE", '"1000"').encode() + b"]}"),
        (200, b'{"items": [' + SCHEDULE.replace("FEE", "10.5").encode() + b"]}"),
        (200, b'{"items": [{"schedule_id": "S1"}]}'),
        (
            200,
            b'{"items": ['
            + SCHEDULE.replace("FEE", "1000").replace('"am"', '"night"').encode()
            + b"]}",
        ),
        (200, b'{"things": []}'),
        (204, b""),
        (404, b'{"detail": "Not Found"}'),
    ],
)
async def test_malformed_answers_are_unavailable(status: int, body: bytes) -> None:
    gateway = _gateway(status, body)
    with pytest.raises(HisUnavailable) as bad:
        await gateway.schedules(start=date(2026, 11, 27), end=date(2026, 11, 27))
    assert bad.value.code == "malformed_response"


async def test_a_time_without_offset_is_malformed() -> None:
    gateway = _gateway(200, APPOINTMENT.replace("AT", "2026-11-27T09:00:00").encode())
    with pytest.raises(HisUnavailable) as bad:
        await gateway.appointment("A1")
    assert bad.value.code == "malformed_response"
    ok = _gateway(200, APPOINTMENT.replace("AT", "2026-11-27T09:00:00+08:00").encode())
    assert (await ok.appointment("A1")).registered_at.utcoffset() is not None


async def test_unknown_fields_are_ignored_by_the_client() -> None:
    body = APPOINTMENT.replace("AT", "2026-11-27T01:00:00Z")[:-1] + ', "new_field": [1]}'
    appointment = await _gateway(200, body.encode()).appointment("A1")
    assert appointment.appointment_id == "A1"


async def test_retryable_envelopes_are_retried_and_terminal_ones_are_not() -> None:
    calls: list[int] = []
    busy = _gateway(503, b'{"code": "busy", "message": "later", "retryable": true}', calls)
    with pytest.raises(HisUnavailable):
        await busy.departments()
    assert len(calls) == 2

    calls.clear()
    refused = _gateway(409, b'{"code": "slot_taken", "message": "x", "retryable": false}', calls)
    with pytest.raises(HisRejected) as rejected:
        await refused.departments()
    assert rejected.value.code == "slot_taken"
    assert len(calls) == 1


async def test_connection_failure_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://his")
    gateway = HttpHisGateway(
        base_url="http://his", key_id="k", secret="s", attempts=1, client=client
    )
    with pytest.raises(HisUnavailable) as down:
        await gateway.departments()
    assert down.value.code == "connection_failed"


async def test_ids_that_would_change_the_path_are_refused_before_sending() -> None:
    calls: list[int] = []
    gateway = _gateway(200, b"{}", calls)
    bad_ids: list[Callable[[], Awaitable[Any]]] = [
        lambda: gateway.report("../departments"),
        lambda: gateway.appointment("a/b"),
        lambda: gateway.slot_pool(""),
        lambda: gateway.execution_status("x" * 33),
    ]
    for call in bad_ids:
        with pytest.raises(HisRejected) as refused:
            await call()
        assert refused.value.code == "invalid_request"
    assert calls == []
