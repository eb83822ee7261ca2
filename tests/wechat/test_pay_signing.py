"""Golden tests for WeChat Pay v3 cryptography: the vectors of shared/protocols/wechat.md §4."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest

from frontdesk.sims.wechat_sim.pay_bill import BillLine, render_bill
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.devkeys import make_keyset

VECTORS = Path(__file__).parent / "vectors"
KEY = signing.load_private_key((VECTORS / "wechatpy_test_apiclient_key.pem").read_bytes())

SIG_GET = (
    "c4VewIfiOrSXkYtGqoZFzzjOr3LMhFFJRD5l18glbIUyXEF1wcG1euB4w5QdBlhgytM+28W7wmwqWTA8RsQWTBXR0Y"
    "EXC6Mtd5xplSXlXghv7ORl0a2TRVQSuf/vhKOdXc54Ima3wqj8AOkMeaiswp8fdnwd6yq1s0bx6uchP9Q6PO0INGnp"
    "dH8NeKP21dlefeOc4H7OvnqHEyj/BsvdE1/DYUIFkw1q5fIAfxcUoqeXThtIL6ajLZgaaQJgYhPV7Cd6UMf5gY3yxK"
    "YWIWWHALtdWrn+pCcIPKrop/keqHE9wJPYtAP3uJ8UKohiHDft01X5ex0Es5Z12+lR9VLyEQ=="
)
SIG_POST = (
    "yAeG4mfv8GZdb7aZyZj/Cwe6nBh+d6c8j1Qb/ZsUwWoqCC1XqevqdDoebZLgavTV1aI+1CMnDOlMMizmvZvufaM4bI"
    "Y/5DsCWuEelaERz3GjKp29u3jbxMd3XF590kMlKBozkp5OLbWIsxHOnXvhFnInpIfUh0hQeYAOwaiE/RwNDEjrZTCp"
    "ioiYi/qNUaerCa9VX/X86pPafTZ4TyVHnGfHrffSv/AyqN1v3nIndYsu6UJ8kPM+GjBhm+sMxtUwB1xqWrdbmLTBWh"
    "DFMiQqq5F4qX7iXTQ4pPOmYSIV0cUwnNFxlcvmxqrsxkrDjjQnPPM7elC3mx8cInx0VYME7Q=="
)
POST_BODY = (
    '{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔",'
    '"out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/'
    'pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWe'
    'S6o"}}'
)
PAY_SIGN = (
    "tQVXPvvcR6GmHIPQ7D9SmAXMyx3My05sqa9DUMI2BU1tENpoXvfgTWALP71q3WdO3nJjXnUMqH3/4Lvo3/aTmnxRB5k7"
    "BJmRfjaMMgStWIB9/4O4ev50t9kotFgrZCZ7Pgj8rTlnYl2kmhOA0pLflz6MYtoMBNcr2piCl0FBcyyE5Xq1GPIm7Nfg"
    "7b9pAt5iqlLgyiwj53h2jfWvIuQSnxpiHRVEqpuX+EEHSxBSqpNwfrzis94QGMO8cKLIjKMuarNkHjBcpbaqOkEMig/S"
    "yHH4kRwKuVQlDQgVLH04fxoFpmEBknWCJo4UrnaGxuZGtcfbRQdbsVAstg41Lup1dg=="
)
AEAD_PLAIN = (
    '{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"121775250120140703323336'
    '8018","transaction_id":"4200000000202401010000000001","trade_type":"JSAPI","trade_state":"SUC'
    'CESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2024-01-0'
    '1T10:00:00+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"pay'
    'er_total":100,"currency":"CNY","payer_currency":"CNY"}}'
)
AEAD_CIPHER = (
    "DUcegK33A8MEOgdJt8PWwAdrzVDy3c3BTENCdjZ/7K2gbkFM2sU/cZ/UPNrLir4DXaSrqBdzgGy/sMCWIPKVQdMoXpY4"
    "xG4iYhF7TH0MBs4T7FaM9hoFjn/sa9TCWtjLTRzZiknVkW9IXW37a35VmVaeZyQYgusGnnisNS4A5dYAMLanoUF4L3PO"
    "4m3uteG+aMmWJMtSbZltG3H2Cu2Vou2Js2PVFnyTfOk0kYJAGpoCL2ommjUrvbBvauITRk+k/y/n+JuGpdOpOis3M/eG"
    "UHdtAIyAvV/ITkfIG5HrFyBdGa2YLbf+GInakMOOp3keLCkCrXxqpGgj/93tkVOlMxLsBE4+v6PxO4W/XgV/4wFoXgWz"
    "aWtISZWXQg2PhtlSrB31Zx1oLOQLchwJxi52V1ku3ClmMKFUp+fxqVUY9Xd2v0aYu790sSKRsOWHztB93+hiJGRzz5d0"
    "g5EFcVOBDeBJ+CtvEvqoSFSV3DzAqI0D3zzR060zfnbXXysdautyGRF2j6wmjU07c3XWZ1AnERmofPEhEAoAoECGxd3Q"
    "JSZbMotFyNGjepgqsnJTnggHlJiRyNz8EmUZ/AGDCaV0"
)
APIV3 = "0123456789abcdef0123456789abcdef"


def test_request_signature_matches_the_published_get_vector() -> None:
    message = b"GET\ntest\n1651854037\n1E3A8D73B5A4AEE787C0F68B5DAB8520\n\n"

    assert signing.rsa_sign(KEY, message) == SIG_GET


def test_request_message_layout_for_a_body_less_get() -> None:
    message = signing.request_message(
        "get",
        "https://api.mch.weixin.qq.com/v3/certificates",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
    )

    assert message == b"GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"


def test_authorization_header_for_the_jsapi_vector() -> None:
    header = signing.authorization_header(
        mchid="1230000109",
        serial_no="B821DD2CA045BB93",
        key=KEY,
        method="POST",
        url="/v3/pay/transactions/jsapi",
        body=POST_BODY.encode(),
        timestamp=1554208460,
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
    )

    assert header == (
        'WECHATPAY2-SHA256-RSA2048 mchid="1230000109",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242"'
        f',signature="{SIG_POST}",timestamp="1554208460",serial_no="B821DD2CA045BB93"'
    )
    parsed = signing.parse_authorization(header)
    assert (parsed.mchid, parsed.timestamp, parsed.serial_no) == (
        "1230000109",
        1554208460,
        "B821DD2CA045BB93",
    )
    assert parsed.signature == SIG_POST


def test_canonical_url_keeps_path_and_raw_query_only() -> None:
    assert (
        signing.canonical_url(
            "https://api.mch.weixin.qq.com/v3/pay/transactions/out-trade-no/123?mchid=1230000109"
        )
        == "/v3/pay/transactions/out-trade-no/123?mchid=1230000109"
    )
    assert (
        signing.canonical_url("/v3/billdownload/file?token=a%2Bb")
        == "/v3/billdownload/file?token=a%2Bb"
    )


@pytest.mark.parametrize(
    "header",
    [
        'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",timestamp="1",serial_no="s"',
        'OTHER mchid="1",nonce_str="n",signature="x",timestamp="1",serial_no="s"',
        'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",signature="x",timestamp="soon",'
        'serial_no="s"',
        "WECHATPAY2-SHA256-RSA2048 garbage",
    ],
)
def test_malformed_authorization_headers_are_refused(header: str) -> None:
    with pytest.raises(signing.SignatureError):
        signing.parse_authorization(header)


def test_jsapi_pay_sign_matches_the_vector_and_verifies() -> None:
    params = {
        "app_id": "wx8888888888888888",
        "time_stamp": "1414561699",
        "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx201410272009395522657a690389285100",
    }

    assert signing.jsapi_pay_sign(KEY, **params) == PAY_SIGN
    assert signing.verify_pay_sign(KEY.public_key(), pay_sign=PAY_SIGN, **params)
    assert not signing.verify_pay_sign(
        KEY.public_key(), pay_sign=PAY_SIGN, **{**params, "package": "prepay_id=other"}
    )


def test_aead_decrypts_the_vector_and_encrypts_back_to_it() -> None:
    plain = signing.aead_decrypt(
        APIV3, nonce="fdasflkja484", associated_data="transaction", ciphertext=AEAD_CIPHER
    )

    assert plain.decode() == AEAD_PLAIN
    assert (
        signing.aead_encrypt(
            APIV3,
            nonce="fdasflkja484",
            associated_data="transaction",
            plaintext=AEAD_PLAIN.encode(),
        )
        == AEAD_CIPHER
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"associated_data": "refund"}, "decrypt_failed"),
        ({"nonce": "fdasflkja485"}, "decrypt_failed"),
        ({"ciphertext": "A" + AEAD_CIPHER[1:]}, "decrypt_failed"),
        ({"ciphertext": "not base64!"}, "bad_ciphertext"),
    ],
)
def test_altered_aead_inputs_are_refused(change: dict[str, str], reason: str) -> None:
    args = {
        "nonce": "fdasflkja484",
        "associated_data": "transaction",
        "ciphertext": AEAD_CIPHER,
        **change,
    }

    with pytest.raises(signing.SignatureError) as caught:
        signing.aead_decrypt(APIV3, **args)
    assert caught.value.reason == reason


def test_trade_bill_fixture_renders_to_the_spec_hash() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    cst = ZoneInfo("Asia/Shanghai")
    line = BillLine(
        at=datetime(2024, 1, 1, 10, 0, tzinfo=cst),
        appid="wxd678efh567hg6787",
        mchid="1230000109",
        transaction_id="4200000000202401010000000001",
        out_trade_no="1217752501201407033233368018",
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        trade_type="JSAPI",
        trade_state="SUCCESS",
        bank_type="OTHERS",
        amount_fen=100,
        description="门诊缴费",
        attach="",
    )

    bill = render_bill([line], bill_type="ALL", tz=cst)

    assert len(bill) == 825
    assert signing.bill_sha1(bill) == "0738cd68a29e9c94b22f991c4fe8c6a87298cd08"
    assert signing.bill_hash_matches(bill, "0738CD68A29E9C94B22F991C4FE8C6A87298CD08")
    assert not signing.bill_hash_matches(bill + b" ", "0738cd68a29e9c94b22f991c4fe8c6a87298cd08")
    # The hash is over the uncompressed bill, not the gzip stream.
    assert not signing.bill_hash_matches(
        gzip.compress(bill), "0738cd68a29e9c94b22f991c4fe8c6a87298cd08"
    )
    lines = bill.decode().split("\r\n")
    assert lines[1].startswith("`2024-01-01 10:00:00,`wxd678efh567hg6787,`1230000109,`0,`,")
    assert lines[3] == "`1,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00"


# --- response / notification verification -------------------------------------------------

KEYS = make_keyset()
NOW = 1_800_000_000


def _verifier() -> signing.PlatformVerifier:
    verifier = signing.PlatformVerifier()
    verifier.add(KEYS.platform_public_key_id, KEYS.platform_key.public_key())
    verifier.add(KEYS.platform_cert_serial.lower(), signing.load_public_key(KEYS.platform_cert_pem))
    return verifier


def test_a_signed_response_verifies_in_public_key_and_certificate_mode() -> None:
    body = b'{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}'
    for serial in (KEYS.platform_public_key_id, KEYS.platform_cert_serial):
        headers = signing.sign_response_headers(
            key=KEYS.platform_key, serial=serial, body=body, timestamp=NOW
        )
        signed = _verifier().verify(headers, body, now=NOW + 299)
        assert signed.serial == serial


def test_an_empty_204_body_is_signed_over_a_lone_newline() -> None:
    headers = signing.sign_response_headers(
        key=KEYS.platform_key,
        serial=KEYS.platform_public_key_id,
        body=b"",
        timestamp=NOW,
        nonce="N",
    )
    message = f"{NOW}\nN\n\n".encode()

    assert signing.rsa_verify(
        KEYS.platform_key.public_key(), message, headers["Wechatpay-Signature"]
    )


def _signed(body: bytes, **override: str) -> dict[str, str]:
    headers = signing.sign_response_headers(
        key=KEYS.platform_key, serial=KEYS.platform_public_key_id, body=body, timestamp=NOW
    )
    headers.update(override)
    return {k: v for k, v in headers.items() if v != "<drop>"}


@pytest.mark.parametrize(
    ("headers_change", "body", "now", "reason"),
    [
        ({}, b'{"a":2}', NOW, "bad_signature"),
        ({}, b'{"a":1}', NOW + 301, "stale_timestamp"),
        ({}, b'{"a":1}', NOW - 301, "stale_timestamp"),
        ({"Wechatpay-Serial": "PUB_KEY_ID_0000"}, b'{"a":1}', NOW, "unknown_serial"),
        ({"Wechatpay-Signature": "<drop>"}, b'{"a":1}', NOW, "missing_headers"),
        (
            {"Wechatpay-Signature": signing.SIGNTEST_PREFIX + "abc"},
            b'{"a":1}',
            NOW,
            "signature_probe",
        ),
        (
            {"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"},
            b'{"a":1}',
            NOW,
            "unsupported_signature_type",
        ),
        (
            {"Wechatpay-Signature": base64.b64encode(b"x" * 256).decode()},
            b'{"a":1}',
            NOW,
            "bad_signature",
        ),
    ],
)
def test_bad_responses_are_refused_with_their_reason(
    headers_change: dict[str, str], body: bytes, now: int, reason: str
) -> None:
    headers = _signed(b'{"a":1}', **headers_change)

    with pytest.raises(signing.SignatureError) as caught:
        _verifier().verify(headers, body, now=now)
    assert caught.value.reason == reason
