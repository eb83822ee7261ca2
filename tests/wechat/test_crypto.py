"""Golden vectors from wechat.md §1.2, §1.6 and §2.4, plus wechatpy interoperability."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature as wechatpy_check_signature

from frontdesk.wechat.oa.crypto import (
    CryptoError,
    MessageCrypto,
    jssdk_signature,
    msg_signature,
    url_signature,
)
from frontdesk.wechat.oa.xmlmsg import XmlError, parse_message

TOKEN_A = "spamtest"
KEY_A = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID_A = "wx2c2769f8efd9abc2"
ENCRYPT_A = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8"
    "PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jis"
    "a+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6"
    "X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl"
    "9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)
ENCRYPT_B = (
    "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBq"
    "GsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFh"
    "HZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX0"
    "5UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3"
    "WeK2XeFYFMNMpatF9XiKzHo3"
)
DECRYPT_B = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrs"
    "TyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+"
    "BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7"
    "vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dS"
    "hyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
ENCRYPT_C = (
    "QCTqNwyPmqRu4xuyqVsja0kl4gt18Ebnsuf29tIGygGj50LEluBSNWnoIld1Mg/Nbi3G/EiRrvcztYIOvDFnqMlrEE"
    "zG3ht7cq5JaqgyGDnOzliC5AkJc4Opxw2pp5VnasStesv+pduqqe/Ff/Srf7ZB2OD6O9pUyfbYoadFp8RaY2aRz7N9"
    "he+rqW/rPblOlPvgdiHBTy1fHWjhaKW2OWhUIeerBxGF+I9VTd7xFUDMS24huRdoKsafUTZfiUnHhzSDMFBjL7w6aY"
    "XZHXWjjHIrO1c1YzzKf8QCNTL6z6khS1DGleb8ZtMDthZI85PuT9aixlcn1Dog8CjoSkMEWNftREbZoUBwQbLjgRj5"
    "yPxXQ8weRwLlbhwPwufLOa9t"
)
PLAIN_C = (
    "<xml><ToUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></ToUserName><FromUserName>"
    "<![CDATA[gh_10f6c3c3ac5a]]></FromUserName><CreateTime>1409735670</CreateTime><MsgType>"
    "<![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content></xml>"
)
PLAIN_B = "\n".join(
    [
        "<xml>",
        "<MsgType><![CDATA[text]]></MsgType>",
        "<Content><![CDATA[test]]></Content>",
        "<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>",
        "<ToUserName><![CDATA[messense]]></ToUserName>",
        "<AgentID>1</AgentID>",
        "<CreateTime>1411525903</CreateTime>",
        "</xml>",
    ]
)


def crypto_a() -> MessageCrypto:
    return MessageCrypto(token=TOKEN_A, encoding_aes_key=KEY_A, appid=APPID_A)


def test_url_signature_vector() -> None:
    assert url_signature("spamtest", "1409735669", "1320562132") == (
        "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"
    )


def test_vector_a_signature_and_decrypt() -> None:
    assert msg_signature(TOKEN_A, "1409735669", "1320562132", ENCRYPT_A) == (
        "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
    )
    xml = crypto_a().check_and_decrypt(
        timestamp="1409735669",
        nonce="1320562132",
        encrypt=ENCRYPT_A,
        signature="5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    )
    assert len(xml) == 280
    fields = parse_message(xml)
    assert fields == {
        "ToUserName": "gh_10f6c3c3ac5a",
        "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "CreateTime": "1409735668",
        "MsgType": "text",
        "Content": "abcdteT",
        "MsgId": "6054768590064713728",
    }


def test_vector_b_deterministic_encrypt_and_decrypt() -> None:
    crypto = MessageCrypto(
        token="123456",
        encoding_aes_key="kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        appid="wx49f0ab532d5d035a",
    )
    encrypt = crypto.encrypt(PLAIN_B, random_prefix=b"1234567890123456")
    assert encrypt == ENCRYPT_B
    assert msg_signature("123456", "1411525903", "461056294", encrypt) == (
        "407518b7649e86ef23978113f92d27afa9296533"
    )
    xml = crypto.check_and_decrypt(
        timestamp="1411525903",
        nonce="461056294",
        encrypt=DECRYPT_B,
        signature="74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
    )
    fields = parse_message(xml)
    assert fields["Content"] == "test"
    assert fields["FromUserName"] == "messense"


def test_vector_c_reply_encrypt_with_chinese_text() -> None:
    crypto = crypto_a()
    assert len(PLAIN_C.encode()) == 239
    encrypt = crypto.encrypt(PLAIN_C, random_prefix=b"1234567890123456")
    assert encrypt == ENCRYPT_C
    envelope = crypto.encrypt_reply(
        PLAIN_C, timestamp="1409735670", nonce="1320562132", random_prefix=b"1234567890123456"
    )
    fields = parse_message(envelope.encode())
    assert fields == {
        "Encrypt": ENCRYPT_C,
        "MsgSignature": "7afb2ec588c397621f8331cbc0b024a3c7eb2c32",
        "TimeStamp": "1409735670",
        "Nonce": "1320562132",
    }
    assert crypto.decrypt(ENCRYPT_C).decode() == PLAIN_C


def test_jssdk_signature_vector() -> None:
    ticket = (
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    )
    assert (
        jssdk_signature(
            jsapi_ticket=ticket,
            noncestr="Wm3WZYTPz0wzccnW",
            timestamp=1414587457,
            url="http://mp.weixin.qq.com?params=value#x",
        )
        == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    )


def test_pad_to_full_block_when_length_is_multiple_of_32() -> None:
    crypto = crypto_a()
    # 16 + 4 + n + 18 = 64 → n = 26: the plaintext is exactly two blocks, so 32 pad bytes.
    body = "x" * 26
    encrypt = crypto.encrypt(body, random_prefix=b"0" * 16)
    assert len(base64.b64decode(encrypt)) == 96
    assert crypto.decrypt(encrypt) == body.encode()


def test_wrong_signature_is_refused() -> None:
    with pytest.raises(CryptoError) as info:
        crypto_a().check_and_decrypt(
            timestamp="1409735669", nonce="1320562132", encrypt=ENCRYPT_A, signature="0" * 40
        )
    assert info.value.code == CryptoError.SIGNATURE
    with pytest.raises(CryptoError):
        crypto_a().check_and_decrypt(
            timestamp="1409735669", nonce="1320562132", encrypt=ENCRYPT_A, signature=None
        )


def test_other_appid_is_refused() -> None:
    other = MessageCrypto(token=TOKEN_A, encoding_aes_key=KEY_A, appid="wx0000000000000000")
    with pytest.raises(CryptoError) as info:
        other.decrypt(ENCRYPT_A)
    assert info.value.code == CryptoError.APPID_MISMATCH


@pytest.mark.parametrize("bad", ["not base64!!", "", "QUJD", ENCRYPT_A[:-8] + "AAAAAAA="])
def test_garbled_ciphertext_is_refused(bad: str) -> None:
    with pytest.raises(CryptoError):
        crypto_a().decrypt(bad)


def test_bad_aes_key_is_refused() -> None:
    with pytest.raises(CryptoError) as info:
        MessageCrypto(token="t", encoding_aes_key="short", appid=APPID_A)
    assert info.value.code == CryptoError.ILLEGAL_AES_KEY


def test_interop_wechatpy_encrypts_we_decrypt() -> None:
    theirs = WeChatCrypto(TOKEN_A, KEY_A, APPID_A)
    envelope = theirs.encrypt_message(PLAIN_C, "98765", "1700000000")
    fields = parse_message(envelope.encode())
    xml = crypto_a().check_and_decrypt(
        timestamp=fields["TimeStamp"],
        nonce=fields["Nonce"],
        encrypt=fields["Encrypt"],
        signature=fields["MsgSignature"],
    )
    assert xml.decode() == PLAIN_C


def test_interop_we_encrypt_wechatpy_decrypts() -> None:
    envelope = crypto_a().encrypt_reply(PLAIN_C, timestamp="1700000001", nonce="424242")
    fields = parse_message(envelope.encode())
    theirs = WeChatCrypto(TOKEN_A, KEY_A, APPID_A)
    inbound = (
        f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
        f"<Encrypt><![CDATA[{fields['Encrypt']}]]></Encrypt></xml>"
    )
    plain = theirs.decrypt_message(inbound, fields["MsgSignature"], "1700000001", "424242")
    assert plain == PLAIN_C


def test_interop_url_signature_matches_wechatpy() -> None:
    sig = url_signature("tok", "1700000000", "abc")
    wechatpy_check_signature("tok", sig, "1700000000", "abc")  # raises when it differs


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<xml><Content>&e;</Content></xml>",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
        b'"&lol;&lol;&lol;&lol;">]><xml><Content>&lol2;</Content></xml>',
        b"<xml><Content><![CDATA[half",
        b"<xml><Content>\xff\xfe</Content></xml>",
        b"",
        b"<notxml/>",
    ],
)
def test_hostile_or_broken_xml_is_refused(body: bytes) -> None:
    with pytest.raises(XmlError):
        parse_message(body)


def test_interop_xml_both_ways() -> None:
    from wechatpy import parse_message as wechatpy_parse
    from wechatpy.replies import TextReply

    from frontdesk.wechat.oa.xmlmsg import text_reply

    ours = text_reply(
        to_user="oUSER",
        from_user="gh_x",
        create_time=1700000000,
        content="候诊 <第3号> & ]]> 请稍等",
    )
    parsed = wechatpy_parse(ours)
    assert (parsed.type, parsed.content, parsed.source, parsed.target) == (
        "text",
        "候诊 <第3号> & ]]> 请稍等",
        "gh_x",
        "oUSER",
    )
    theirs = TextReply(source="gh_x", target="oUSER", content="你好 & <b>").render()
    fields = parse_message(theirs.encode())
    assert (fields["MsgType"], fields["Content"], fields["ToUserName"]) == (
        "text",
        "你好 & <b>",
        "oUSER",
    )


@given(text=st.text(max_size=600), prefix=st.binary(min_size=16, max_size=16))
@settings(max_examples=150, deadline=None)
def test_encrypt_decrypt_round_trip(text: str, prefix: bytes) -> None:
    body = text.encode("utf-8")
    crypto = crypto_a()
    encrypt = crypto.encrypt(body, random_prefix=prefix)
    assert crypto.decrypt(encrypt) == body
    assert len(base64.b64decode(encrypt)) % 32 == 0
