"""An SMS provider simulator speaking Alibaba Cloud SMS's ``SendSms`` API.

It checks what the real service checks (signature, 15-minute timestamp window, nonce reuse,
number format, one message per number per minute) and keeps every message in an inbox that
the WeChat simulator's phone page and the tests read (``GET /sim/inbox?phone=``).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from frontdesk.sms.aliyun import API_VERSION, sign

_PHONE = re.compile(r"^1[3-9][0-9]{9}$")


@dataclass
class SentSms:
    phone: str
    sign_name: str
    template_code: str
    params: dict[str, Any]
    text: str
    at: datetime
    biz_id: str


@dataclass
class SmsSimState:
    access_key_id: str
    access_key_secret: str
    messages: list[SentSms] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    per_minute: int = 1
    fail_next: str | None = None  # fault injection: a provider code for the next request


def _answer(code: str, message: str = "", **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"Code": code, "Message": message or code, "RequestId": secrets.token_hex(8), **extra}
    )


def create_sms_sim_app(*, access_key_id: str, access_key_secret: str, now: Any = None) -> FastAPI:
    state = SmsSimState(access_key_id=access_key_id, access_key_secret=access_key_secret)
    clock = now or (lambda: datetime.now(UTC))
    app = FastAPI(title="SMS simulator (Alibaba Cloud SendSms)")
    app.state.sim = state

    @app.get("/")
    async def send_sms(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        if state.fail_next:
            code, state.fail_next = state.fail_next, None
            return _answer(code)
        signature = params.pop("Signature", "")
        if params.get("AccessKeyId") != state.access_key_id:
            return _answer("InvalidAccessKeyId.NotFound")
        if not hmac.compare_digest(signature, sign(params, state.access_key_secret)):
            return _answer("SignatureDoesNotMatch")
        try:
            stamp = datetime.strptime(
                params.get("Timestamp", "").replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z"
            )
        except ValueError:
            return _answer("InvalidTimeStamp.Format")
        if abs(clock() - stamp) > timedelta(minutes=15):
            return _answer("InvalidTimeStamp.Expired")
        nonce = params.get("SignatureNonce", "")
        if not nonce or nonce in state.nonces:
            return _answer("SignatureNonceUsed")
        state.nonces.add(nonce)
        if params.get("Action") != "SendSms" or params.get("Version") != API_VERSION:
            return _answer("InvalidAction.NotFound")
        phone = params.get("PhoneNumbers", "")
        if not _PHONE.match(phone):
            return _answer("isv.MOBILE_NUMBER_ILLEGAL")
        try:
            template_params = json.loads(params.get("TemplateParam", "{}"))
        except ValueError:
            return _answer("isv.INVALID_JSON_PARAM")
        at = clock()
        recent = [
            m for m in state.messages if m.phone == phone and at - m.at < timedelta(minutes=1)
        ]
        if len(recent) >= state.per_minute:
            return _answer("isv.BUSINESS_LIMIT_CONTROL")
        biz_id = f"{secrets.randbelow(10**12):012d}^0"
        text = (
            f"【{params.get('SignName', '')}】您的验证码为{template_params.get('code', '')}"
            f"，5分钟内有效，请勿泄露。"
        )
        state.messages.append(
            SentSms(
                phone=phone,
                sign_name=params.get("SignName", ""),
                template_code=params.get("TemplateCode", ""),
                params=template_params,
                text=text,
                at=at,
                biz_id=biz_id,
            )
        )
        return _answer("OK", "OK", BizId=biz_id)

    @app.get("/sim/inbox")
    async def inbox(phone: str) -> JSONResponse:
        # Read by the WeChat simulator's phone page, which is served from another port.
        messages = [
            {
                "phone": m.phone,
                "text": m.text,
                "params": m.params,
                "at": m.at.isoformat(),
                "biz_id": m.biz_id,
            }
            for m in state.messages
            if m.phone == phone
        ]
        return JSONResponse(messages, headers={"Access-Control-Allow-Origin": "*"})

    return app
