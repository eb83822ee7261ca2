"""Interoperability: the simulator driven by wechatpayv3 2.0.4, an independent implementation.

wechatpayv3 (sync) sends through ``requests``. We let ``requests`` prepare every request —
so the bytes, the JSON spacing and ASCII escaping it signs are exactly its own — and hand the
prepared request to the simulator's ASGI app through Starlette's TestClient (no sockets).
Public-key mode, as the spec recommends (certificate mode would fetch from the real gateway).
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from wechatpayv3 import WeChatPay, WeChatPayType

from frontdesk.sims.wechat_sim.pay import create_pay_sim_app
from frontdesk.sims.wechat_sim.pay_state import PaySim
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.devkeys import KeySet
from tests.sims.pay_rig import SIM_BASE, sim_config

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"

with warnings.catch_warnings():
    # Starlette's TestClient still works on httpx; it only warns about a future package.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class _RequestsThroughAsgi:
    """Stands in for the ``requests`` module inside wechatpayv3.core."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent: list[requests.PreparedRequest] = []

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        prepared = requests.Request(
            method,
            url,
            headers=kwargs.get("headers"),
            json=kwargs.get("json"),
            data=kwargs.get("data"),
            files=kwargs.get("files"),
        ).prepare()
        self.sent.append(prepared)
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        return self.client.request(
            method, prepared.url or url, content=body or b"", headers=dict(prepared.headers)
        )

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._send("POST", url, **kwargs)


@pytest.fixture
def sim(pay_keys: KeySet) -> PaySim:
    # wechatpayv3 stamps requests with the wall clock, so the simulator runs on it too.
    return PaySim(sim_config(pay_keys))


@pytest.fixture
def wxpay(
    pay_keys: KeySet, sim: PaySim, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[WeChatPay, _RequestsThroughAsgi]]:
    import wechatpayv3.core

    with TestClient(create_pay_sim_app(sim), base_url=SIM_BASE) as client:
        shim = _RequestsThroughAsgi(client)
        monkeypatch.setattr(wechatpayv3.core, "requests", shim)
        pay = WeChatPay(
            wechatpay_type=WeChatPayType.JSAPI,
            mchid=pay_keys.mchid,
            private_key=pay_keys.merchant_key_pem.decode(),
            cert_serial_no=pay_keys.merchant_serial_no,
            appid=pay_keys.appid,
            apiv3_key=pay_keys.apiv3_key,
            notify_url="https://hospital.example/wechat/pay/notify",
            public_key=pay_keys.platform_public_pem,
            public_key_id=pay_keys.platform_public_key_id,
        )
        pay._core._gate_way = SIM_BASE  # the only way to redirect it (spec §5.2)
        yield pay, shim


