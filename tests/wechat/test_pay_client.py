"""End to end: our real WeChat Pay client against the simulator over ASGITransport."""

from __future__ import annotations

import gzip
from dataclasses import replace
from datetime import date, datetime, timedelta

import httpx
import pytest

from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.devkeys import KeySet, make_keyset
from frontdesk.wechat.pay.port import (
    BillType,
    CodePayOrder,
    JsapiOrder,
    NativeOrder,
    PayRejected,
    PayUnavailable,
    RefundRequest,
    RefundStatus,
    TradeState,
)
from tests.sims.pay_rig import PaySimRig, build_pay_rig

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def jsapi(out_trade_no: str = "P20261127000001", amount_fen: int = 2350) -> JsapiOrder:
    return JsapiOrder(
        out_trade_no=out_trade_no,
        description="门诊缴费-检验费",
        amount_fen=amount_fen,
        openid=OPENID,
        attach="bill:42",
    )


async def pay_on_sheet(rig: PaySimRig, prepay_id: str, action: str = "pay") -> httpx.Response:
    params = rig.pay.jsapi_pay_params(prepay_id).as_bridge_dict()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=rig.sim_app), base_url="http://sim"
    ) as phone:
        return await phone.post("/sim/pay/confirm", json={**params, "action": action})


async def test_jsapi_order_paid_on_the_sheet_is_seen_by_query(pay_sim: PaySimRig) -> None:
    prepay_id = await pay_sim.pay.create_jsapi_order(jsapi())

    unpaid = await pay_sim.pay.query_order("P20261127000001")
    answer = await pay_on_sheet(pay_sim, prepay_id)
    paid = await pay_sim.pay.query_order("P20261127000001")

    assert prepay_id.startswith("wx")
    assert (unpaid.state, unpaid.amount_fen, unpaid.transaction_id) == (
        TradeState.NOTPAY,
        2350,
        None,
    )
    assert answer.json()["err_msg"] == "get_brand_wcpay_request:ok"
    assert paid.state is TradeState.SUCCESS
    assert (paid.amount_fen, paid.payer_total_fen, paid.openid, paid.attach) == (
        2350,
        2350,
        OPENID,
        "bill:42",
    )
    assert paid.transaction_id is not None
    assert paid.transaction_id.startswith("42000")
    assert paid.success_at == pay_sim.sim.now()
    assert paid.paid


async def test_pay_params_are_signed_with_the_merchant_key(pay_sim: PaySimRig) -> None:
    params = pay_sim.pay.jsapi_pay_params("wx201410272009395522657a690389285100")

    assert params.package == "prepay_id=wx201410272009395522657a690389285100"
    assert params.sign_type == "RSA"
    assert params.time_stamp == str(int(pay_sim.sim.now().timestamp()))
    assert signing.verify_pay_sign(
        pay_sim.keys.merchant_public_key,
        app_id=params.app_id,
        time_stamp=params.time_stamp,
        nonce_str=params.nonce_str,
        package=params.package,
        pay_sign=params.pay_sign,
    )


async def test_a_cancelled_sheet_leaves_the_order_unpaid(pay_sim: PaySimRig) -> None:
    prepay_id = await pay_sim.pay.create_jsapi_order(jsapi())

    answer = await pay_on_sheet(pay_sim, prepay_id, action="cancel")

    assert answer.json()["err_msg"] == "get_brand_wcpay_request:cancel"
    assert (await pay_sim.pay.query_order("P20261127000001")).state is TradeState.NOTPAY


async def test_same_order_twice_gives_the_same_prepay_id_and_changed_params_are_refused(
    pay_sim: PaySimRig,
) -> None:
    first = await pay_sim.pay.create_jsapi_order(jsapi())
    again = await pay_sim.pay.create_jsapi_order(jsapi())

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.create_jsapi_order(jsapi(amount_fen=1))

    assert first == again
    assert (caught.value.reason, caught.value.vendor_code) == (
        "out_trade_no_used",
        "OUT_TRADE_NO_USED",
    )
    assert (await pay_sim.pay.query_order("P20261127000001")).amount_fen == 2350


