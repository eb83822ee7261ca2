"""The real WeChat Pay API v3 adapter: async httpx, explicit timeouts, every call logged.

It signs every request over the exact bytes it sends, verifies every 2xx answer (a 2xx without
a valid signature is treated as forged: outcome unknown), and speaks to whatever base URL the
settings give it — ``api.mch.weixin.qq.com`` in production, the simulator in tests and demos.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import io
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from frontdesk.core import clock as core_clock
from frontdesk.core.settings import Settings
from frontdesk.wechat.pay import signing
from frontdesk.wechat.pay.errors_map import error_for
from frontdesk.wechat.pay.events import (
    OtherPayEvent,
    PayEvent,
    PaymentSucceeded,
    RefundAbnormal,
    RefundClosed,
    RefundSettled,
    RefundSucceeded,
)
from frontdesk.wechat.pay.port import (
    BillDownload,
    BillType,
    CodePayOrder,
    JsapiOrder,
    JsapiPayParams,
    NativeOrder,
    NotificationRejected,
    Payment,
    PayRejected,
    PayUnavailable,
    Refund,
    RefundRequest,
    RefundStatus,
    TradeState,
)

log = logging.getLogger("frontdesk.wechat.pay")

USER_AGENT = "frontdesk-wechatpay/1"
MAX_BILL_BYTES = 256 * 1024 * 1024
# Streamed to a file, a bill may be larger: 1M lines are ~330 MB uncompressed.
MAX_STREAM_BILL_BYTES = 4 * 1024 * 1024 * 1024


class PayConfigError(ValueError):
    """The WeChat Pay settings are incomplete or unreadable; the message names the setting."""


@dataclass(frozen=True)
class PayConfig:
    api_base: str
    mchid: str
    appid: str
    serial_no: str
    private_key: rsa.RSAPrivateKey
    apiv3_key: bytes
    notify_url: str
    platform_mode: str = "public_key"  # or "certificate"
    platform_public_key: rsa.RSAPublicKey | None = None
    platform_public_key_id: str | None = None
    timeout_seconds: float = 10.0
    connect_timeout_seconds: float = 3.0
    window_seconds: int = signing.DEFAULT_WINDOW_SECONDS
    codepay_poll_seconds: float = 5.0
    codepay_wait_seconds: float = 30.0
    refund_notify_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PayConfig | None:
        """The configuration, or None when WeChat Pay is not configured at all."""
        s = settings
        if not s.wechatpay_mchid:
            return None
        key_pem = _read_pem(
            s.wechatpay_private_key.get_secret_value(),
            s.wechatpay_private_key_path,
            "FRONTDESK_WECHATPAY_PRIVATE_KEY",
        )
        apiv3 = s.wechatpay_apiv3_key.get_secret_value().encode()
        if len(apiv3) != 32:
            raise PayConfigError("FRONTDESK_WECHATPAY_APIV3_KEY: must be 32 characters")
        public_key = None
        if s.wechatpay_platform_mode == "public_key":
            pem = _read_pem(
                s.wechatpay_platform_public_key, "", "FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY"
            )
            public_key = signing.load_public_key(pem)
            if not s.wechatpay_platform_public_key_id:
                raise PayConfigError("FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY_ID: required")
        return cls(
            api_base=s.wechatpay_api_base.rstrip("/"),
            mchid=s.wechatpay_mchid,
            appid=s.wechatpay_appid,
            serial_no=s.wechatpay_serial_no,
            private_key=signing.load_private_key(key_pem),
            apiv3_key=apiv3,
            notify_url=s.wechatpay_notify_url,
            platform_mode=s.wechatpay_platform_mode,
            platform_public_key=public_key,
            platform_public_key_id=s.wechatpay_platform_public_key_id or None,
            timeout_seconds=s.wechatpay_timeout_seconds,
            codepay_poll_seconds=s.wechatpay_codepay_poll_seconds,
            codepay_wait_seconds=s.wechatpay_codepay_wait_seconds,
            refund_notify_url=s.wechatpay_refund_notify_url or None,
        )


def _read_pem(inline: str, path: str, setting: str) -> bytes:
    """A PEM given inline, or as a file path (in the inline setting or the ``_path`` one)."""
    if inline.strip().startswith("-----BEGIN"):
        return inline.encode()
    candidate = path or inline
    if not candidate:
        raise PayConfigError(f"{setting}: required (PEM text or a file path)")
    try:
        return Path(candidate).read_bytes()
    except OSError as exc:
        raise PayConfigError(f"{setting}: cannot read {candidate}: {exc.strerror}") from exc


_OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-*]{6,32}$")
_OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")


def _checked(value: str, pattern: re.Pattern[str], name: str) -> str:
    """Merchant numbers go into URL paths: only WeChat's documented characters pass."""
    if not pattern.match(value):
        raise ValueError(f"{name} {value!r} is not a valid WeChat Pay merchant number")
    return value