def test_jsapi_order_query_and_pay_sign(
    wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim
) -> None:
    pay, shim = wxpay

    code, text = pay.pay(
        description="Image形象店-深圳腾大-QQ公仔",
        out_trade_no="1217752501201407033233368018",
        amount={"total": 100},
        payer={"openid": OPENID},
    )
    prepay_id = json.loads(text)["prepay_id"]
    # wechatpayv3 signs Python's default json.dumps: spaces and \u escapes, byte for byte.
    assert b'"description": "Image\\u5f62' in shim.sent[0].body  # type: ignore[operator]
    pay_sign = pay.sign(
        [pay._appid, "1414561699", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", f"prepay_id={prepay_id}"]
    )
    order = sim.confirm_jsapi(
        {
            "appId": pay._appid,
            "timeStamp": "1414561699",
            "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            "package": f"prepay_id={prepay_id}",
            "signType": "RSA",
            "paySign": pay_sign,
        }
    )
    sim.pay(order, openid=OPENID)
    q_code, q_text = pay.query(out_trade_no="1217752501201407033233368018")

    assert code == 200
    assert q_code == 200
    transaction = json.loads(q_text)
    assert transaction["trade_state"] == "SUCCESS"
    assert transaction["amount"]["total"] == 100
    assert transaction["payer"] == {"openid": OPENID}


def test_native_order_and_close(wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim) -> None:
    pay, _ = wxpay

    code, text = pay.pay(
        description="自助机缴费",
        out_trade_no="N1000001",
        amount={"total": 250},
        pay_type=WeChatPayType.NATIVE,
    )
    close_code, _ = pay.close(out_trade_no="N1000001")

    assert code == 200
    assert json.loads(text)["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert close_code == 204
    assert sim.orders["N1000001"].state == "CLOSED"


def test_our_notification_verifies_and_decrypts_in_wechatpayv3(
    wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim
) -> None:
    pay, _ = wxpay
    pay.pay(
        description="挂号费",
        out_trade_no="P1000001",
        amount={"total": 500},
        payer={"openid": OPENID},
    )
    sim.pay(sim.orders["P1000001"], openid=OPENID)
    headers, body = sim.notify_request(sim.notifies[0])

    result = pay.callback(headers, body)
    tampered = pay.callback(headers, body.replace(b"TRANSACTION", b"TRANSACTIOM"))

    assert result is not None
    assert result["event_type"] == "TRANSACTION.SUCCESS"
    assert result["resource"]["out_trade_no"] == "P1000001"
    assert result["resource"]["amount"]["total"] == 500
    assert tampered is None


def test_refund_and_refund_query(
    wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim
) -> None:
    pay, _ = wxpay
    pay.pay(
        description="挂号费",
        out_trade_no="P1000001",
        amount={"total": 500},
        payer={"openid": OPENID},
    )
    sim.pay(sim.orders["P1000001"], openid=OPENID)

    code, text = pay.refund(
        out_refund_no="R1000001",
        out_trade_no="P1000001",
        amount={"refund": 200, "total": 500, "currency": "CNY"},
    )
    again_code, again_text = pay.refund(
        out_refund_no="R1000001",
        out_trade_no="P1000001",
        amount={"refund": 200, "total": 500, "currency": "CNY"},
    )
    over_code, over_text = pay.refund(
        out_refund_no="R1000002",
        out_trade_no="P1000001",
        amount={"refund": 301, "total": 500, "currency": "CNY"},
    )
    q_code, q_text = pay.query_refund(out_refund_no="R1000001")

    assert (code, again_code, q_code) == (200, 200, 200)
    assert json.loads(again_text)["refund_id"] == json.loads(text)["refund_id"]
    assert json.loads(q_text)["amount"]["refund"] == 200
    assert over_code == 400
    assert json.loads(over_text)["code"] == "INVALID_REQUEST"


def test_codepay_and_reverse(wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim) -> None:
    pay, _ = wxpay

    code, text = pay.pay(
        description="窗口缴费",
        out_trade_no="C1000001",
        amount={"total": 8800},
        payer={"auth_code": "134567890123456785"},
        pay_type=WeChatPayType.CODEPAY,
        scene_info={"store_info": {"out_id": "WINDOW-3"}},
    )
    r_code, r_text = pay.codepay_reverse(out_trade_no="C1000001")

    assert code == 202
    assert json.loads(text) == {"trade_state": "USERPAYING"}
    assert r_code == 200
    assert json.loads(r_text)["out_trade_no"] == "C1000001"
    assert sim.orders["C1000001"].state == "REVOKED"


def test_trade_bill_apply_download_and_hash(
    wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim, pay_keys: KeySet
) -> None:
    pay, _ = wxpay
    pay.pay(
        description="挂号费",
        out_trade_no="P1000001",
        amount={"total": 500},
        payer={"openid": OPENID},
    )
    order = sim.orders["P1000001"]
    sim.pay(order, openid=OPENID)
    # Move the payment two days back so its bill is surely generated (next day, 09:00).
    order.success_at = datetime.now(UTC) - timedelta(days=2)
    day: date = order.success_at.astimezone(signing_tz()).date()

    code, text = pay.trade_bill(bill_date=day.isoformat())
    info = json.loads(text)
    d_code, content = pay.download_bill(info["download_url"])

    assert code == 200
    assert d_code == 200
    raw = gzip.decompress(content)
    assert signing.bill_hash_matches(raw, info["hash_value"])
    assert "`P1000001," in raw.decode()


def test_a_wechatpayv3_request_with_a_stale_clock_is_refused(
    wxpay: tuple[WeChatPay, _RequestsThroughAsgi], sim: PaySim
) -> None:
    pay, _ = wxpay
    sim._now = lambda: datetime.now(UTC) + timedelta(minutes=10)

    code, text = pay.query(out_trade_no="P1000001")

    assert code == 401
    assert json.loads(text)["code"] == "SIGN_ERROR"


def signing_tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")