async def test_native_order_paid_by_scanning(pay_sim: PaySimRig) -> None:
    code_url = await pay_sim.pay.create_native_order(
        NativeOrder(out_trade_no="N20261127000001", description="自助机缴费", amount_fen=100)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=pay_sim.sim_app), base_url="http://sim"
    ) as phone:
        scanned = await phone.post(
            "/sim/pay/native/confirm", json={"code_url": code_url, "openid": OPENID}
        )

    payment = await pay_sim.pay.query_order("N20261127000001")

    assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")
    assert scanned.status_code == 200
    assert (payment.state, payment.trade_type, payment.openid) == (
        TradeState.SUCCESS,
        "NATIVE",
        OPENID,
    )


async def test_closed_order_cannot_be_paid(pay_sim: PaySimRig) -> None:
    prepay_id = await pay_sim.pay.create_jsapi_order(jsapi())

    await pay_sim.pay.close_order("P20261127000001")
    await pay_sim.pay.close_order("P20261127000001")  # closing twice is harmless
    answer = await pay_on_sheet(pay_sim, prepay_id)

    assert answer.status_code == 400
    assert answer.json()["err_msg"] == "get_brand_wcpay_request:fail"
    assert (await pay_sim.pay.query_order("P20261127000001")).state is TradeState.CLOSED


async def test_closing_a_paid_order_is_refused(pay_sim: PaySimRig) -> None:
    await pay_on_sheet(pay_sim, await pay_sim.pay.create_jsapi_order(jsapi()))

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.close_order("P20261127000001")

    assert caught.value.reason == "order_paid"
    assert (await pay_sim.pay.query_order("P20261127000001")).state is TradeState.SUCCESS


async def test_unknown_order_is_rejected_as_not_found(pay_sim: PaySimRig) -> None:
    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.query_order("NOSUCHORDER1")

    assert (caught.value.reason, caught.value.vendor_code) == ("order_not_found", "ORDER_NOT_EXIST")


# --- payment code -------------------------------------------------------------------------


def code_order(auth_code: str, out_trade_no: str = "C20261127000001") -> CodePayOrder:
    return CodePayOrder(
        out_trade_no=out_trade_no,
        description="窗口缴费",
        amount_fen=8800,
        auth_code=auth_code,
        store_id="WINDOW-3",
    )


