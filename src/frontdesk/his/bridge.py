"""The real HIS adapter: ``HisGateway`` over the HIS bridge protocol (docs/his-bridge.md).

- Every request is signed (``frontdesk.his.signing``) with a fresh nonce; a retry is signed
  again (a new nonce, a new timestamp) but carries the same ``Idempotency-Key``.
- Explicit timeouts on every call (connect/read/write/pool in httpx, plus an overall
  deadline per attempt so a stalled counterpart cannot hold a page).
- Retries only where safe: reads, and writes (whose idempotency key makes a repeat return
  the first result). Only failures marked retryable are retried, with a short backoff.
- Every call is logged with operation, duration and outcome; card numbers, names and other
  personal data never reach the log (only the operation and the path template).
- Anything that is not the protocol's JSON (bad JSON, wrong types, missing fields, naive
  times) is ``HisUnavailable``: a broken HIS must not crash the page that asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError

from frontdesk.core.clock import now as clock_now
from frontdesk.core.masking import mask_text
from frontdesk.his import protocol as p
from frontdesk.his import signing
from frontdesk.his.port import (
    REPORT_BATCH_MAX,
    Appointment,
    CardVerification,
    Department,
    Doctor,
    EventPage,
    ExamReport,
    HisRejected,
    HisUnavailable,
    LabReport,
    Order,
    OrderExecution,
    PreSettlement,
    Refund,
    RefundableItem,
    ReportKind,
    ReportSummary,
    Schedule,
    Settlement,
    SettlementRecord,
    SlotPool,
)

log = logging.getLogger("frontdesk.his.bridge")

_OPS = {op.name: op for op in p.OPERATIONS}


class HttpHisGateway:
    """``HisGateway`` over HTTP. Give it an ``httpx.AsyncClient`` (tests pass one on an
    ``ASGITransport``) or let it make one from ``base_url``."""

    def __init__(
        self,
        *,
        base_url: str,
        key_id: str,
        secret: str,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 0.2,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self.timeout_seconds = timeout_seconds
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 3.0)),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------------ transport

    async def _call(
        self,
        operation: str,
        *,
        path_params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        op = _OPS[operation]
        path = op.path.format(**{k: _path_segment(v) for k, v in (path_params or {}).items()})
        query_string = urlencode(sorted((query or {}).items()))
        payload = (
            b""
            if body is None
            else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        )
        adapter = p.RESPONSE_ADAPTERS[operation]
        last: HisUnavailable | None = None
        for attempt in range(1, self.attempts + 1):
            started = time.perf_counter()
            outcome = "error"  # overwritten below; stays if something unexpected escapes
            try:
                response = await self._send(op.method, path, query_string, payload, idempotency_key)
                result = self._parse(operation, response, adapter)
                outcome = "ok"
                return result
            except HisRejected as exc:
                outcome = f"rejected:{exc.code}"
                raise
            except HisUnavailable as exc:
                outcome = f"unavailable:{exc.code}"
                last = exc
            finally:
                log.info(
                    "his %s attempt %d %s in %.1f ms",
                    operation,
                    attempt,
                    outcome,
                    (time.perf_counter() - started) * 1000,
                    extra={
                        "operation": f"his.{operation}",
                        "outcome": outcome,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_seconds * attempt)
        assert last is not None
        raise last

    async def _send(
        self, method: str, path: str, query_string: str, payload: bytes, idempotency_key: str | None
    ) -> httpx.Response:
        headers = signing.signed_headers(
            key_id=self.key_id,
            secret=self._secret,
            method=method,
            path=path,
            query=query_string,
            body=payload,
            unix_time=int(clock_now().timestamp()),
        ).as_dict()
        headers["Accept"] = "application/json"
        if payload:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers[signing.HEADER_IDEMPOTENCY_KEY] = idempotency_key
        url = path + (f"?{query_string}" if query_string else "")
        try:
            # httpx enforces its own timeouts on real sockets; this deadline also covers
            # transports that do not (in-process ASGI) and slow-drip responses.
            async with asyncio.timeout(self.timeout_seconds):
                return await self._client.request(method, url, content=payload, headers=headers)
        except TimeoutError as exc:
            raise HisUnavailable("timeout", "the HIS did not answer in time") from exc
        except httpx.TimeoutException as exc:
            raise HisUnavailable("timeout", type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise HisUnavailable("connection_failed", type(exc).__name__) from exc

    def _parse(self, operation: str, response: httpx.Response, adapter: Any) -> Any:
        if response.status_code >= 400:
            try:
                error = p.RESPONSE_ADAPTERS["error"].validate_json(response.content)
            except ValidationError:
                raise HisUnavailable(
                    "malformed_response",
                    f"HTTP {response.status_code} without the error envelope",
                    operation=operation,
                ) from None
            message = mask_text(error.message)[:200]
            if error.retryable or response.status_code >= 500:
                raise HisUnavailable(error.code, message, operation=operation)
            raise HisRejected(error.code, message, operation=operation)
        if response.status_code != 200:
            raise HisUnavailable(
                "malformed_response", f"HTTP {response.status_code}", operation=operation
            )
        try:
            value = adapter.validate_json(response.content, strict=True)
        except ValidationError as exc:
            raise HisUnavailable(
                "malformed_response",
                f"{exc.error_count()} problem(s) in the response",
                operation=operation,
            ) from None
        if _has_naive_datetime(value):
            raise HisUnavailable(
                "malformed_response", "times must carry a UTC offset", operation=operation
            )
        return value

    # ------------------------------------------------------------------ catalog

    async def departments(self) -> list[Department]:
        return list((await self._call("departments")).items)

    async def doctors(self, *, department_code: str | None = None) -> list[Doctor]:
        query = {"department_code": department_code} if department_code else None
        return list((await self._call("doctors", query=query)).items)

    async def schedules(
        self, *, start: date, end: date, department_code: str | None = None
    ) -> list[Schedule]:
        query = {"start": start.isoformat(), "end": end.isoformat()}
        if department_code:
            query["department_code"] = department_code
        return list((await self._call("schedules", query=query)).items)

    async def slot_pool(self, schedule_id: str) -> SlotPool:
        result: SlotPool = await self._call("slot_pool", path_params={"schedule_id": schedule_id})
        return result

    # ------------------------------------------------------------------ cards

    async def verify_card(
        self, *, card_no: str, holder_name: str, id_or_phone_last4: str
    ) -> CardVerification:
        result: CardVerification = await self._call(
            "verify_card",
            body={
                "card_no": card_no,
                "holder_name": holder_name,
                "id_or_phone_last4": id_or_phone_last4,
            },
        )
        return result

    # ------------------------------------------------------------------ appointments

    async def register_appointment(
        self, *, schedule_id: str, sequence_no: int, card_no: str, booking_ref: str
    ) -> Appointment:
        result: Appointment = await self._call(
            "register_appointment",
            body={
                "schedule_id": schedule_id,
                "sequence_no": sequence_no,
                "card_no": card_no,
                "booking_ref": booking_ref,
            },
            idempotency_key=f"register:{booking_ref}",
        )
        return result

    async def cancel_appointment(self, *, appointment_id: str, reason: str) -> Appointment:
        result: Appointment = await self._call(
            "cancel_appointment",
            path_params={"appointment_id": appointment_id},
            body={"reason": reason},
            idempotency_key=f"cancel:{appointment_id}",
        )
        return result

    async def appointment(self, appointment_id: str) -> Appointment:
        result: Appointment = await self._call(
            "appointment", path_params={"appointment_id": appointment_id}
        )
        return result

    async def suspend_schedule(
        self, *, schedule_id: str, reason: str, request_ref: str
    ) -> Schedule:
        result: Schedule = await self._call(
            "suspend_schedule",
            path_params={"schedule_id": schedule_id},
            body={"reason": reason, "request_ref": request_ref},
            idempotency_key=f"suspend:{request_ref}",
        )
        return result

    # ------------------------------------------------------------------ orders

    async def unpaid_orders(self, *, card_no: str) -> list[Order]:
        return list(
            (
                await self._call("unpaid_orders", query={"card_no": card_no, "status": "unpaid"})
            ).items
        )

    async def pre_settle(self, *, card_no: str, order_ids: list[str]) -> PreSettlement:
        result: PreSettlement = await self._call(
            "pre_settle", body={"card_no": card_no, "order_ids": list(order_ids)}
        )
        return result

    async def settle(
        self, *, card_no: str, order_ids: list[str], payment_ref: str, self_pay_fen: int
    ) -> Settlement:
        result: Settlement = await self._call(
            "settle",
            body={
                "card_no": card_no,
                "order_ids": list(order_ids),
                "payment_ref": payment_ref,
                "self_pay_fen": self_pay_fen,
            },
            idempotency_key=f"settle:{payment_ref}",
        )
        return result

    async def settlement(self, payment_ref: str) -> Settlement | None:
        try:
            result: Settlement = await self._call(
                "settlement", path_params={"payment_ref": payment_ref}
            )
        except HisRejected as exc:
            if exc.code == "not_found":
                return None
            raise
        return result

    async def refundable_items(self, *, card_no: str) -> list[RefundableItem]:
        return list((await self._call("refundable_items", query={"card_no": card_no})).items)

    async def refund(self, *, card_no: str, item_ids: list[str], refund_ref: str) -> Refund:
        result: Refund = await self._call(
            "refund",
            body={"card_no": card_no, "item_ids": list(item_ids), "refund_ref": refund_ref},
            idempotency_key=f"refund:{refund_ref}",
        )
        return result

    async def execution_status(self, order_id: str) -> OrderExecution:
        result: OrderExecution = await self._call(
            "execution_status", path_params={"order_id": order_id}
        )
        return result

    # ------------------------------------------------------------------ reports

    async def reports(self, *, card_no: str, since: date) -> list[ReportSummary]:
        return list(
            (
                await self._call("reports", query={"card_no": card_no, "since": since.isoformat()})
            ).items
        )

    async def report(self, report_id: str) -> LabReport | ExamReport:
        envelope: p.ReportEnvelope = await self._call(
            "report", path_params={"report_id": report_id}
        )
        if envelope.kind is ReportKind.lab and envelope.lab is not None:
            return envelope.lab
        if envelope.kind is ReportKind.exam and envelope.exam is not None:
            return envelope.exam
        raise HisUnavailable(
            "malformed_response", "report body does not match its kind", operation="report"
        )

    async def report_bodies(self, report_ids: Sequence[str]) -> list[LabReport | ExamReport]:
        ids = list(dict.fromkeys(report_ids))
        if not ids:
            return []
        if len(ids) > REPORT_BATCH_MAX:
            raise ValueError(f"at most {REPORT_BATCH_MAX} reports per call")
        envelope: p.Items[p.ReportEnvelope] = await self._call(
            "report_bodies", body={"report_ids": ids}
        )
        bodies: list[LabReport | ExamReport] = []
        for item in envelope.items:
            body = item.lab if item.kind is ReportKind.lab else item.exam
            if body is None:
                raise HisUnavailable(
                    "malformed_response",
                    "report body does not match its kind",
                    operation="report_bodies",
                )
            if body.report_id in ids:  # never trust what we did not ask for
                bodies.append(body)
        return bodies

    # ------------------------------------------------------------------ settlements

    async def day_settlements(self, on_date: date) -> list[SettlementRecord]:
        return list(
            (await self._call("day_settlements", query={"on_date": on_date.isoformat()})).items
        )

    # ------------------------------------------------------------------ events

    async def events(self, *, after: str | None, limit: int = 100) -> EventPage:
        query = {"limit": str(limit)}
        if after:
            query["after"] = after
        result: EventPage = await self._call("events", query=query)
        return result


def _path_segment(value: str) -> str:
    # Ids are short tokens; anything else would be a path trick, refused before sending.
    if not value or not all(c.isalnum() or c in "-_" for c in value) or len(value) > 32:
        raise HisRejected("invalid_request", "ids are 1-32 of [A-Za-z0-9_-]")
    return value


def _has_naive_datetime(value: Any) -> bool:
    if isinstance(value, datetime):
        return value.tzinfo is None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_has_naive_datetime(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, list | tuple):
        return any(_has_naive_datetime(v) for v in value)
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict):
        return any(_has_naive_datetime(getattr(value, name)) for name in model_fields)
    return False