def _order_path(out_trade_no: str, suffix: str = "") -> str:
    number = _checked(out_trade_no, _OUT_TRADE_NO, "out_trade_no")
    return f"/v3/pay/transactions/out-trade-no/{number}{suffix}"


def _dumps(payload: Mapping[str, Any]) -> bytes:
    # Compact and not ASCII-escaped: what we sign is byte for byte what we send.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.isoformat(timespec="seconds")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _int(value: Any, name: str) -> int:
    # bool is an int in Python; JSON money is never true/false nor 1.0.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _str(value: Any, name: str, *, required: bool = True) -> str:
    if isinstance(value, str) and (value or not required):
        return value
    raise ValueError(f"{name} must be a string")


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def payment_from_json(data: Mapping[str, Any]) -> Payment:
    amount = data.get("amount") or {}
    payer = data.get("payer") or {}
    state = TradeState(_str(data.get("trade_state"), "trade_state"))
    return Payment(
        out_trade_no=_str(data.get("out_trade_no"), "out_trade_no"),
        state=state,
        state_desc=_opt_str(data.get("trade_state_desc")) or "",
        amount_fen=_int(amount.get("total"), "amount.total"),
        transaction_id=_opt_str(data.get("transaction_id")),
        trade_type=_opt_str(data.get("trade_type")),
        payer_total_fen=_opt_int(amount.get("payer_total"), "amount.payer_total"),
        openid=_opt_str(payer.get("openid")) if isinstance(payer, dict) else None,
        success_at=_parse_time(data.get("success_time")),
        attach=_opt_str(data.get("attach")),
        bank_type=_opt_str(data.get("bank_type")),
    )


def refund_from_json(data: Mapping[str, Any]) -> Refund:
    amount = data.get("amount") or {}
    status = data.get("status", data.get("refund_status"))
    return Refund(
        out_refund_no=_str(data.get("out_refund_no"), "out_refund_no"),
        refund_id=_str(data.get("refund_id"), "refund_id"),
        out_trade_no=_str(data.get("out_trade_no"), "out_trade_no"),
        transaction_id=_str(data.get("transaction_id"), "transaction_id"),
        status=RefundStatus(_str(status, "status")),
        refund_fen=_int(amount.get("refund"), "amount.refund"),
        total_fen=_int(amount.get("total"), "amount.total"),
        payer_refund_fen=_opt_int(amount.get("payer_refund"), "amount.payer_refund"),
        channel=_opt_str(data.get("channel")),
        user_received_account=_opt_str(data.get("user_received_account")),
        success_at=_parse_time(data.get("success_time")),
        created_at=_parse_time(data.get("create_time")),
    )


Sleep = Callable[[float], Awaitable[None]]