async def test_codepay_instant_success(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    started = clock.now()

    payment = await pay_sim.pay.pay_by_code(code_order("134567890123456780"))

    assert (payment.state, payment.trade_type, payment.amount_fen) == (
        TradeState.SUCCESS,
        "MICROPAY",
        8800,
    )
    assert clock.now() == started  # no polling needed


async def test_codepay_user_paying_then_success_polls_until_paid(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    started = clock.now()

    payment = await pay_sim.pay.pay_by_code(code_order("134567890123456785"))

    assert payment.state is TradeState.SUCCESS
    # The simulated patient needs 10 s for the password; we poll every 5 s.
    assert clock.now() - started == timedelta(seconds=10)
    assert pay_sim.sim.orders["C20261127000001"].state == "SUCCESS"


async def test_codepay_user_paying_then_failure_is_rejected(pay_sim: PaySimRig) -> None:
    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.pay_by_code(code_order("134567890123456786"))

    assert (caught.value.reason, caught.value.vendor_code) == ("payment_failed", "PAYERROR")


async def test_codepay_never_confirmed_is_reversed_at_the_deadline(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    started = clock.now()

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.pay_by_code(code_order("134567890123456789"))

    assert caught.value.reason == "payment_cancelled"
    assert clock.now() - started == timedelta(seconds=30)
    assert pay_sim.sim.orders["C20261127000001"].state == "REVOKED"


@pytest.mark.parametrize(
    ("auth_code", "reason", "vendor_code"),
    [
        ("134567890123456787", "auth_code_invalid", "AUTHCODEEXPIRE"),
        ("134567890123456788", "insufficient_funds", "NOT_ENOUGH"),
        ("994567890123456780", "invalid_request", "PARAM_ERROR"),
    ],
)
async def test_codepay_refusals(
    pay_sim: PaySimRig, auth_code: str, reason: str, vendor_code: str
) -> None:
    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.pay_by_code(code_order(auth_code))

    assert (caught.value.reason, caught.value.vendor_code) == (reason, vendor_code)
    assert (
        pay_sim.sim.orders.get("C20261127000001") is None
        or pay_sim.sim.orders["C20261127000001"].transaction_id is None
    )


async def test_codepay_system_error_is_settled_by_query_then_reverse(pay_sim: PaySimRig) -> None:
    pay_sim.sim.faults.api_500 = 1  # the codepay call itself fails: nothing was charged

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.pay_by_code(code_order("134567890123456780"))

    assert caught.value.reason == "payment_cancelled"
    assert "C20261127000001" not in pay_sim.sim.orders


# --- refunds ------------------------------------------------------------------------------


async def paid_order(
    rig: PaySimRig, out_trade_no: str = "P20261127000001", amount_fen: int = 2350
) -> None:
    await pay_on_sheet(rig, await rig.pay.create_jsapi_order(jsapi(out_trade_no, amount_fen)))


async def test_refund_is_accepted_then_succeeds(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    await paid_order(pay_sim)

    accepted = await pay_sim.pay.refund(
        RefundRequest(
            out_trade_no="P20261127000001",
            out_refund_no="R20261127000001",
            refund_fen=350,
            total_fen=2350,
            reason="检验项目取消",
        )
    )
    clock.advance(seconds=5)
    done = await pay_sim.pay.query_refund("R20261127000001")

    assert (accepted.status, accepted.refund_fen, accepted.total_fen) == (
        RefundStatus.PROCESSING,
        350,
        2350,
    )
    assert done.status is RefundStatus.SUCCESS
    assert done.refund_id == accepted.refund_id
    assert done.success_at == clock.now()
    assert (await pay_sim.pay.query_order("P20261127000001")).state is TradeState.REFUND


async def test_the_same_out_refund_no_refunds_once(pay_sim: PaySimRig) -> None:
    await paid_order(pay_sim)
    request = RefundRequest(
        out_trade_no="P20261127000001",
        out_refund_no="R20261127000001",
        refund_fen=2350,
        total_fen=2350,
    )

    first = await pay_sim.pay.refund(request)
    retried = await pay_sim.pay.refund(request)

    assert retried.refund_id == first.refund_id
    assert len(pay_sim.sim.refunds) == 1


async def test_refund_over_what_was_paid_is_refused_and_changes_nothing(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    await paid_order(pay_sim)
    await pay_sim.pay.refund(
        RefundRequest(
            out_trade_no="P20261127000001", out_refund_no="R1", refund_fen=2000, total_fen=2350
        )
    )
    clock.advance(minutes=2)

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001", out_refund_no="R2", refund_fen=351, total_fen=2350
            )
        )

    assert (caught.value.reason, caught.value.vendor_code) == ("invalid_request", "INVALID_REQUEST")
    assert sorted(pay_sim.sim.refunds) == ["R1"]


async def test_refunds_less_than_a_minute_apart_are_retryable(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    await paid_order(pay_sim)
    await pay_sim.pay.refund(
        RefundRequest(
            out_trade_no="P20261127000001", out_refund_no="R1", refund_fen=100, total_fen=2350
        )
    )
    clock.advance(seconds=30)

    with pytest.raises(PayUnavailable) as caught:
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001", out_refund_no="R2", refund_fen=100, total_fen=2350
            )
        )

    assert caught.value.vendor_code == "FREQUENCY_LIMITED"
    assert sorted(pay_sim.sim.refunds) == ["R1"]


async def test_refund_of_an_unpaid_order_is_refused(pay_sim: PaySimRig) -> None:
    await pay_sim.pay.create_jsapi_order(jsapi())

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001", out_refund_no="R1", refund_fen=1, total_fen=2350
            )
        )

    assert caught.value.reason == "invalid_request"
    assert pay_sim.sim.refunds == {}


# --- trade bill -----------------------------------------------------------------------------


