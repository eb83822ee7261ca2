"""Streaming the trade bill to a file: gunzipped and hashed on the way, the same bytes as the
in-memory download, and a corrupt, cut or altered file refused."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from datetime import date

import pytest

from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.pay.port import PayRejected, PayUnavailable
from tests.sims.pay_rig import PaySimRig
from tests.wechat.test_pay_client import paid_order


async def _day_with_trades(pay_sim: PaySimRig, clock: FrozenClock) -> date:
    await paid_order(pay_sim, "P1000001", 2350)
    clock.advance(seconds=1)
    await paid_order(pay_sim, "P1000002", 100)
    day = clock.local_now().date()
    clock.advance(days=1)
    return day


async def test_the_streamed_bill_is_the_downloaded_bill(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    day = await _day_with_trades(pay_sim, clock)
    out = io.BytesIO()

    got = await pay_sim.pay.stream_trade_bill(day, out)

    text = await pay_sim.pay.download_trade_bill(day)
    assert out.getvalue() == text.encode()
    assert got.size_bytes == len(text.encode())
    assert len(got.sha1) == 40


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated gzip"),
        (lambda raw: raw[:10] + b"\x00" * 40 + raw[50:], "corrupt gzip"),
        (lambda raw: gzip.compress(gzip.decompress(raw) + b"x"), "SHA-1 does not match"),
    ],
)
async def test_a_bad_file_is_refused(
    pay_sim: PaySimRig,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    mangle: Callable[[bytes], bytes],
    message: str,
) -> None:
    day = await _day_with_trades(pay_sim, clock)
    real = pay_sim.sim.bill_file
    monkeypatch.setattr(pay_sim.sim, "bill_file", lambda token: mangle(real(token)))

    with pytest.raises(PayUnavailable) as caught:
        await pay_sim.pay.stream_trade_bill(day, io.BytesIO())

    assert message in str(caught.value)


async def test_a_bill_not_yet_published_is_no_statement(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    await paid_order(pay_sim)
    clock.advance(hours=2)  # 11:00 the same day

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.stream_trade_bill(clock.local_now().date(), io.BytesIO())

    assert caught.value.reason == "no_statement"
