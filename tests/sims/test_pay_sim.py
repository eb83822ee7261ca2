"""The WeChat Pay simulator's own rules, driven with hand-signed raw HTTP requests."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.port import JsapiOrder
from tests.sims.pay_rig import PaySimRig
from tests.wechat.test_pay_client import paid_order

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
CST = ZoneInfo("Asia/Shanghai")


def order_body(rig: PaySimRig, out_trade_no: str = "S20261127000001", **extra: Any) -> bytes:
    data = {
        "appid": rig.keys.appid,
        "mchid": rig.keys.mchid,
        "description": "挂号费",
        "out_trade_no": out_trade_no,
        "notify_url": "http://testserver/wechat/pay/notify",
        "amount": {"total": 500, "currency": "CNY"},
        "payer": {"openid": OPENID},
        **extra,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def signed(
    rig: PaySimRig,
    method: str,
    url: str,
    body: bytes = b"",
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
    serial_no: str | None = None,
    mchid: str | None = None,
) -> dict[str, str]:
    return {
        "Authorization": signing.authorization_header(
            mchid=mchid or rig.keys.mchid,
            serial_no=serial_no or rig.keys.merchant_serial_no,
            key=rig.keys.merchant_key,
            method=method,
            url=url,
            body=body,
            timestamp=timestamp if timestamp is not None else rig.sim.timestamp(),
            nonce=nonce or signing.new_nonce(),
        ),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


async def send(
    rig: PaySimRig, method: str, url: str, body: bytes = b"", **sign: Any
) -> httpx.Response:
    headers = signed(rig, method, url, body, **sign)
    return await rig.http.request(method, url, content=body, headers=headers)


async def test_a_signed_order_is_accepted_and_the_answer_is_signed(pay_sim: PaySimRig) -> None:
    body = order_body(pay_sim)

    response = await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", body)

    assert response.status_code == 200
    assert response.headers["Wechatpay-Serial"] == pay_sim.keys.platform_public_key_id
    assert response.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    assert response.headers["Request-ID"]
    pay_sim.pay.verifier.verify(response.headers, response.content, now=pay_sim.sim.timestamp())
    assert set(response.json()) == {"prepay_id"}


def sign_error(response: httpx.Response) -> str:
    assert response.status_code == 401
    payload = response.json()
    assert payload["code"] == "SIGN_ERROR"
    return str(payload["message"])


async def test_a_missing_authorization_is_refused(pay_sim: PaySimRig) -> None:
    response = await pay_sim.http.post("/v3/pay/transactions/jsapi", content=order_body(pay_sim))

    assert sign_error(response) == "缺少Authorization头"
    assert pay_sim.sim.orders == {}


async def test_a_body_changed_after_signing_is_refused_with_the_documented_shape(
    pay_sim: PaySimRig,
) -> None:
    body = order_body(pay_sim)
    headers = signed(pay_sim, "POST", "/v3/pay/transactions/jsapi", body)

    response = await pay_sim.http.post(
        "/v3/pay/transactions/jsapi", content=body.replace(b"500", b"1"), headers=headers
    )

    assert sign_error(response) == "签名错误，请检查后再试"
    detail = response.json()["detail"]
    assert detail["field"] == "signature"
    assert detail["location"] == "authorization"
    assert detail["sign_information"]["url"] == "/v3/pay/transactions/jsapi"
    assert pay_sim.sim.orders == {}


async def test_a_replayed_request_is_refused(pay_sim: PaySimRig) -> None:
    body = order_body(pay_sim)
    headers = signed(pay_sim, "POST", "/v3/pay/transactions/jsapi", body)

    first = await pay_sim.http.post("/v3/pay/transactions/jsapi", content=body, headers=headers)
    replay = await pay_sim.http.post("/v3/pay/transactions/jsapi", content=body, headers=headers)

    assert first.status_code == 200
    assert sign_error(replay) == "请求重放：nonce_str已使用"
    assert len(pay_sim.sim.orders) == 1


async def test_a_nonce_reused_for_another_request_is_refused(pay_sim: PaySimRig) -> None:
    await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim), nonce="N1")

    response = await send(
        pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim, "S2"), nonce="N1"
    )

    assert sign_error(response) == "请求重放：nonce_str已使用"
    assert sorted(pay_sim.sim.orders) == ["S20261127000001"]


@pytest.mark.parametrize("skew", [-301, 301])
async def test_a_stale_timestamp_is_refused(pay_sim: PaySimRig, skew: int) -> None:
    response = await send(
        pay_sim,
        "POST",
        "/v3/pay/transactions/jsapi",
        order_body(pay_sim),
        timestamp=pay_sim.sim.timestamp() + skew,
    )

    assert sign_error(response) == "请求时间戳已过期"
    assert pay_sim.sim.orders == {}


async def test_a_wrong_certificate_serial_is_refused(pay_sim: PaySimRig) -> None:
    response = await send(
        pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim), serial_no="ABCDEF"
    )

    assert sign_error(response) == "商户证书序列号有误。"


async def test_another_merchant_is_refused(pay_sim: PaySimRig) -> None:
    response = await send(
        pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim), mchid="1900000999"
    )

    assert sign_error(response) == "商户号与签名不匹配"


async def test_the_query_string_is_part_of_what_is_signed(pay_sim: PaySimRig) -> None:
    await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim))
    url = f"/v3/pay/transactions/out-trade-no/S20261127000001?mchid={pay_sim.keys.mchid}"
    headers = signed(pay_sim, "GET", url.split("?")[0])

    response = await pay_sim.http.get(url, headers=headers)

    assert sign_error(response) == "签名错误，请检查后再试"


@pytest.mark.parametrize(
    ("extra", "code", "field"),
    [
        ({"out_trade_no": "x"}, "PARAM_ERROR", "out_trade_no"),
        ({"amount": {"total": 0, "currency": "CNY"}}, "PARAM_ERROR", "amount.total"),
        ({"amount": {"total": 1.5, "currency": "CNY"}}, "PARAM_ERROR", "amount.total"),
        ({"amount": {"total": 100, "currency": "USD"}}, "PARAM_ERROR", "amount.currency"),
        ({"notify_url": "http://x.test/n?a=1"}, "PARAM_ERROR", "notify_url"),
        ({"appid": "wx_other_app"}, "APPID_MCHID_NOT_MATCH", None),
        ({"payer": {}}, "PARAM_ERROR", "payer.openid"),
    ],
)
async def test_invalid_orders_are_refused(
    pay_sim: PaySimRig, extra: dict[str, Any], code: str, field: str | None
) -> None:
    data = json.loads(order_body(pay_sim))
    data.update(extra)
    body = json.dumps(data).encode()

    response = await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", body)

    assert response.status_code == 400
    assert response.json()["code"] == code
    if field:
        assert response.json()["detail"]["field"] == field
    assert pay_sim.sim.orders == {}


async def test_public_key_mode_has_no_certificates(pay_sim: PaySimRig) -> None:
    response = await send(pay_sim, "GET", "/v3/certificates")

    assert response.status_code == 404
    assert response.json()["code"] == "RESOURCE_NOT_EXISTS"


async def test_close_answers_204_signed_over_an_empty_body(pay_sim: PaySimRig) -> None:
    await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim))
    body = json.dumps({"mchid": pay_sim.keys.mchid}).encode()

    response = await send(
        pay_sim, "POST", "/v3/pay/transactions/out-trade-no/S20261127000001/close", body
    )

    assert response.status_code == 204
    assert response.content == b""
    pay_sim.pay.verifier.verify(response.headers, b"", now=pay_sim.sim.timestamp())
    assert pay_sim.sim.orders["S20261127000001"].state == "CLOSED"


async def test_codepay_reverse_of_a_paid_order_revokes_it(pay_sim: PaySimRig) -> None:
    body = json.dumps(
        {
            "appid": pay_sim.keys.appid,
            "mchid": pay_sim.keys.mchid,
            "description": "窗口缴费",
            "out_trade_no": "C1000001",
            "payer": {"auth_code": "120061098828009400"},
            "amount": {"total": 100, "currency": "CNY"},
            "scene_info": {"store_info": {"out_id": "W1"}},
        }
    ).encode()
    paid = await send(pay_sim, "POST", "/v3/pay/transactions/codepay", body)
    reverse_body = json.dumps({"appid": pay_sim.keys.appid, "mchid": pay_sim.keys.mchid}).encode()

    reversed_ = await send(
        pay_sim, "POST", "/v3/pay/transactions/out-trade-no/C1000001/reverse", reverse_body
    )

    assert paid.json()["trade_state"] == "SUCCESS"
    assert reversed_.status_code == 200
    assert reversed_.json() == {
        "appid": pay_sim.keys.appid,
        "mchid": pay_sim.keys.mchid,
        "out_trade_no": "C1000001",
    }
    assert pay_sim.sim.orders["C1000001"].state == "REVOKED"


async def test_codepay_user_paying_answers_202_with_only_the_state(pay_sim: PaySimRig) -> None:
    body = json.dumps(
        {
            "appid": pay_sim.keys.appid,
            "mchid": pay_sim.keys.mchid,
            "description": "窗口缴费",
            "out_trade_no": "C1000002",
            "payer": {"auth_code": "134567890123456785"},
            "amount": {"total": 100, "currency": "CNY"},
            "scene_info": {"store_info": {"out_id": "W1"}},
        }
    ).encode()

    response = await send(pay_sim, "POST", "/v3/pay/transactions/codepay", body)

    assert response.status_code == 202
    assert response.json() == {"trade_state": "USERPAYING"}


async def test_a_bill_download_url_expires(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    await pay_sim.pay.create_jsapi_order(
        JsapiOrder(out_trade_no="P1000001", description="挂号费", amount_fen=500, openid=OPENID)
    )
    order = pay_sim.sim.orders["P1000001"]
    pay_sim.sim.pay(order, openid=OPENID)
    day = clock.local_now().date()
    clock.advance(days=1)
    applied = await send(
        pay_sim, "GET", f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL"
    )
    path = applied.json()["download_url"].removeprefix("http://wxpay-sim.test")
    clock.advance(minutes=6)

    late = await send(pay_sim, "GET", path)

    assert applied.status_code == 200
    assert late.status_code == 400
    assert late.json()["code"] == "INVALID_REQUEST"


# --- the pay sheet --------------------------------------------------------------------------


async def sheet_params(rig: PaySimRig) -> dict[str, str]:
    response = await send(rig, "POST", "/v3/pay/transactions/jsapi", order_body(rig))
    return rig.pay.jsapi_pay_params(response.json()["prepay_id"]).as_bridge_dict()


async def test_the_pay_sheet_shows_amount_and_description(pay_sim: PaySimRig) -> None:
    params = await sheet_params(pay_sim)

    page = await pay_sim.http.get("/sim/pay/sheet", params=params)
    script = await pay_sim.http.get("/sim/pay/assets/sheet.js")

    assert page.status_code == 200
    assert "挂号费" in page.text
    assert ">5.00<" in page.text
    assert 'id="pay"' in page.text
    assert script.status_code == 200
    assert "/sim/pay/confirm" in script.text


async def test_the_pay_sheet_refuses_a_forged_pay_sign(pay_sim: PaySimRig) -> None:
    params = await sheet_params(pay_sim)
    params["paySign"] = signing.jsapi_pay_sign(
        pay_sim.keys.platform_key,  # not the merchant's key
        app_id=params["appId"],
        time_stamp=params["timeStamp"],
        nonce_str=params["nonceStr"],
        package=params["package"],
    )

    page = await pay_sim.http.get("/sim/pay/sheet", params=params)
    confirm = await pay_sim.http.post("/sim/pay/confirm", json={**params, "action": "pay"})

    assert "支付验证签名失败" in page.text
    assert 'id="pay"' not in page.text
    assert confirm.status_code == 400
    assert confirm.json()["err_msg"] == "get_brand_wcpay_request:fail"
    assert pay_sim.sim.orders["S20261127000001"].state == "NOTPAY"


async def test_the_pay_sheet_refuses_another_app_id(pay_sim: PaySimRig) -> None:
    params = await sheet_params(pay_sim)
    params["appId"] = "wx9999999999999999"

    confirm = await pay_sim.http.post("/sim/pay/confirm", json={**params, "action": "pay"})

    assert confirm.json()["code"] == "APPID_MCHID_NOT_MATCH"
    assert pay_sim.sim.orders["S20261127000001"].state == "NOTPAY"


async def test_a_paid_order_cannot_be_paid_twice(pay_sim: PaySimRig) -> None:
    params = await sheet_params(pay_sim)

    first = await pay_sim.http.post("/sim/pay/confirm", json={**params, "action": "pay"})
    second = await pay_sim.http.post("/sim/pay/confirm", json={**params, "action": "pay"})

    assert first.json()["err_msg"] == "get_brand_wcpay_request:ok"
    assert second.json()["code"] == "ORDERPAID"
    assert len(pay_sim.sim.notifies) == 1


async def test_fault_injection_endpoint_validates_and_queues(pay_sim: PaySimRig) -> None:
    bad = await pay_sim.http.post("/sim/pay/faults", json={"notify": ["explode"]})
    good = await pay_sim.http.post(
        "/sim/pay/faults", json={"notify": ["drop", "duplicate"], "api_500": 2, "signtest": 1}
    )

    assert bad.status_code == 400
    assert good.status_code == 200
    assert list(pay_sim.sim.faults.notify) == ["drop", "duplicate"]
    assert (pay_sim.sim.faults.api_500, pay_sim.sim.faults.signtest) == (2, 1)


async def test_bill_faults_are_validated_and_make_the_bill_answer_no_statement(
    pay_sim: PaySimRig, clock: FrozenClock
) -> None:
    bad = [
        await pay_sim.http.post("/sim/pay/faults", json=body)
        for body in (
            {"no_statement_days": "2026-11-27"},
            {"no_statement_days": ["2026-11-27", "yesterday"]},
            {"no_statement_days": [20261127]},
            {"no_statement_days": ["2026-11-27"], "statement_creating": -1},
        )
    ]
    assert [(r.status_code, r.json()["code"]) for r in bad] == [(400, "PARAM_ERROR")] * 4
    assert (pay_sim.sim.faults.no_statement_days, pay_sim.sim.faults.statement_creating) == (
        set(),
        0,
    )

    good = await pay_sim.http.post(
        "/sim/pay/faults", json={"no_statement_days": ["2026-11-27"], "statement_creating": 1}
    )
    assert good.status_code == 200
    await paid_order(pay_sim)  # the day has a trade: without the fault it has a bill
    assert len(pay_sim.sim.bill_lines(clock.local_now().date())) == 1
    clock.advance(days=1)
    query = "/v3/bill/tradebill?bill_date=2026-11-27&bill_type=ALL&tar_type=GZIP"
    first = await send(pay_sim, "GET", query)
    second = await send(pay_sim, "GET", query)
    assert [(r.status_code, r.json()["code"]) for r in (first, second)] == [
        (400, "STATEMENT_CREATING"),
        (400, "NO_STATEMENT_EXIST"),
    ]


async def test_an_expired_order_cannot_be_paid(pay_sim: PaySimRig, clock: FrozenClock) -> None:
    expires = (clock.now() + timedelta(minutes=15)).astimezone(CST).isoformat()
    response = await send(
        pay_sim, "POST", "/v3/pay/transactions/jsapi", order_body(pay_sim, time_expire=expires)
    )
    params = pay_sim.pay.jsapi_pay_params(response.json()["prepay_id"]).as_bridge_dict()
    clock.advance(minutes=16)

    confirm = await pay_sim.http.post("/sim/pay/confirm", json={**params, "action": "pay"})

    assert confirm.status_code == 400
    assert confirm.json()["code"] == "ORDER_CLOSED"
    assert pay_sim.sim.orders["S20261127000001"].state == "NOTPAY"


async def test_server_mode_delivers_notifications_in_the_background(pay_keys: Any) -> None:
    from frontdesk.sims.wechat_sim.pay import create_pay_sim_app, stop_background
    from frontdesk.sims.wechat_sim.pay_state import PaySim
    from tests.sims.pay_rig import sim_config

    received: list[bytes] = []

    async def our_server(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        return httpx.Response(204)

    sim = PaySim(
        sim_config(pay_keys, background=True),
        notify_http=httpx.AsyncClient(transport=httpx.MockTransport(our_server)),
    )
    app = create_pay_sim_app(sim)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        await client.post("/sim/pay/faults", json={})  # any request starts the delivery task
        order = sim.create_order("NATIVE", json.loads(order_body_for(pay_keys)))
        sim.pay(order, openid=OPENID)
        for _ in range(40):
            if received:
                break
            await asyncio.sleep(0.05)
    await stop_background(sim)
    await sim.notify_http.aclose()  # type: ignore[union-attr]

    assert len(received) == 1
    assert sim.notifies[0].done


def order_body_for(keys: Any) -> bytes:
    return json.dumps(
        {
            "appid": keys.appid,
            "mchid": keys.mchid,
            "description": "挂号费",
            "out_trade_no": "B1000001",
            "notify_url": "http://front.test/wechat/pay/notify",
            "amount": {"total": 500, "currency": "CNY"},
        }
    ).encode()


@pytest.mark.parametrize(
    ("scenario", "status", "state"),
    [
        ("success", 200, "SUCCESS"),
        ("userpaying_success", 202, "USERPAYING"),
        ("userpaying_fail", 202, "USERPAYING"),
        ("never", 202, "USERPAYING"),
        ("expired", 400, "PAYERROR"),
        ("insufficient", 403, "PAYERROR"),
    ],
)
async def test_phone_payment_codes_select_their_scenario(
    pay_sim: PaySimRig, scenario: str, status: int, state: str
) -> None:
    code = (await pay_sim.http.get("/sim/pay/auth-code", params={"scenario": scenario})).json()
    body = json.dumps(
        {
            "appid": pay_sim.keys.appid,
            "mchid": pay_sim.keys.mchid,
            "description": "窗口缴费",
            "out_trade_no": "C1000009",
            "payer": {"auth_code": code["auth_code"]},
            "amount": {"total": 100, "currency": "CNY"},
            "scene_info": {"store_info": {"out_id": "W1"}},
        }
    ).encode()

    response = await send(pay_sim, "POST", "/v3/pay/transactions/codepay", body)

    assert len(code["auth_code"]) == 18
    assert response.status_code == status
    assert pay_sim.sim.orders["C1000009"].state == state


async def test_an_unknown_payment_code_scenario_is_refused(pay_sim: PaySimRig) -> None:
    response = await pay_sim.http.get("/sim/pay/auth-code", params={"scenario": "lottery"})

    assert response.status_code == 400


async def test_the_pay_sheet_escapes_text_and_returns_only_to_local_paths(
    pay_sim: PaySimRig,
) -> None:
    data = json.loads(order_body(pay_sim))
    data["description"] = '<script>alert("x")</script>'
    response = await send(pay_sim, "POST", "/v3/pay/transactions/jsapi", json.dumps(data).encode())
    params = pay_sim.pay.jsapi_pay_params(response.json()["prepay_id"]).as_bridge_dict()

    local = await pay_sim.http.get("/sim/pay/sheet", params={**params, "return": "/h5/bills/7"})
    evil = await pay_sim.http.get("/sim/pay/sheet", params={**params, "return": "//evil.test/x"})

    assert "<script>alert" not in local.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in local.text
    assert 'data-return="/h5/bills/7"' in local.text
    assert 'data-return=""' in evil.text
