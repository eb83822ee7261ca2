"""``/wechat/callback``: WeChat's URL verification (GET) and message push (POST).

Order of checks on a POST, each refusing before anything is stored: body size, query
shape, ``signature`` (constant time), timestamp freshness, then in compatible/safe mode
``msg_signature`` and AES decryption, then the hardened XML parse. Only then is the message
handed to ``service.handle_inbound`` in the request's transaction.
"""

from __future__ import annotations

import logging
import re
import time

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import translate
from frontdesk.core.settings import Settings
from frontdesk.web.deps import SessionDep
from frontdesk.wechat.oa import service
from frontdesk.wechat.oa.crypto import CryptoError, MessageCrypto, check_url_signature
from frontdesk.wechat.oa.errors import CallbackMalformed, CallbackRefused, CallbackTooLarge
from frontdesk.wechat.oa.xmlmsg import XmlError, parse_message, text_reply

log = logging.getLogger("frontdesk.wechat.callback")

router = APIRouter(tags=["wechat"])

_DIGITS = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{40}$")
REPLY_LOCALE = "zh-CN"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _crypto(settings: Settings, request: Request) -> MessageCrypto:
    # One instance per app: decoding the key is cheap but not free at 200 messages/s.
    cached: MessageCrypto | None = getattr(request.app.state, "wechat_crypto", None)
    if cached is None:
        cached = MessageCrypto(
            token=settings.wechat_token.get_secret_value(),
            encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
            appid=settings.wechat_appid,
        )
        request.app.state.wechat_crypto = cached
    return cached


def _refuse(reason: str) -> CallbackRefused:
    log.warning("wechat callback refused: %s", reason)
    return CallbackRefused(reason)


def _check_query(request: Request, settings: Settings) -> tuple[str, str]:
    """Signature and freshness of the query; returns (timestamp, nonce)."""
    q = request.query_params
    timestamp, nonce, signature = q.get("timestamp", ""), q.get("nonce", ""), q.get("signature")
    if not _DIGITS.match(timestamp) or not _NONCE.match(nonce):
        raise _refuse("timestamp or nonce missing or malformed")
    if not signature or not _SIGNATURE.match(signature):
        raise _refuse("signature missing or malformed")
    if not check_url_signature(
        settings.wechat_token.get_secret_value(), timestamp, nonce, signature
    ):
        raise _refuse("signature does not match")
    skew = abs(clock_now().timestamp() - int(timestamp))
    if skew > settings.wechat_callback_max_skew_seconds:
        # An old, validly signed request is a replay: WeChat itself never sends those.
        raise _refuse(f"timestamp is {int(skew)} s away from now")
    return timestamp, nonce


@router.get("/wechat/callback", response_class=PlainTextResponse)
async def verify_url(request: Request) -> PlainTextResponse:
    """URL verification: answer ``echostr`` verbatim if the signature is right."""
    settings = _settings(request)
    _check_query(request, settings)
    echostr = request.query_params.get("echostr")
    if not echostr or len(echostr) > 128:
        raise CallbackMalformed("echostr missing")
    return PlainTextResponse(echostr)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        log.warning("wechat callback refused: body of %s bytes", declared)
        raise CallbackTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            log.warning("wechat callback refused: body over %s bytes", limit)
            raise CallbackTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> dict[str, str]:
    try:
        return parse_message(body)
    except XmlError as exc:
        log.warning("wechat callback refused: %s", exc)
        raise CallbackMalformed(str(exc)) from exc


@router.post("/wechat/callback")
async def receive(request: Request, session: SessionDep) -> Response:
    started = time.perf_counter()
    settings = _settings(request)
    body = await _read_body(request, settings.wechat_callback_max_bytes)
    timestamp, nonce = _check_query(request, settings)
    encrypted = request.query_params.get("encrypt_type") == "aes"
    crypto = _crypto(settings, request)
    if encrypted:
        envelope = _parse(body)
        encrypt = envelope.get("Encrypt", "")
        if not encrypt:
            raise CallbackMalformed("Encrypt missing")
        try:
            inner = crypto.check_and_decrypt(
                timestamp=timestamp,
                nonce=nonce,
                encrypt=encrypt,
                signature=request.query_params.get("msg_signature"),
            )
        except CryptoError as exc:
            if exc.code == CryptoError.SIGNATURE:
                raise _refuse("msg_signature does not match") from exc
            log.warning("wechat callback refused: %s", exc)
            raise CallbackMalformed(exc.reason) from exc
        fields = _parse(inner)
    else:
        if settings.wechat_callback_mode == "safe":
            raise _refuse("plaintext message while the account is in safe mode")
        fields = _parse(body)
    if (
        not fields.get("FromUserName")
        or not fields.get("ToUserName")
        or not fields.get("CreateTime", "").isdigit()
    ):
        raise CallbackMalformed("FromUserName, ToUserName or CreateTime missing")

    now = clock_now()
    try:
        answer, new = await service.handle_inbound(session, fields=fields, now=now)
    except service.UnknownMessage as exc:
        log.info("wechat callback ignored: %s", exc)
        return PlainTextResponse("success")
    reply = _render(answer, fields=fields, now=int(now.timestamp()))
    log.info(
        "wechat %s %s handled in %.1f ms",
        fields.get("MsgType"),
        "new" if new else "re-delivery",
        (time.perf_counter() - started) * 1000,
    )
    if reply is None:
        return PlainTextResponse("success")
    if encrypted:
        reply = crypto.encrypt_reply(reply, timestamp=timestamp, nonce=nonce)
    return Response(reply, media_type="application/xml")


def _render(answer: service.Answer, *, fields: dict[str, str], now: int) -> str | None:
    if answer.empty:
        return None
    content = (
        answer.text
        if answer.text is not None
        else translate(answer.code or "", REPLY_LOCALE, **dict(answer.params))
    )
    return text_reply(
        to_user=fields["FromUserName"],
        from_user=fields["ToUserName"],
        create_time=now,
        content=content,
    )