async def test_trade_bill_is_downloaded_gunzipped_and_hash_checked(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    await paid_order(pay_sim, "P1000001", 2350)
    clock.advance(seconds=1)
    await paid_order(pay_sim, "P1000002", 100)
    clock.advance(seconds=1)
    await pay_sim.pay.refund(
        RefundRequest(
            out_trade_no="P1000001", out_refund_no="R1000001", refund_fen=350, total_fen=2350
        )
    )
    bill_day = clock.local_now().date()
    clock.set(
        clock.at_local(bill_day + timedelta(days=1), datetime.min.time()) + timedelta(hours=10)
    )

    text = await pay_sim.pay.download_trade_bill(bill_day)

    lines = text.split("\r\n")
    assert lines[0].startswith("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号")
    assert len(lines) == 1 + 3 + 2 + 1  # header, 2 payments + 1 refund, summary, final CRLF
    assert lines[-1] == ""
    assert "`P1000001,`" + OPENID + ",`JSAPI,`SUCCESS,`OTHERS,`CNY,`23.50," in lines[1]
    assert "`REFUND," in lines[3]
    assert "`R1000001,`3.50," in lines[3]
    assert lines[5] == "`3,`24.50,`3.50,`0.00,`0.12600,`24.50,`3.50"


async def test_success_and_refund_bills_have_their_own_columns(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    await paid_order(pay_sim, "P1000001", 2350)
    await pay_sim.pay.refund(
        RefundRequest(
            out_trade_no="P1000001", out_refund_no="R1000001", refund_fen=350, total_fen=2350
        )
    )
    bill_day = clock.local_now().date()
    clock.advance(days=1)

    success = (await pay_sim.pay.download_trade_bill(bill_day, BillType.SUCCESS)).split("\r\n")
    refund = (await pay_sim.pay.download_trade_bill(bill_day, BillType.REFUND)).split("\r\n")

    assert len(success[0].split(",")) == 20
    assert len(success[1].split(",")) == 20
    assert success[3] == "`1,`23.50,`0.14100,`23.50"
    assert len(refund[0].split(",")) == 29
    assert len(refund[1].split(",")) == 29


async def test_a_corrupted_bill_is_refused(
    pay_sim: PaySimRig, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await paid_order(pay_sim)
    bill_day = clock.local_now().date()
    clock.advance(days=1)
    real = pay_sim.sim.bill_file
    monkeypatch.setattr(
        pay_sim.sim,
        "bill_file",
        lambda token: gzip.compress(gzip.decompress(real(token)) + b"x"),
    )

    with pytest.raises(PayUnavailable) as caught:
        await pay_sim.pay.download_trade_bill(bill_day)

    assert caught.value.vendor_code == "HASH"


async def test_a_bill_not_yet_generated_is_rejected(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    await paid_order(pay_sim)

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.download_trade_bill(clock.local_now().date())

    assert (caught.value.reason, caught.value.vendor_code) == ("no_statement", "NO_STATEMENT_EXIST")


async def test_an_empty_day_has_no_statement(pay_sim: PaySimRig) -> None:
    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.download_trade_bill(date(2026, 11, 1))

    assert caught.value.reason == "no_statement"


# --- transport and verification failures ----------------------------------------------------


async def test_a_server_error_is_unavailable(pay_sim: PaySimRig) -> None:
    pay_sim.sim.faults.api_500 = 1

    with pytest.raises(PayUnavailable) as caught:
        await pay_sim.pay.create_jsapi_order(jsapi())

    assert caught.value.vendor_code == "SYSTEM_ERROR"
    assert pay_sim.sim.orders == {}


async def test_a_signature_probe_answer_is_not_trusted(pay_sim: PaySimRig) -> None:
    pay_sim.sim.faults.signtest = 1

    with pytest.raises(PayUnavailable) as caught:
        await pay_sim.pay.create_jsapi_order(jsapi())

    assert caught.value.vendor_code == "RESPONSE_NOT_VERIFIED"


async def test_an_answer_signed_by_another_platform_key_is_not_trusted(
    pay_keys: KeySet, clock: FrozenClock
) -> None:
    impostor = make_keyset(mchid=pay_keys.mchid, appid=pay_keys.appid)
    rig = build_pay_rig(pay_keys, clock)
    rig.sim.config.platform_key = impostor.platform_key
    try:
        with pytest.raises(PayUnavailable) as caught:
            await rig.pay.create_jsapi_order(jsapi())
    finally:
        await rig.aclose()

    assert caught.value.vendor_code == "RESPONSE_NOT_VERIFIED"


async def test_a_signed_refusal_that_does_not_verify_is_not_trusted(
    pay_keys: KeySet, clock: FrozenClock
) -> None:
    impostor = make_keyset(mchid=pay_keys.mchid, appid=pay_keys.appid)
    rig = build_pay_rig(pay_keys, clock)
    rig.sim.config.platform_key = impostor.platform_key
    try:
        with pytest.raises(PayUnavailable) as caught:
            await rig.pay.query_order("P20261127000001")  # a forged "ORDER_NOT_EXIST"
    finally:
        await rig.aclose()

    assert caught.value.vendor_code == "RESPONSE_NOT_VERIFIED"


async def test_a_request_from_a_skewed_clock_is_refused_by_the_simulator(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    skewed = type(pay_sim.pay)(
        pay_sim.config, http=pay_sim.http, now=lambda: clock.now() - timedelta(minutes=6)
    )

    with pytest.raises(PayUnavailable) as caught:
        await skewed.create_jsapi_order(jsapi())

    # The simulator refuses the stale request (401 SIGN_ERROR), and its signed refusal is
    # itself stale for our skewed clock: both sides point at the clock.
    assert "stale_timestamp" in str(caught.value)
    assert pay_sim.sim.orders == {}


async def test_a_refused_signature_is_rejected_with_the_vendor_code(
    pay_sim: PaySimRig, pay_keys: KeySet
) -> None:
    other = make_keyset(mchid=pay_keys.mchid, appid=pay_keys.appid)
    wrong_key = type(pay_sim.pay)(
        replace(pay_sim.config, private_key=other.merchant_key), http=pay_sim.http
    )

    with pytest.raises(PayRejected) as caught:
        await wrong_key.create_jsapi_order(jsapi())

    assert (caught.value.reason, caught.value.vendor_code) == ("signature_refused", "SIGN_ERROR")
    assert pay_sim.sim.orders == {}


async def test_a_network_failure_is_unavailable(pay_sim: PaySimRig) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as dead:
        client = type(pay_sim.pay)(pay_sim.config, http=dead)
        with pytest.raises(PayUnavailable):
            await client.query_order("P20261127000001")


async def test_certificate_mode_fetches_the_platform_certificate_first(
    pay_keys: KeySet, clock: FrozenClock
) -> None:
    rig = build_pay_rig(pay_keys, clock, mode="certificate")
    try:
        assert not rig.pay.verifier.knows(pay_keys.platform_cert_serial)
        prepay_id = await rig.pay.create_jsapi_order(jsapi())
        known = rig.pay.verifier.knows(pay_keys.platform_cert_serial)
    finally:
        await rig.aclose()

    assert prepay_id.startswith("wx")
    assert known


async def test_public_key_mode_has_no_certificates(pay_sim: PaySimRig) -> None:
    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.refresh_certificates()

    assert caught.value.vendor_code == "RESOURCE_NOT_EXISTS"


async def test_refunds_end_one_year_after_payment(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    await paid_order(pay_sim)
    clock.advance(days=366)

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001", out_refund_no="R1", refund_fen=1, total_fen=2350
            )
        )

    assert caught.value.reason == "invalid_request"
    assert pay_sim.sim.refunds == {}


async def test_at_most_fifty_refunds_per_order(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    await paid_order(pay_sim)
    for n in range(50):
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001",
                out_refund_no=f"R{n:03d}",
                refund_fen=1,
                total_fen=2350,
            )
        )
        clock.advance(minutes=1)

    with pytest.raises(PayRejected) as caught:
        await pay_sim.pay.refund(
            RefundRequest(
                out_trade_no="P20261127000001", out_refund_no="R050", refund_fen=1, total_fen=2350
            )
        )

    assert (caught.value.reason, caught.value.vendor_code) == ("rule_limit", "RULE_LIMIT")
    assert len(pay_sim.sim.refunds) == 50


@pytest.mark.parametrize("number", ["../../v3/refund", "P1?mchid=2", "短号", "A" * 33])
async def test_merchant_numbers_that_would_bend_the_url_are_refused_before_sending(
    pay_sim: PaySimRig, number: str
) -> None:
    seen = pay_sim.sim.requests_seen

    with pytest.raises(ValueError, match="not a valid WeChat Pay merchant number"):
        await pay_sim.pay.query_order(number)
    with pytest.raises(ValueError, match="not a valid WeChat Pay merchant number"):
        await pay_sim.pay.create_jsapi_order(jsapi(number))

    assert pay_sim.sim.requests_seen == seen