class HttpWeChatPay:
    """``WeChatPay`` over HTTPS (API v3). One instance per process; share it."""

    def __init__(
        self,
        config: PayConfig,
        *,
        http: httpx.AsyncClient | None = None,
        now: Callable[[], datetime] | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds)
        )
        self._now = now or core_clock.now
        self._sleep = sleep or asyncio.sleep
        self.verifier = signing.PlatformVerifier(window_seconds=config.window_seconds)
        if config.platform_public_key is not None and config.platform_public_key_id:
            self.verifier.add(config.platform_public_key_id, config.platform_public_key)
        self._cert_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def _timestamp(self) -> int:
        return int(self._now().timestamp())

    # --- transport ----------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        verify: bool = True,
    ) -> httpx.Response:
        url = path + ("?" + urlencode(query) if query else "")
        return await self._send(operation, method, url, payload=payload, verify=verify)

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        payload: Mapping[str, Any] | None = None,
        verify: bool = True,
    ) -> httpx.Response:
        body = _dumps(payload) if payload is not None else b""
        headers, target = self._signed(method, url, body)
        started = time.perf_counter()
        outcome = "error"
        status: int | None = None
        try:
            try:
                # httpx enforces its own timeouts on real sockets; this deadline also covers
                # transports that do not (ASGI) and a server that trickles its answer.
                async with asyncio.timeout(self.config.timeout_seconds):
                    response = await self._http.request(
                        method, target, content=body, headers=headers
                    )
            except (httpx.TimeoutException, TimeoutError) as exc:
                outcome = "timeout"
                raise PayUnavailable(f"{operation}: timed out") from exc
            except httpx.HTTPError as exc:
                outcome = "network"
                raise PayUnavailable(f"{operation}: {type(exc).__name__}") from exc
            status = response.status_code
            if 200 <= status < 300:
                if verify:
                    await self._verify_response(operation, response)
                outcome = "ok"
                return response
            outcome = "refused"
            if verify and "Wechatpay-Signature" in response.headers:
                # A signed refusal must verify too, or "not found" could be forged.
                await self._verify_response(operation, response)
            raise self._error(operation, response)
        finally:
            _log_call(operation, method, status, outcome, started)

    def _signed(self, method: str, url: str, body: bytes) -> tuple[dict[str, str], str]:
        """The signed request headers and the absolute target of ``url``."""
        cfg = self.config
        timestamp = self._timestamp()
        headers = {
            "Authorization": signing.authorization_header(
                mchid=cfg.mchid,
                serial_no=cfg.serial_no,
                key=cfg.private_key,
                method=method,
                url=url,
                body=body,
                timestamp=timestamp,
                nonce=signing.new_nonce(),
            ),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if body:
            headers["Content-Type"] = "application/json"
        if cfg.platform_public_key_id:
            # Public-key mode: always say which platform key we expect (spec §4.1).
            headers["Wechatpay-Serial"] = cfg.platform_public_key_id
        target = url if url.startswith(("http://", "https://")) else cfg.api_base + url
        return headers, target

    def _error(self, operation: str, response: httpx.Response) -> PayUnavailable | PayRejected:
        code, message = "", ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = str(data.get("code") or "")
            message = str(data.get("message") or "")[:200]
        return error_for(
            status=response.status_code, vendor_code=code, message=message, operation=operation
        )

    async def _verify_response(self, operation: str, response: httpx.Response) -> None:
        try:
            await self._verify(response.headers, response.content)
        except signing.SignatureError as exc:
            # A 2xx that does not verify may be forged: the outcome is unknown, not a success.
            raise PayUnavailable(
                f"{operation}: response not verified ({exc.reason})",
                vendor_code="RESPONSE_NOT_VERIFIED",
            ) from exc

    async def _verify(self, headers: Mapping[str, str], body: bytes) -> signing.SignedHeaders:
        try:
            return self.verifier.verify(headers, body, now=self._timestamp())
        except signing.SignatureError as exc:
            if exc.reason != "unknown_serial" or self.config.platform_mode != "certificate":
                raise
        # Certificate mode: a serial we do not know means rotation; refresh once, retry.
        await self.refresh_certificates()
        return self.verifier.verify(headers, body, now=self._timestamp())

    async def refresh_certificates(self) -> list[str]:
        """Certificate mode: download, decrypt and install the platform certificates.

        The list is authenticated by its AEAD encryption under our APIv3 key; the response
        signature is then checked with the certificates it delivered.
        """
        async with self._cert_lock:
            response = await self._call("certificates", "GET", "/v3/certificates", verify=False)
            try:
                items = response.json()["data"]
            except (ValueError, KeyError, TypeError) as exc:
                raise PayUnavailable("certificates: malformed answer") from exc
            now = self._now()
            fresh = signing.PlatformVerifier(window_seconds=self.config.window_seconds)
            for item in items if isinstance(items, list) else []:
                enc = item.get("encrypt_certificate") if isinstance(item, dict) else None
                if not isinstance(enc, dict):
                    continue
                try:
                    pem = signing.aead_decrypt(
                        self.config.apiv3_key,
                        nonce=str(enc.get("nonce", "")),
                        associated_data=str(enc.get("associated_data", "")),
                        ciphertext=str(enc.get("ciphertext", "")),
                    )
                    cert = x509.load_pem_x509_certificate(pem)
                except (signing.SignatureError, ValueError):
                    log.warning("wechatpay certificate entry did not decrypt; skipped")
                    continue
                if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                    continue
                key = cert.public_key()
                if isinstance(key, rsa.RSAPublicKey):
                    fresh.add(format(cert.serial_number, "X"), key)
            try:
                fresh.verify(response.headers, response.content, now=self._timestamp())
            except signing.SignatureError as exc:
                raise PayUnavailable(
                    f"certificates: response not verified ({exc.reason})",
                    vendor_code="RESPONSE_NOT_VERIFIED",
                ) from exc
            for serial, key in fresh.keys().items():
                self.verifier.add(serial, key)
            return fresh.serials

    @staticmethod
    def _json(operation: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise PayUnavailable(f"{operation}: answer is not JSON") from exc
        if not isinstance(data, dict):
            raise PayUnavailable(f"{operation}: answer is not an object")
        return data

    # --- orders -------------------------------------------------------------------------

    def _order_payload(self, order: JsapiOrder | NativeOrder) -> dict[str, Any]:
        if order.amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        _checked(order.out_trade_no, _OUT_TRADE_NO, "out_trade_no")
        payload: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": order.description,
            "out_trade_no": order.out_trade_no,
            "notify_url": order.notify_url or self.config.notify_url,
            "amount": {"total": order.amount_fen, "currency": "CNY"},
        }
        if order.expires_at is not None:
            payload["time_expire"] = _rfc3339(order.expires_at)
        if order.attach:
            payload["attach"] = order.attach
        return payload

    async def create_jsapi_order(self, order: JsapiOrder) -> str:
        payload = self._order_payload(order)
        payload["payer"] = {"openid": order.openid}
        if order.payer_client_ip:
            payload["scene_info"] = {"payer_client_ip": order.payer_client_ip}
        response = await self._call("jsapi", "POST", "/v3/pay/transactions/jsapi", payload=payload)
        prepay_id = self._json("jsapi", response).get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise PayUnavailable("jsapi: no prepay_id in the answer")
        return prepay_id

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        time_stamp = str(self._timestamp())
        nonce = signing.new_nonce()
        package = f"prepay_id={prepay_id}"
        return JsapiPayParams(
            app_id=self.config.appid,
            time_stamp=time_stamp,
            nonce_str=nonce,
            package=package,
            sign_type="RSA",
            pay_sign=signing.jsapi_pay_sign(
                self.config.private_key,
                app_id=self.config.appid,
                time_stamp=time_stamp,
                nonce_str=nonce,
                package=package,
            ),
        )

    async def create_native_order(self, order: NativeOrder) -> str:
        response = await self._call(
            "native", "POST", "/v3/pay/transactions/native", payload=self._order_payload(order)
        )
        code_url = self._json("native", response).get("code_url")
        if not isinstance(code_url, str) or not code_url:
            raise PayUnavailable("native: no code_url in the answer")
        return code_url

    async def query_order(self, out_trade_no: str) -> Payment:
        response = await self._call(
            "query",
            "GET",
            _order_path(out_trade_no),
            query={"mchid": self.config.mchid},
        )
        try:
            return payment_from_json(self._json("query", response))
        except ValueError as exc:
            raise PayUnavailable(f"query: malformed transaction ({exc})") from exc

    async def close_order(self, out_trade_no: str) -> None:
        await self._call(
            "close",
            "POST",
            _order_path(out_trade_no, "/close"),
            payload={"mchid": self.config.mchid},
        )

    # --- payment code -------------------------------------------------------------------

    async def pay_by_code(self, order: CodePayOrder) -> Payment:
        if order.amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        _checked(order.out_trade_no, _OUT_TRADE_NO, "out_trade_no")
        payload: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": order.description,
            "out_trade_no": order.out_trade_no,
            "payer": {"auth_code": order.auth_code},
            "amount": {"total": order.amount_fen, "currency": "CNY"},
            "scene_info": {
                "store_info": {"out_id": order.store_id},
                "payer_client_ip": order.payer_client_ip,
            },
        }
        if order.device_id:
            payload["scene_info"]["device_id"] = order.device_id
        if order.attach:
            payload["attach"] = order.attach
        try:
            response = await self._call(
                "codepay", "POST", "/v3/pay/transactions/codepay", payload=payload
            )
        except PayUnavailable:
            # SYSTEM_ERROR or no answer: the charge may or may not have happened; find out.
            log.warning("wechatpay codepay outcome unknown; querying %s", order.out_trade_no)
            return await self._settle_code_payment(order.out_trade_no)
        if response.status_code == 202:
            return await self._settle_code_payment(order.out_trade_no)
        try:
            payment = payment_from_json(self._json("codepay", response))
        except ValueError:
            return await self._settle_code_payment(order.out_trade_no)
        if payment.state is TradeState.SUCCESS:
            return payment
        return await self._settle_code_payment(order.out_trade_no)

    async def _settle_code_payment(self, out_trade_no: str) -> Payment:
        """Query until paid or failed; at the deadline reverse (spec §4.11 flow)."""
        polls = max(
            1, math.ceil(self.config.codepay_wait_seconds / self.config.codepay_poll_seconds)
        )
        for _ in range(polls):
            await self._sleep(self.config.codepay_poll_seconds)
            try:
                payment = await self.query_order(out_trade_no)
            except PayUnavailable:
                continue
            except PayRejected as exc:
                if exc.reason == "order_not_found":
                    continue
                raise
            if payment.state is TradeState.SUCCESS:
                return payment
            if payment.state in (TradeState.PAYERROR, TradeState.REVOKED, TradeState.CLOSED):
                raise PayRejected(
                    "payment_failed",
                    vendor_code=payment.state.value,
                    detail=payment.state_desc or None,
                )
        await self._reverse(out_trade_no)
        raise PayRejected(
            "payment_cancelled", vendor_code="USERPAYING", detail="unpaid at the deadline; reversed"
        )

    async def _reverse(self, out_trade_no: str) -> None:
        last: Exception | None = None
        for _ in range(3):
            try:
                await self._call(
                    "reverse",
                    "POST",
                    _order_path(out_trade_no, "/reverse"),
                    payload={"appid": self.config.appid, "mchid": self.config.mchid},
                )
                return
            except PayRejected as exc:
                if exc.reason in ("order_not_found", "order_reversed"):
                    return
                if exc.vendor_code != "USERPAYING":
                    raise
                last = exc
            except PayUnavailable as exc:
                last = exc
            await self._sleep(self.config.codepay_poll_seconds)
        raise PayUnavailable(f"reverse {out_trade_no}: not confirmed ({last})")

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> Refund:
        if request.refund_fen <= 0 or request.total_fen <= 0:
            raise ValueError("amounts must be positive")
        _checked(request.out_trade_no, _OUT_TRADE_NO, "out_trade_no")
        _checked(request.out_refund_no, _OUT_REFUND_NO, "out_refund_no")
        payload: dict[str, Any] = {
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
            "amount": {"refund": request.refund_fen, "total": request.total_fen, "currency": "CNY"},
        }
        if request.reason:
            payload["reason"] = request.reason
        notify_url = request.notify_url or self.config.refund_notify_url
        if notify_url:
            payload["notify_url"] = notify_url
        response = await self._call(
            "refund", "POST", "/v3/refund/domestic/refunds", payload=payload
        )
        try:
            return refund_from_json(self._json("refund", response))
        except ValueError as exc:
            raise PayUnavailable(f"refund: malformed answer ({exc})") from exc

    async def query_refund(self, out_refund_no: str) -> Refund:
        response = await self._call(
            "refund_query",
            "GET",
            "/v3/refund/domestic/refunds/"
            + _checked(out_refund_no, _OUT_REFUND_NO, "out_refund_no"),
        )
        try:
            return refund_from_json(self._json("refund_query", response))
        except ValueError as exc:
            raise PayUnavailable(f"refund_query: malformed answer ({exc})") from exc

    # --- trade bill ---------------------------------------------------------------------

    async def download_trade_bill(self, bill_date: date, bill_type: BillType = BillType.ALL) -> str:
        response = await self._call(
            "tradebill",
            "GET",
            "/v3/bill/tradebill",
            query={
                "bill_date": bill_date.isoformat(),
                "bill_type": bill_type.value,
                "tar_type": "GZIP",
            },
        )
        info = self._json("tradebill", response)
        url, expected = info.get("download_url"), info.get("hash_value")
        if info.get("hash_type") != "SHA1" or not isinstance(expected, str):
            raise PayUnavailable("tradebill: no SHA1 hash in the answer")
        if not isinstance(url, str) or not self._same_origin(url):
            raise PayRejected("bad_download_url", detail="download_url is not WeChat Pay's")
        # Bill files are not signed (spec §4.3): integrity comes from the hash instead.
        download = await self._send("billdownload", "GET", url, verify=False)
        raw = download.content
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = _gunzip(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise PayUnavailable("billdownload: corrupt gzip") from exc
        if not signing.bill_hash_matches(raw, expected):
            raise PayUnavailable("billdownload: SHA-1 does not match", vendor_code="HASH")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayUnavailable("billdownload: not UTF-8") from exc

    async def stream_trade_bill(
        self, bill_date: date, dest: BinaryIO, bill_type: BillType = BillType.ALL
    ) -> BillDownload:
        """Stream the day's bill (asked for gzipped) into ``dest`` uncompressed, chunk by
        chunk, its SHA-1 checked over the uncompressed bytes; memory stays flat for any size.

        Raises ``PayRejected`` (``no_statement``: not published yet or no trades) or
        ``PayUnavailable`` (corrupt or truncated gzip, hash mismatch, too large, network)."""
        response = await self._call(
            "tradebill",
            "GET",
            "/v3/bill/tradebill",
            query={
                "bill_date": bill_date.isoformat(),
                "bill_type": bill_type.value,
                "tar_type": "GZIP",
            },
        )
        info = self._json("tradebill", response)
        url, expected = info.get("download_url"), info.get("hash_value")
        if info.get("hash_type") != "SHA1" or not isinstance(expected, str):
            raise PayUnavailable("tradebill: no SHA1 hash in the answer")
        if not isinstance(url, str) or not self._same_origin(url):
            raise PayRejected("bad_download_url", detail="download_url is not WeChat Pay's")
        headers, target = self._signed("GET", url, b"")
        started = time.perf_counter()
        outcome, status = "error", None
        digest = hashlib.sha1(usedforsecurity=False)
        size = 0
        try:
            async with self._http.stream("GET", target, headers=headers) as download:
                status = download.status_code
                if not 200 <= status < 300:
                    await download.aread()
                    outcome = "refused"
                    raise self._error("billdownload", download)
                inflater: Any = None
                first = True
                async for chunk in download.aiter_raw():
                    if first and chunk:
                        first = False
                        if chunk[:2] == b"\x1f\x8b":
                            inflater = zlib.decompressobj(wbits=31)
                    try:
                        plain = inflater.decompress(chunk) if inflater is not None else chunk
                    except zlib.error as exc:
                        raise PayUnavailable("billdownload: corrupt gzip") from exc
                    size += len(plain)
                    if size > MAX_STREAM_BILL_BYTES:
                        raise PayUnavailable("billdownload: bill too large")
                    digest.update(plain)
                    dest.write(plain)
                if inflater is not None:
                    try:
                        rest = inflater.flush()
                    except zlib.error as exc:
                        raise PayUnavailable("billdownload: corrupt gzip") from exc
                    if not inflater.eof:
                        raise PayUnavailable("billdownload: truncated gzip")
                    digest.update(rest)
                    dest.write(rest)
                    size += len(rest)
            outcome = "ok"
        except httpx.TimeoutException as exc:
            outcome = "timeout"
            raise PayUnavailable("billdownload: timed out") from exc
        except httpx.HTTPError as exc:
            outcome = "network"
            raise PayUnavailable(f"billdownload: {type(exc).__name__}") from exc
        finally:
            _log_call("billdownload", "GET", status, outcome, started)
        sha1 = digest.hexdigest()
        if not hmac.compare_digest(sha1, expected.strip().lower()):
            raise PayUnavailable("billdownload: SHA-1 does not match", vendor_code="HASH")
        return BillDownload(sha1=sha1, size_bytes=size)

    def _same_origin(self, url: str) -> bool:
        ours, theirs = urlsplit(self.config.api_base), urlsplit(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    # --- notifications ------------------------------------------------------------------

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PayEvent:
        try:
            await self._verify(headers, body)
        except signing.SignatureError as exc:
            raise NotificationRejected(exc.reason, status=401) from exc
        except PayUnavailable as exc:  # certificate refresh failed
            raise NotificationRejected("unknown_serial", str(exc), status=503) from exc
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise NotificationRejected("malformed", "body is not JSON") from exc
        if not isinstance(envelope, dict):
            raise NotificationRejected("malformed", "body is not an object")
        resource = envelope.get("resource")
        notify_id = envelope.get("id")
        event_type = envelope.get("event_type")
        if not (
            isinstance(notify_id, str)
            and 0 < len(notify_id) <= 128
            and isinstance(event_type, str)
            and isinstance(resource, dict)
        ):
            raise NotificationRejected("malformed", "id, event_type or resource missing")
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise NotificationRejected("malformed", "unsupported algorithm")
        try:
            plain = signing.aead_decrypt(
                self.config.apiv3_key,
                nonce=_str(resource.get("nonce"), "nonce"),
                associated_data=_str(
                    resource.get("associated_data", ""), "associated_data", required=False
                ),
                ciphertext=_str(resource.get("ciphertext"), "ciphertext"),
            )
            data = json.loads(plain)
        except signing.SignatureError as exc:
            raise NotificationRejected(exc.reason) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise NotificationRejected("malformed", "resource is not JSON") from exc
        if not isinstance(data, dict):
            raise NotificationRejected("malformed", "resource is not an object")
        if data.get("mchid") != self.config.mchid:
            raise NotificationRejected("not_ours", "mchid")
        if "appid" in data and data.get("appid") != self.config.appid:
            raise NotificationRejected("not_ours", "appid")
        created_at = _parse_time(envelope.get("create_time"))
        try:
            return _typed_event(
                notify_id, event_type, created_at, str(resource.get("original_type", "")), data
            )
        except (ValueError, KeyError) as exc:
            raise NotificationRejected("malformed", str(exc)) from exc


def _log_call(
    operation: str, method: str, status: int | None, outcome: str, started: float
) -> None:
    log.info(
        "wechatpay %s %s -> %s (%s)",
        operation,
        method,
        status,
        outcome,
        extra={
            "operation": f"wechatpay.{operation}",
            "outcome": outcome,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


def _gunzip(raw: bytes) -> bytes:
    out = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(MAX_BILL_BYTES + 1)
    if len(out) > MAX_BILL_BYTES:
        raise OSError("bill too large")
    return out


def _typed_event(
    notify_id: str,
    event_type: str,
    created_at: datetime | None,
    original_type: str,
    data: dict[str, Any],
) -> PayEvent:
    if event_type == "TRANSACTION.SUCCESS":
        if original_type not in ("", "transaction"):
            raise ValueError("original_type")
        payment = payment_from_json(data)
        if payment.state is not TradeState.SUCCESS or not payment.transaction_id:
            raise ValueError("trade_state is not SUCCESS")
        return PaymentSucceeded(
            notify_id=notify_id,
            event_type=event_type,
            created_at=created_at,
            out_trade_no=payment.out_trade_no,
            transaction_id=payment.transaction_id,
            trade_type=payment.trade_type or "",
            amount_fen=payment.amount_fen,
            payer_total_fen=(
                payment.payer_total_fen
                if payment.payer_total_fen is not None
                else payment.amount_fen
            ),
            currency=str((data.get("amount") or {}).get("currency", "CNY")),
            openid=payment.openid,
            success_at=payment.success_at,
            attach=payment.attach,
            bank_type=payment.bank_type,
        )
    kinds: dict[str, type[RefundSettled]] = {
        "REFUND.SUCCESS": RefundSucceeded,
        "REFUND.CLOSED": RefundClosed,
        "REFUND.ABNORMAL": RefundAbnormal,
    }
    if event_type in kinds:
        if original_type not in ("", "refund"):
            raise ValueError("original_type")
        refund = refund_from_json(data)
        return kinds[event_type](
            notify_id=notify_id,
            event_type=event_type,
            created_at=created_at,
            out_trade_no=refund.out_trade_no,
            transaction_id=refund.transaction_id,
            out_refund_no=refund.out_refund_no,
            refund_id=refund.refund_id,
            status=refund.status.value,
            refund_fen=refund.refund_fen,
            total_fen=refund.total_fen,
            payer_refund_fen=refund.payer_refund_fen,
            user_received_account=refund.user_received_account,
            success_at=refund.success_at,
        )
    return OtherPayEvent(
        notify_id=notify_id, event_type=event_type, created_at=created_at, resource=data
    )


def build_from_settings(
    settings: Settings, *, http: httpx.AsyncClient | None = None
) -> HttpWeChatPay | None:
    config = PayConfig.from_settings(settings)
    return None if config is None else HttpWeChatPay(config, http=http)


class LazyWeChatPay:
    """``WeChatPay`` that reads its keys and opens its HTTP client on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._real: HttpWeChatPay | None = None

    def get(self) -> HttpWeChatPay:
        if self._real is None:
            real = build_from_settings(self._settings)
            if real is None:
                raise PayConfigError("FRONTDESK_WECHATPAY_MCHID: WeChat Pay is not configured")
            self._real = real
        return self._real

    async def create_jsapi_order(self, order: JsapiOrder) -> str:
        return await self.get().create_jsapi_order(order)

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        return self.get().jsapi_pay_params(prepay_id)

    async def create_native_order(self, order: NativeOrder) -> str:
        return await self.get().create_native_order(order)

    async def pay_by_code(self, order: CodePayOrder) -> Payment:
        return await self.get().pay_by_code(order)

    async def query_order(self, out_trade_no: str) -> Payment:
        return await self.get().query_order(out_trade_no)

    async def close_order(self, out_trade_no: str) -> None:
        await self.get().close_order(out_trade_no)

    async def refund(self, request: RefundRequest) -> Refund:
        return await self.get().refund(request)

    async def query_refund(self, out_refund_no: str) -> Refund:
        return await self.get().query_refund(out_refund_no)

    async def download_trade_bill(self, bill_date: date, bill_type: BillType = BillType.ALL) -> str:
        return await self.get().download_trade_bill(bill_date, bill_type)

    async def stream_trade_bill(
        self, bill_date: date, dest: BinaryIO, bill_type: BillType = BillType.ALL
    ) -> BillDownload:
        return await self.get().stream_trade_bill(bill_date, dest, bill_type)

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PayEvent:
        return await self.get().parse_notification(headers, body)

    async def aclose(self) -> None:
        if self._real is not None:
            await self._real.aclose()
