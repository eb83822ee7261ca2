"""The WeChat Pay simulator's engine: merchant state, rules, notifications, faults.

In memory (one simulator process = one WeChat Pay), never in Frontdesk's database. The HTTP
surface lives in ``pay.py``; this module has the rules so they read in one place:

- orders: NOTPAY → SUCCESS (pay sheet / native scan) | CLOSED (close); SUCCESS → REFUND when a
  refund is accepted; payment code: SUCCESS | USERPAYING → SUCCESS/PAYERROR | REVOKED (reverse);
- refunds: PROCESSING → SUCCESS (after ``refund_seconds``) or ABNORMAL (fault), never more than
  paid, at most 50 per order, ≥ 60 s apart, within a year, ``out_refund_no`` idempotent;
- notifications: signed, resource encrypted with the APIv3 key, retried on WeChat's 15-step
  schedule (scaled by ``time_scale``) until our endpoint answers 2xx;
- payment-code scenarios chosen by the LAST digit of the 18-digit auth code (10-15 prefix):
  0-4 instant success; 5 USERPAYING then success; 6 USERPAYING then failure (user cancels);
  7 expired code (400 AUTHCODEEXPIRE); 8 insufficient funds (403 NOT_ENOUGH);
  9 USERPAYING until reversed or auto-revoked after ``autorevoke_seconds``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import secrets
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from frontdesk.sims.wechat_sim.pay_bill import BillLine, render_bill
from frontdesk.wechat.pay import signing

log = logging.getLogger("frontdesk.sims.wechat_pay")

CST = ZoneInfo("Asia/Shanghai")
# Spec §4.7: 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h.
RETRY_SCHEDULE_SECONDS = (
    15,
    15,
    30,
    180,
    600,
    1200,
    1800,
    1800,
    1800,
    3600,
    10800,
    10800,
    10800,
    21600,
    21600,
)
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-*]{6,32}$")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")
AUTH_CODE = re.compile(r"^1[0-5]\d{16}$")
MAX_REFUNDS_PER_ORDER = 50
# The payment-code scenario chosen by an auth code's last digit (the phone page shows codes).
AUTH_CODE_SCENARIOS = {
    "success": "0",
    "userpaying_success": "5",
    "userpaying_fail": "6",
    "expired": "7",
    "insufficient": "8",
    "never": "9",
}


def new_auth_code(scenario: str = "success") -> str:
    """A fresh 18-digit payment code (prefix 13) whose last digit selects ``scenario``."""
    return (
        "13"
        + "".join(secrets.choice(string.digits) for _ in range(15))
        + (AUTH_CODE_SCENARIOS[scenario])
    )


class SimError(Exception):
    """A v3 error answer: HTTP status, WeChat code, message, optional detail."""

    def __init__(
        self, status: int, code: str, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass
class PaySimConfig:
    mchid: str
    appids: frozenset[str]
    merchant_serial_no: str
    merchant_public_key: rsa.RSAPublicKey
    platform_key: rsa.RSAPrivateKey
    platform_public_key_id: str
    apiv3_key: str
    mode: str = "public_key"  # or "certificate"
    platform_cert_pem: bytes | None = None
    platform_cert_serial: str | None = None
    public_base: str = "http://127.0.0.1:8102"
    time_scale: float = 1.0  # multiplies the notify retry schedule
    window_seconds: int = 300
    userpaying_seconds: float = 10.0
    autorevoke_seconds: float = 45.0
    refund_seconds: float = 3.0
    notify_timeout_seconds: float = 5.0
    bill_url_seconds: float = 300.0
    # WeChat's clearing books a trade on the bill this long after it happened: the bill's
    # 交易时间 is that booking time, and the bill of a day holds what was booked that day, so
    # a payment at 23:59:59 lands on the next day's bill (the cross-day case). 0: at once.
    bill_lag_seconds: float = 0.0
    background: bool = False  # deliver notifications from a task (server mode)

    @property
    def response_serial(self) -> str:
        if self.mode == "certificate" and self.platform_cert_serial:
            return self.platform_cert_serial
        return self.platform_public_key_id


@dataclass
class SimOrder:
    out_trade_no: str
    appid: str
    mchid: str
    trade_type: str  # JSAPI / NATIVE / MICROPAY
    description: str
    total_fen: int
    notify_url: str | None
    created_at: datetime
    fingerprint: str
    attach: str = ""
    openid: str | None = None
    expires_at: datetime | None = None
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_at: datetime | None = None
    bank_type: str = "OTHERS"
    prepay_id: str | None = None
    code_url: str | None = None
    scenario: str = ""
    device_id: str = ""
    last_refund_at: datetime | None = None


@dataclass
class SimRefund:
    refund_id: str
    out_refund_no: str
    out_trade_no: str
    refund_fen: int
    total_fen: int
    reason: str
    notify_url: str | None
    created_at: datetime
    status: str = "PROCESSING"
    success_at: datetime | None = None
    settle_at: datetime | None = None


@dataclass
class SimNotify:
    notify_id: str
    url: str
    body: bytes
    event_type: str
    next_at: datetime
    attempts: int = 0
    done: bool = False
    dropped: bool = False
    gave_up: bool = False
    duplicate: bool = False
    answers: list[int | str] = field(default_factory=list)


@dataclass
class Faults:
    """One-shot faults, consumed in order. ``notify``: "drop" | "delay" | "duplicate"."""

    notify: deque[str] = field(default_factory=deque)
    notify_delay_seconds: float = 60.0
    api_500: int = 0
    signtest: int = 0
    refund_abnormal: int = 0
    # ``timeout``: the next N API calls whose path contains ``timeout_path`` ("" = any) are
    # carried out, then their answer is held ``timeout_seconds`` (real time), so the
    # client's deadline passes first: the merchant does not know what happened.
    timeout: int = 0
    timeout_seconds: float = 15.0
    timeout_path: str = ""
    # Not one-shot: the trade bill of these days is answered NO_STATEMENT_EXIST whatever
    # was traded (WeChat's answer for a day it has no bill of, e.g. trades we have and it
    # has not); ``statement_creating``: the next N bill requests answer STATEMENT_CREATING.
    no_statement_days: set[date] = field(default_factory=set)
    statement_creating: int = 0


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _rfc3339(at: datetime) -> str:
    return at.astimezone(CST).isoformat(timespec="seconds")


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _openid_for(seed: str) -> str:
    return "o" + hashlib.sha256(seed.encode()).hexdigest()[:27]


class PaySim:
    def __init__(
        self,
        config: PaySimConfig,
        *,
        now: Callable[[], datetime] | None = None,
        notify_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self._now = now or (lambda: datetime.now(UTC))
        self.notify_http = notify_http
        self.orders: dict[str, SimOrder] = {}
        self.by_transaction: dict[str, str] = {}
        self.by_prepay: dict[str, str] = {}
        self.by_code_url: dict[str, str] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.notifies: list[SimNotify] = []
        self.nonces: dict[str, int] = {}
        self.bill_files: dict[str, tuple[bytes, datetime]] = {}
        self.faults = Faults()
        self.answers_held: list[str] = []  # paths of calls answered late (``timeout`` faults)
        self.requests_seen = 0

    def now(self) -> datetime:
        return self._now().astimezone(UTC)

    def timestamp(self) -> int:
        return int(self.now().timestamp())

    # --- request authentication (spec §4.2) -------------------------------------------

    def authenticate(
        self, *, method: str, url: str, body: bytes, authorization: str | None
    ) -> None:
        if not authorization:
            raise SimError(401, "SIGN_ERROR", "缺少Authorization头")
        try:
            auth = signing.parse_authorization(authorization)
        except signing.SignatureError as exc:
            raise SimError(
                401,
                "SIGN_ERROR",
                "Authorization格式错误",
                {"issue": exc.reason, "location": "authorization"},
            ) from exc
        if auth.mchid != self.config.mchid:
            raise SimError(
                401,
                "SIGN_ERROR",
                "商户号与签名不匹配",
                {"field": "mchid", "location": "authorization"},
            )
        if auth.serial_no.upper() != self.config.merchant_serial_no.upper():
            raise SimError(
                401,
                "SIGN_ERROR",
                "商户证书序列号有误。",
                {"field": "serial_no", "location": "authorization"},
            )
        now = self.timestamp()
        if abs(now - auth.timestamp) > self.config.window_seconds:
            raise SimError(
                401,
                "SIGN_ERROR",
                "请求时间戳已过期",
                {"field": "timestamp", "location": "authorization"},
            )
        message = signing.request_message(method, url, auth.timestamp, auth.nonce_str, body)
        if not signing.rsa_verify(self.config.merchant_public_key, message, auth.signature):
            raise SimError(
                401,
                "SIGN_ERROR",
                "签名错误，请检查后再试",
                {
                    "detail": {"issue": "sign not match"},
                    "field": "signature",
                    "location": "authorization",
                    "sign_information": {
                        "method": method,
                        "sign_message_length": len(message),
                        "truncated_sign_message": message[:80].decode("utf-8", "replace"),
                        "url": url,
                    },
                },
            )
        # Only a verified request spends its nonce, so forgeries cannot burn ours.
        self._prune_nonces(now)
        if auth.nonce_str in self.nonces:
            raise SimError(
                401,
                "SIGN_ERROR",
                "请求重放：nonce_str已使用",
                {"field": "nonce_str", "location": "authorization"},
            )
        self.nonces[auth.nonce_str] = auth.timestamp + self.config.window_seconds
        self.requests_seen += 1

    def _prune_nonces(self, now: int) -> None:
        if len(self.nonces) > 1000:
            for nonce, until in list(self.nonces.items()):
                if until < now - self.config.window_seconds:
                    del self.nonces[nonce]

    def answer_delay(self, path: str) -> float:
        """Seconds to hold the answer to an API call on ``path`` (a ``timeout`` fault)."""
        if self.faults.timeout > 0 and self.faults.timeout_path in path:
            self.faults.timeout -= 1
            self.answers_held.append(path)
            return self.faults.timeout_seconds
        return 0.0

    def check_api_fault(self) -> None:
        if self.faults.api_500 > 0:
            self.faults.api_500 -= 1
            raise SimError(500, "SYSTEM_ERROR", "系统错误")

    def signed_headers(self, body: bytes) -> dict[str, str]:
        headers = signing.sign_response_headers(
            key=self.config.platform_key,
            serial=self.config.response_serial,
            body=body,
            timestamp=self.timestamp(),
        )
        if self.faults.signtest > 0:
            # WeChat Pay's deliberate probe traffic (spec §4.3): must be rejected.
            self.faults.signtest -= 1
            headers["Wechatpay-Signature"] = signing.SIGNTEST_PREFIX + _rand(
                string.ascii_letters + string.digits, 40
            )
        headers["Request-ID"] = _rand(string.hexdigits.upper()[:16], 32)
        return headers

    # --- validation helpers -----------------------------------------------------------

    @staticmethod
    def _param(field_name: str, issue: str) -> SimError:
        return SimError(
            400,
            "PARAM_ERROR",
            f"参数错误：{field_name}",
            {"field": field_name, "issue": issue, "location": "body"},
        )

    def _merchant(self, data: dict[str, Any], *, need_appid: bool = True) -> str:
        mchid = data.get("mchid")
        if not isinstance(mchid, str) or not mchid:
            raise self._param("mchid", "missing")
        if mchid != self.config.mchid:
            raise SimError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if not need_appid:
            return ""
        appid = data.get("appid")
        if not isinstance(appid, str) or not appid:
            raise self._param("appid", "missing")
        if appid not in self.config.appids:
            raise SimError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        return appid

    def _amount(self, data: dict[str, Any]) -> int:
        amount = data.get("amount")
        if not isinstance(amount, dict):
            raise self._param("amount", "missing")
        total = amount.get("total")
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise self._param("amount.total", "must be a positive integer (fen)")
        if amount.get("currency", "CNY") != "CNY":
            raise self._param("amount.currency", "only CNY")
        return total

    def _common_order(self, data: dict[str, Any]) -> tuple[str, str, str, int]:
        appid = self._merchant(data)
        description = data.get("description")
        if not isinstance(description, str) or not 0 < len(description) <= 127:
            raise self._param("description", "1-127 characters")
        out_trade_no = data.get("out_trade_no")
        if not isinstance(out_trade_no, str) or not OUT_TRADE_NO.match(out_trade_no):
            raise self._param("out_trade_no", "6-32 characters of [0-9A-Za-z_-*]")
        attach = data.get("attach", "")
        if not isinstance(attach, str) or len(attach) > 128:
            raise self._param("attach", "at most 128 characters")
        return appid, description, out_trade_no, self._amount(data)

    def _notify_url(self, data: dict[str, Any], *, required: bool = True) -> str | None:
        url = data.get("notify_url")
        if url is None and not required:
            return None
        if (
            not isinstance(url, str)
            or not url.startswith(("http://", "https://"))
            or "?" in url
            or len(url) > 255
        ):
            raise self._param("notify_url", "an http(s) URL without query parameters")
        return url

    def _new_transaction_id(self) -> str:
        return "42000" + self.now().astimezone(CST).strftime("%Y%m%d") + _rand(string.digits, 15)

    # --- orders ---------------------------------------------------------------------------

    def create_order(self, trade_type: str, data: dict[str, Any]) -> SimOrder:
        appid, description, out_trade_no, total = self._common_order(data)
        notify_url = self._notify_url(data)
        openid = None
        if trade_type == "JSAPI":
            payer = data.get("payer")
            openid = payer.get("openid") if isinstance(payer, dict) else None
            if not isinstance(openid, str) or not openid:
                raise self._param("payer.openid", "missing")
        expires_at = None
        if "time_expire" in data:
            try:
                expires_at = datetime.fromisoformat(str(data["time_expire"]))
            except ValueError as exc:
                raise self._param("time_expire", "RFC 3339") from exc
            if expires_at.tzinfo is None:
                raise self._param("time_expire", "needs an offset")
        fingerprint = _fingerprint(data)
        existing = self.orders.get(out_trade_no)
        if existing is not None:
            self.advance(existing)
            if existing.state in ("SUCCESS", "REFUND"):
                raise SimError(400, "ORDERPAID", "该订单已支付")
            if existing.state == "CLOSED":
                raise SimError(400, "ORDER_CLOSED", "订单已关闭")
            if existing.fingerprint != fingerprint or existing.trade_type != trade_type:
                raise SimError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
            return existing  # same parameters: the same prepay_id / code_url
        order = SimOrder(
            out_trade_no=out_trade_no,
            appid=appid,
            mchid=self.config.mchid,
            trade_type=trade_type,
            description=description,
            total_fen=total,
            notify_url=notify_url,
            created_at=self.now(),
            fingerprint=fingerprint,
            attach=str(data.get("attach", "")),
            openid=openid,
            expires_at=expires_at,
        )
        if trade_type == "JSAPI":
            order.prepay_id = (
                "wx"
                + self.now().astimezone(CST).strftime("%d%H%M%S")
                + _rand("0123456789abcdef", 24)
                + "0000"
            )
            self.by_prepay[order.prepay_id] = out_trade_no
        else:
            order.code_url = "weixin://wxpay/bizpayurl?pr=" + _rand(
                string.ascii_letters + string.digits, 9
            )
            self.by_code_url[order.code_url] = out_trade_no
        self.orders[out_trade_no] = order
        return order

    def get_order(self, out_trade_no: str) -> SimOrder:
        order = self.orders.get(out_trade_no)
        if order is None:
            raise SimError(404, "ORDER_NOT_EXIST", "订单不存在")
        self.advance(order)
        return order

    def get_order_by_transaction(self, transaction_id: str) -> SimOrder:
        out_trade_no = self.by_transaction.get(transaction_id)
        if out_trade_no is None:
            raise SimError(404, "ORDER_NOT_EXIST", "订单不存在")
        return self.get_order(out_trade_no)

    def close_order(self, out_trade_no: str, data: dict[str, Any]) -> None:
        self._merchant(data, need_appid=False)
        order = self.get_order(out_trade_no)
        if order.state in ("SUCCESS", "REFUND"):
            raise SimError(400, "ORDERPAID", "订单已支付，不能关闭")
        if order.state in ("USERPAYING", "REVOKED", "PAYERROR"):
            raise SimError(400, "TRADE_ERROR", "付款码订单请使用撤销")
        order.state = "CLOSED"  # closing a closed order is a no-op success

    def _mark_paid(self, order: SimOrder, *, openid: str) -> None:
        order.state = "SUCCESS"
        order.openid = openid
        order.success_at = self.now()
        order.transaction_id = self._new_transaction_id()
        self.by_transaction[order.transaction_id] = order.out_trade_no

    def pay(self, order: SimOrder, *, openid: str) -> None:
        """The patient confirmed in the pay sheet (JSAPI) or after scanning (Native)."""
        self.advance(order)
        if order.state != "NOTPAY":
            raise SimError(
                400,
                "ORDERPAID" if order.state in ("SUCCESS", "REFUND") else "ORDER_CLOSED",
                f"订单状态为{order.state}",
            )
        if order.expires_at is not None and self.now() > order.expires_at:
            raise SimError(400, "ORDER_CLOSED", "订单已过期")
        if order.trade_type == "JSAPI" and order.openid != openid:
            raise SimError(403, "BUYER_MISMATCH", "支付者与下单用户不一致")
        self._mark_paid(order, openid=openid)
        self.queue_notify(
            order.notify_url,
            "TRANSACTION.SUCCESS",
            "支付成功",
            "transaction",
            self.transaction_json(order),
        )

    def confirm_jsapi(self, params: dict[str, str]) -> SimOrder:
        """Check a ``getBrandWCPayRequest`` parameter set the way the WeChat client does."""
        package = params.get("package", "")
        if not package.startswith("prepay_id="):
            raise SimError(400, "PARAM_ERROR", "package格式错误")
        out_trade_no = self.by_prepay.get(package.removeprefix("prepay_id="))
        if out_trade_no is None:
            raise SimError(400, "INVALID_REQUEST", "prepay_id不存在")
        order = self.get_order(out_trade_no)
        if order.created_at + timedelta(hours=2) < self.now():
            raise SimError(400, "INVALID_REQUEST", "prepay_id已过期")
        if params.get("signType") != "RSA":
            raise SimError(400, "PARAM_ERROR", "signType必须为RSA")
        if params.get("appId") != order.appid:
            raise SimError(400, "APPID_MCHID_NOT_MATCH", "appId与下单appid不一致")
        if not signing.verify_pay_sign(
            self.config.merchant_public_key,
            app_id=params.get("appId", ""),
            time_stamp=params.get("timeStamp", ""),
            nonce_str=params.get("nonceStr", ""),
            package=package,
            pay_sign=params.get("paySign", ""),
        ):
            raise SimError(400, "SIGN_ERROR", "支付验证签名失败")
        return order

    def order_for_code_url(self, code_url: str) -> SimOrder:
        out_trade_no = self.by_code_url.get(code_url)
        if out_trade_no is None:
            raise SimError(404, "ORDER_NOT_EXIST", "二维码无效")
        return self.get_order(out_trade_no)

    # --- payment code ---------------------------------------------------------------------

    def codepay(self, data: dict[str, Any]) -> SimOrder:
        appid, description, out_trade_no, total = self._common_order(data)
        payer = data.get("payer")
        auth_code = payer.get("auth_code") if isinstance(payer, dict) else None
        if not isinstance(auth_code, str) or not AUTH_CODE.match(auth_code):
            raise self._param("payer.auth_code", "18 digits starting with 10-15")
        scene = data.get("scene_info")
        store = scene.get("store_info") if isinstance(scene, dict) else None
        if not isinstance(store, dict) or not store.get("out_id"):
            raise self._param("scene_info.store_info.out_id", "missing")
        existing = self.orders.get(out_trade_no)
        if existing is not None:
            self.advance(existing)
            if existing.state in ("SUCCESS", "REFUND"):
                raise SimError(400, "ORDERPAID", "该订单已支付")
            raise SimError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
        order = SimOrder(
            out_trade_no=out_trade_no,
            appid=appid,
            mchid=self.config.mchid,
            trade_type="MICROPAY",
            description=description,
            total_fen=total,
            notify_url=None,
            created_at=self.now(),
            fingerprint=_fingerprint(data),
            attach=str(data.get("attach", "")),
            openid=_openid_for(auth_code[:12]),
            device_id=str(scene.get("device_id", "")) if isinstance(scene, dict) else "",
        )
        self.orders[out_trade_no] = order
        digit = int(auth_code[-1])
        if digit <= 4:
            self._mark_paid(order, openid=order.openid or "")
        elif digit in (5, 6, 9):
            order.state = "USERPAYING"
            order.scenario = {5: "pay", 6: "fail", 9: "wait"}[digit]
        elif digit == 7:
            order.state = "PAYERROR"
            raise SimError(400, "AUTHCODEEXPIRE", "101 付款码已过期，请退出重试")
        else:
            order.state = "PAYERROR"
            raise SimError(403, "NOT_ENOUGH", "用户余额不足")
        return order

    def reverse(self, out_trade_no: str, data: dict[str, Any]) -> None:
        self._merchant(data)
        order = self.get_order(out_trade_no)
        if order.trade_type != "MICROPAY":
            raise SimError(400, "INVALID_REQUEST", "只有付款码订单可以撤销")
        if order.state == "REFUND":
            raise SimError(400, "INVALID_REQUEST", "订单已退款，不能撤销")
        # A paid order is refunded to the patient by the reverse; unpaid ones just end.
        order.state = "REVOKED"

    def advance(self, order: SimOrder) -> None:
        """Let time act on an order: a patient entering the password, auto-revoke."""
        if order.state != "USERPAYING":
            return
        elapsed = (self.now() - order.created_at).total_seconds()
        if order.scenario in ("pay", "fail") and elapsed >= self.config.userpaying_seconds:
            if order.scenario == "pay":
                self._mark_paid(order, openid=order.openid or "")
            else:
                order.state = "PAYERROR"
        elif elapsed >= self.config.autorevoke_seconds:
            order.state = "REVOKED"

    _STATE_DESC: ClassVar[dict[str, str]] = {
        "SUCCESS": "支付成功",
        "REFUND": "转入退款",
        "NOTPAY": "未支付",
        "CLOSED": "已关闭",
        "REVOKED": "已撤销",
        "USERPAYING": "用户支付中",
        "PAYERROR": "支付失败",
    }

    def transaction_json(self, order: SimOrder) -> dict[str, Any]:
        paid = order.transaction_id is not None
        out: dict[str, Any] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
            "trade_type": order.trade_type,
            "trade_state": order.state,
            "trade_state_desc": self._STATE_DESC.get(order.state, order.state),
            "attach": order.attach,
            "amount": {"total": order.total_fen, "currency": "CNY", "payer_currency": "CNY"},
        }
        if paid:
            out["transaction_id"] = order.transaction_id
            out["bank_type"] = order.bank_type
            out["success_time"] = _rfc3339(order.success_at or self.now())
            out["payer"] = {"openid": order.openid}
            out["amount"]["payer_total"] = order.total_fen
        return out

    # --- refunds --------------------------------------------------------------------------

    def create_refund(self, data: dict[str, Any]) -> SimRefund:
        out_refund_no = data.get("out_refund_no")
        if not isinstance(out_refund_no, str) or not OUT_REFUND_NO.match(out_refund_no):
            raise self._param("out_refund_no", "1-64 characters of [0-9A-Za-z_-|*@]")
        amount = data.get("amount")
        if not isinstance(amount, dict):
            raise self._param("amount", "missing")
        refund_fen, total_fen = amount.get("refund"), amount.get("total")
        for name, value in (("amount.refund", refund_fen), ("amount.total", total_fen)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise self._param(name, "must be a positive integer (fen)")
        assert isinstance(refund_fen, int)
        assert isinstance(total_fen, int)
        if amount.get("currency", "CNY") != "CNY":
            raise self._param("amount.currency", "only CNY")
        reason = data.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 80:
            raise self._param("reason", "at most 80 characters")
        notify_url = self._notify_url(data, required=False)
        if isinstance(data.get("out_trade_no"), str):
            order = self.orders.get(data["out_trade_no"])
        elif isinstance(data.get("transaction_id"), str):
            key = self.by_transaction.get(data["transaction_id"], "")
            order = self.orders.get(key)
        else:
            raise self._param("out_trade_no", "out_trade_no or transaction_id required")
        if order is None:
            raise SimError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        self.advance(order)
        existing = self.refunds.get(out_refund_no)
        if existing is not None:
            # Idempotent: the same out_refund_no refunds once; a retry sees the same refund.
            if existing.out_trade_no != order.out_trade_no or existing.refund_fen != refund_fen:
                raise SimError(400, "INVALID_REQUEST", "退款单号已存在，但参数不一致")
            return existing
        if order.state not in ("SUCCESS", "REFUND"):
            raise SimError(400, "INVALID_REQUEST", "订单未支付，不能退款")
        if total_fen != order.total_fen:
            raise self._param("amount.total", "must equal the order total")
        now = self.now()
        if order.success_at is not None and now > order.success_at + timedelta(days=365):
            raise SimError(400, "INVALID_REQUEST", "订单已超过退款期限")
        mine = [r for r in self.refunds.values() if r.out_trade_no == order.out_trade_no]
        if len(mine) >= MAX_REFUNDS_PER_ORDER:
            raise SimError(403, "RULE_LIMIT", "退款次数超过限制")
        refunded = sum(r.refund_fen for r in mine if r.status != "CLOSED")
        if refunded + refund_fen > order.total_fen:
            raise SimError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        if order.last_refund_at is not None and now - order.last_refund_at < timedelta(minutes=1):
            raise SimError(429, "FREQUENCY_LIMITED", "频率限制，同一订单退款间隔需大于1分钟")
        refund = SimRefund(
            refund_id="50" + _rand(string.digits, 27),
            out_refund_no=out_refund_no,
            out_trade_no=order.out_trade_no,
            refund_fen=refund_fen,
            total_fen=total_fen,
            reason=reason,
            notify_url=notify_url or order.notify_url,
            created_at=now,
            settle_at=now + timedelta(seconds=self.config.refund_seconds),
        )
        self.refunds[out_refund_no] = refund
        order.state = "REFUND"
        order.last_refund_at = now
        return refund

    def get_refund(self, out_refund_no: str) -> SimRefund:
        refund = self.refunds.get(out_refund_no)
        if refund is None:
            raise SimError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return refund

    def settle_refunds(self) -> None:
        now = self.now()
        for refund in self.refunds.values():
            if refund.status != "PROCESSING" or refund.settle_at is None or refund.settle_at > now:
                continue
            if self.faults.refund_abnormal > 0:
                self.faults.refund_abnormal -= 1
                refund.status = "ABNORMAL"
                event, summary = "REFUND.ABNORMAL", "退款异常"
            else:
                refund.status = "SUCCESS"
                refund.success_at = now
                event, summary = "REFUND.SUCCESS", "退款成功"
            self.queue_notify(
                refund.notify_url, event, summary, "refund", self.refund_notify_json(refund)
            )

    def refund_json(self, refund: SimRefund) -> dict[str, Any]:
        order = self.orders[refund.out_trade_no]
        out: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": order.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": _rfc3339(refund.created_at),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.refund_fen,
                "from": [],
                "payer_total": refund.total_fen,
                "payer_refund": refund.refund_fen,
                "settlement_refund": refund.refund_fen,
                "settlement_total": refund.total_fen,
                "discount_refund": 0,
                "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        }
        if refund.success_at is not None:
            out["success_time"] = _rfc3339(refund.success_at)
        return out

    def refund_notify_json(self, refund: SimRefund) -> dict[str, Any]:
        order = self.orders[refund.out_trade_no]
        out: dict[str, Any] = {
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total_fen,
                "refund": refund.refund_fen,
                "payer_total": refund.total_fen,
                "payer_refund": refund.refund_fen,
            },
        }
        if refund.success_at is not None:
            out["success_time"] = _rfc3339(refund.success_at)
        return out

    # --- notifications (spec §4.7) --------------------------------------------------------

    def queue_notify(
        self,
        url: str | None,
        event_type: str,
        summary: str,
        original_type: str,
        resource: dict[str, Any],
    ) -> SimNotify | None:
        if not url:
            return None
        nonce = _rand(string.ascii_letters + string.digits, 12)
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
        notify_id = "EV-" + _rand(string.digits, 20)
        envelope = {
            "id": notify_id,
            "create_time": _rfc3339(self.now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": signing.aead_encrypt(
                    self.config.apiv3_key,
                    nonce=nonce,
                    associated_data=original_type,
                    plaintext=plaintext,
                ),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        notify = SimNotify(
            notify_id=notify_id, url=url, body=body, event_type=event_type, next_at=self.now()
        )
        fault = self.faults.notify.popleft() if self.faults.notify else None
        if fault == "drop":
            notify.dropped = True
        elif fault == "delay":
            notify.next_at = self.now() + timedelta(seconds=self.faults.notify_delay_seconds)
        elif fault == "duplicate":
            notify.duplicate = True
        self.notifies.append(notify)
        return notify

    def notify_request(self, notify: SimNotify) -> tuple[dict[str, str], bytes]:
        """Headers and body of one delivery attempt (signed afresh each time)."""
        headers = self.signed_headers(notify.body)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = "Mozilla/4.0"
        return headers, notify.body

    async def _post(self, notify: SimNotify) -> int | str:
        if self.notify_http is None:
            self.notify_http = httpx.AsyncClient()
        headers, body = self.notify_request(notify)
        try:
            response = await self.notify_http.post(
                notify.url,
                content=body,
                headers=headers,
                timeout=self.config.notify_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return response.status_code

    async def deliver_due(self) -> int:
        """Send every notification that is due; return how many attempts were made."""
        self.settle_refunds()
        attempts = 0
        for notify in list(self.notifies):
            if notify.done or notify.dropped or notify.gave_up or notify.next_at > self.now():
                continue
            answer = await self._post(notify)
            attempts += 1
            notify.answers.append(answer)
            if isinstance(answer, int) and 200 <= answer < 300:
                notify.done = True
                if notify.duplicate:
                    notify.answers.append(await self._post(notify))
                    attempts += 1
                continue
            notify.attempts += 1
            if notify.attempts > len(RETRY_SCHEDULE_SECONDS):
                notify.gave_up = True
                continue
            delay = RETRY_SCHEDULE_SECONDS[notify.attempts - 1] * self.config.time_scale
            notify.next_at = self.now() + timedelta(seconds=delay)
        return attempts

    # --- certificates and bills -----------------------------------------------------------

    def certificates_json(self) -> dict[str, Any]:
        if self.config.mode != "certificate" or self.config.platform_cert_pem is None:
            raise SimError(
                404,
                "RESOURCE_NOT_EXISTS",
                "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。",
            )
        nonce = _rand(string.ascii_letters + string.digits, 12)
        now = self.now()
        return {
            "data": [
                {
                    "serial_no": self.config.platform_cert_serial,
                    "effective_time": _rfc3339(now - timedelta(days=1)),
                    "expire_time": _rfc3339(now + timedelta(days=3650)),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": signing.aead_encrypt(
                            self.config.apiv3_key,
                            nonce=nonce,
                            associated_data="certificate",
                            plaintext=self.config.platform_cert_pem,
                        ),
                    },
                }
            ]
        }

    def bill_lines(self, day: date) -> list[BillLine]:
        start = datetime.combine(day, time.min, tzinfo=CST)
        end = start + timedelta(days=1)
        lag = timedelta(seconds=self.config.bill_lag_seconds)
        lines: list[BillLine] = []
        for order in self.orders.values():
            if (
                order.success_at is None
                or not start <= order.success_at + lag < end
                or order.transaction_id is None
            ):
                continue
            lines.append(
                BillLine(
                    at=order.success_at + lag,
                    appid=order.appid,
                    mchid=order.mchid,
                    transaction_id=order.transaction_id,
                    out_trade_no=order.out_trade_no,
                    openid=order.openid or "",
                    trade_type=order.trade_type,
                    trade_state="SUCCESS",
                    bank_type=order.bank_type,
                    amount_fen=order.total_fen,
                    description=order.description,
                    attach=order.attach,
                    device_info=order.device_id,
                )
            )
        for refund in self.refunds.values():
            if not start <= refund.created_at + lag < end:
                continue
            order = self.orders[refund.out_trade_no]
            lines.append(
                BillLine(
                    at=refund.created_at + lag,
                    appid=order.appid,
                    mchid=order.mchid,
                    transaction_id=order.transaction_id or "",
                    out_trade_no=order.out_trade_no,
                    openid=order.openid or "",
                    trade_type=order.trade_type,
                    trade_state="REFUND",
                    bank_type=order.bank_type,
                    amount_fen=order.total_fen,
                    description=order.description,
                    attach=order.attach,
                    device_info=order.device_id,
                    refund_id=refund.refund_id,
                    out_refund_no=refund.out_refund_no,
                    refund_fen=refund.refund_fen,
                    refund_type="ORIGINAL",
                    refund_status=refund.status,
                    refund_success_at=refund.success_at,
                )
            )
        return lines

    def apply_trade_bill(
        self, *, bill_date: str, bill_type: str, tar_type: str | None
    ) -> dict[str, str]:
        try:
            day = date.fromisoformat(bill_date)
        except ValueError as exc:
            raise SimError(400, "PARAM_ERROR", "bill_date格式错误，应为yyyy-MM-dd") from exc
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise SimError(400, "PARAM_ERROR", "bill_type取值错误")
        if tar_type not in (None, "", "GZIP"):
            raise SimError(400, "PARAM_ERROR", "tar_type取值错误")
        ready_at = datetime.combine(day + timedelta(days=1), time(9, 0), tzinfo=CST)
        if self.now() < ready_at:
            raise SimError(400, "NO_STATEMENT_EXIST", "账单尚未生成，请次日10点后再下载")
        if self.faults.statement_creating > 0:
            self.faults.statement_creating -= 1
            raise SimError(400, "STATEMENT_CREATING", "账单生成中，请稍后再试")
        lines = self.bill_lines(day)
        if not lines or day in self.faults.no_statement_days:
            raise SimError(400, "NO_STATEMENT_EXIST", "当日无交易，账单不存在")
        raw = render_bill(lines, bill_type=bill_type, tz=CST)
        stored = gzip.compress(raw, mtime=0) if tar_type == "GZIP" else raw
        token = _rand(string.ascii_letters + string.digits, 40)
        self.bill_files[token] = (
            stored,
            self.now() + timedelta(seconds=self.config.bill_url_seconds),
        )
        return {
            "hash_type": "SHA1",
            "hash_value": signing.bill_sha1(raw),
            "download_url": f"{self.config.public_base}/v3/billdownload/file?token={token}",
        }

    def bill_file(self, token: str) -> bytes:
        entry = self.bill_files.get(token)
        if entry is None or entry[1] < self.now():
            raise SimError(400, "INVALID_REQUEST", "下载链接无效或已过期")
        return entry[0]
