"""Build WeChat callback requests the way WeChat does, independently of our code
(hashlib for signatures, wechatpy for safe-mode encryption)."""

from __future__ import annotations

import hashlib
from typing import Any

from wechatpy.crypto import WeChatCrypto

from frontdesk.core.settings import Settings


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's algorithm


def xml(fields: dict[str, Any]) -> str:
    inner = "".join(
        f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>"
        for k, v in fields.items()
    )
    return f"<xml>{inner}</xml>"


def text_message(openid: str, content: str, *, msg_id: int, at: int) -> dict[str, Any]:
    return {
        "ToUserName": "gh_0000simhosp",
        "FromUserName": openid,
        "CreateTime": at,
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id,
    }


def event(openid: str, name: str, *, at: int, **extra: Any) -> dict[str, Any]:
    return {
        "ToUserName": "gh_0000simhosp",
        "FromUserName": openid,
        "CreateTime": at,
        "MsgType": "event",
        "Event": name,
        **extra,
    }


def plain_request(
    settings: Settings, body: str | bytes, *, timestamp: int, nonce: str = "1320562132"
) -> tuple[dict[str, str], bytes]:
    token = settings.wechat_token.get_secret_value()
    ts = str(timestamp)
    query = {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce, "openid": "o"}
    return query, body.encode() if isinstance(body, str) else body


def safe_request(
    settings: Settings,
    body: str,
    *,
    timestamp: int,
    nonce: str = "1320562132",
    compatible_fields: dict[str, Any] | None = None,
) -> tuple[dict[str, str], bytes]:
    token = settings.wechat_token.get_secret_value()
    crypto = WeChatCrypto(
        token, settings.wechat_encoding_aes_key.get_secret_value(), settings.wechat_appid
    )
    ts = str(timestamp)
    envelope = crypto.encrypt_message(body, nonce, ts)
    import xmltodict  # type: ignore[import-untyped]

    parsed = xmltodict.parse(envelope)["xml"]
    encrypt = parsed["Encrypt"]
    query = {
        "signature": sign(token, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "openid": "o",
        "encrypt_type": "aes",
        "msg_signature": parsed["MsgSignature"],
    }
    outer = {"ToUserName": "gh_0000simhosp", **(compatible_fields or {}), "Encrypt": encrypt}
    return query, xml(outer).encode()


def decrypt_reply(
    settings: Settings, body: bytes, *, timestamp: int, nonce: str = "1320562132"
) -> dict[str, Any]:
    import xmltodict

    crypto = WeChatCrypto(
        settings.wechat_token.get_secret_value(),
        settings.wechat_encoding_aes_key.get_secret_value(),
        settings.wechat_appid,
    )
    outer = xmltodict.parse(body)["xml"]
    plain = crypto.decrypt_message(
        body.decode(), outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]
    )
    result: dict[str, Any] = xmltodict.parse(plain)["xml"]
    return result
