"""Alibaba Cloud SMS (Dysms ``SendSms``, API version 2017-05-25) over its RPC-style HTTP API.

Requests are GETs whose query carries the common parameters and a signature:
``HMAC-SHA1(secret + "&", "GET&%2F&" + percentEncode(canonical query))``, Base64, where the
canonical query is the parameters sorted by name, each name and value percent-encoded per
RFC 3986 (space as %20, ``~`` kept). Answers are JSON with ``Code`` "OK" on success.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from frontdesk.core.masking import mask_phone
from frontdesk.sms.port import SmsReceipt, SmsRejected, SmsUnavailable

log = logging.getLogger("frontdesk.sms")

API_VERSION = "2017-05-25"
# Provider codes meaning "try again later"; every other non-OK code is a refusal.
_RETRYABLE = {
    "isp.SYSTEM_ERROR",
    "isp.RAM_PERMISSION_DENY",
    "ServiceUnavailable",
    "Throttling",
    "Throttling.User",
}


def percent_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def sign(params: Mapping[str, str], secret: str, *, method: str = "GET") -> str:
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunSms:
    def __init__(
        self,
        *,
        base_url: str,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_code: str,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.sign_name = sign_name
        self.template_code = template_code
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout))

    async def aclose(self) -> None:
        await self._client.aclose()

    def signed_params(
        self, *, phone: str, code: str, nonce: str | None = None, at: datetime | None = None
    ) -> dict[str, str]:
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "PhoneNumbers": phone,
            "RegionId": "cn-hangzhou",
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce or uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": self.template_code,
            "TemplateParam": json.dumps({"code": code}, separators=(",", ":")),
            "Timestamp": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
        }
        params["Signature"] = sign(params, self._secret)
        return params

    async def send_code(self, *, phone: str, code: str) -> SmsReceipt:
        started = time.perf_counter()
        outcome = "error"
        try:
            try:
                response = await self._client.get(
                    self.base_url, params=self.signed_params(phone=phone, code=code)
                )
            except httpx.HTTPError as exc:
                raise SmsUnavailable(f"SMS provider unreachable: {type(exc).__name__}") from exc
            if response.status_code >= 500:
                raise SmsUnavailable(f"SMS provider answered {response.status_code}")
            try:
                body = response.json()
                result_code = str(body["Code"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SmsUnavailable("SMS provider sent a malformed answer") from exc
            if result_code == "OK":
                outcome = "ok"
                return SmsReceipt(provider_id=str(body.get("BizId", "")))
            outcome = result_code
            if result_code in _RETRYABLE:
                raise SmsUnavailable(result_code)
            raise SmsRejected(result_code, str(body.get("Message", "")))
        finally:
            log.info(
                "sms.send_code to %s: %s in %.1f ms",
                mask_phone(phone),
                outcome,
                (time.perf_counter() - started) * 1000,
            )
