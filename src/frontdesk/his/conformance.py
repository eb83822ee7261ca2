"""The HIS bridge conformance kit: checks any implementation of the protocol, black-box.

    frontdesk his-conformance https://bridge.hospital.example --key-id k1 --secret ...

It speaks raw HTTP with ``frontdesk.his.signing`` (not through our adapter, which would hide
protocol faults behind retries) and prints one line per check. Run it against a test
environment: the write checks book one slot for the test card and cancel it again, and
suspend the session named by ``--suspend-schedule-id`` (only if given).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from frontdesk.core.clock import get_clock
from frontdesk.his import protocol as p
from frontdesk.his import signing


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


class CheckFailed(AssertionError):
    pass


@dataclass(frozen=True)
class Target:
    key_id: str
    secret: str
    card_no: str = "6100000001"
    holder_name: str | None = None
    last4: str | None = None
    # A session set aside for the test that the kit may really suspend (停诊); without it the
    # suspension write is checked through refusals only.
    suspend_schedule_id: str | None = None


class _Kit:
    def __init__(self, client: httpx.AsyncClient, target: Target) -> None:
        self.client = client
        self.t = target
        self.found: dict[str, Any] = {}

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: Any = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        unix_time: int | None = None,
        nonce: str | None = None,
        secret: str | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        payload = (
            raw
            if raw is not None
            else (b"" if body is None else json.dumps(body, ensure_ascii=False).encode())
        )
        all_headers = {"Accept": "application/json"}
        if payload:
            all_headers["Content-Type"] = "application/json"
        if sign:
            all_headers.update(
                signing.signed_headers(
                    key_id=self.t.key_id,
                    secret=secret or self.t.secret,
                    method=method,
                    path=path,
                    query=query,
                    body=payload,
                    unix_time=unix_time
                    if unix_time is not None
                    else int(get_clock().now().timestamp()),
                    nonce=nonce,
                ).as_dict()
            )
        all_headers.update(headers or {})
        url = path + (f"?{query}" if query else "")
        return await self.client.request(method, url, content=payload, headers=all_headers)

    # ------------------------------------------------------------------ assertions

    @staticmethod
    def envelope(
        response: httpx.Response, *, status: set[int], code: str | None = None
    ) -> dict[str, Any]:
        if response.status_code not in status:
            raise CheckFailed(f"expected HTTP {sorted(status)}, got {response.status_code}")
        try:
            error = p.RESPONSE_ADAPTERS["error"].validate_json(response.content, strict=True)
        except ValidationError:
            raise CheckFailed(f"not the error envelope: {response.text[:120]!r}") from None
        if code is not None and error.code != code:
            raise CheckFailed(f"expected code {code!r}, got {error.code!r}")
        return dict(error.model_dump())

    @staticmethod
    def shape(operation: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise CheckFailed(f"{operation}: HTTP {response.status_code} {response.text[:160]}")
        try:
            return p.RESPONSE_ADAPTERS[operation].validate_json(response.content, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CheckFailed(f"{operation}: {first['loc']}: {first['msg']}") from None

    # ------------------------------------------------------------------ checks

    async def signature_required(self) -> str:
        r = await self.send("GET", f"{p.PREFIX}/departments", sign=False)
        self.envelope(r, status={401})
        return "unsigned request refused with 401"

    async def forged_signature_refused(self) -> str:
        r = await self.send("GET", f"{p.PREFIX}/departments", secret="forged-" + self.t.secret)
        self.envelope(r, status={401})
        return "wrong secret refused with 401"

    async def stale_timestamp_refused(self) -> str:
        now = int(get_clock().now().timestamp())
        r = await self.send("GET", f"{p.PREFIX}/departments", unix_time=now - 600)
        self.envelope(r, status={401})
        return "timestamp 10 minutes old refused"

    async def nonce_replay_refused(self) -> str:
        nonce = secrets.token_hex(16)
        first = await self.send("GET", f"{p.PREFIX}/departments", nonce=nonce)
        if first.status_code != 200:
            raise CheckFailed(f"first use of the nonce got HTTP {first.status_code}")
        again = await self.send("GET", f"{p.PREFIX}/departments", nonce=nonce)
        self.envelope(again, status={401})
        return "second use of a nonce refused"

    async def error_envelope_shape(self) -> str:
        unknown = await self.send("GET", f"{p.PREFIX}/no-such-operation")
        self.envelope(unknown, status={404})
        malformed = await self.send("POST", f"{p.PREFIX}/cards/verify", raw=b'{"card_no": ')
        self.envelope(malformed, status={400, 422})
        wrong_type = await self.send(
            "POST",
            f"{p.PREFIX}/orders/pre-settle",
            body={"card_no": self.t.card_no, "order_ids": "x"},
        )
        self.envelope(wrong_type, status={422})
        missing = await self.send(
            "POST", f"{p.PREFIX}/orders/pre-settle", body={"order_ids": ["x"], "unknown_field": 1}
        )
        self.envelope(missing, status={422})
        return "unknown operation, malformed JSON, wrong type, missing field: all enveloped"

    async def catalog_shapes(self) -> str:
        deps = self.shape("departments", await self.send("GET", f"{p.PREFIX}/departments"))
        self.shape("doctors", await self.send("GET", f"{p.PREFIX}/doctors"))
        today = get_clock().today()
        query = f"end={(today + timedelta(days=6)).isoformat()}&start={today.isoformat()}"
        schedules = self.shape(
            "schedules", await self.send("GET", f"{p.PREFIX}/schedules", query=query)
        ).items
        if not deps.items or not schedules:
            raise CheckFailed("no departments or no schedules in the next 7 days to test")
        for schedule in schedules:
            pool = self.shape(
                "slot_pool",
                await self.send("GET", f"{p.PREFIX}/schedules/{schedule.schedule_id}/slots"),
            )
            free = [s for s in pool.slots if s.available]
            if schedule.status.value == "open" and free:
                self.found["schedule_id"] = schedule.schedule_id
                self.found["sequence_no"] = free[-1].sequence_no
                break
        if "schedule_id" not in self.found:
            raise CheckFailed("no open schedule with a free slot in the next 7 days")
        return f"{len(deps.items)} departments, {len(schedules)} schedules"

    async def card_shapes(self) -> str:
        if self.t.holder_name and self.t.last4:
            self.shape(
                "verify_card",
                await self.send(
                    "POST",
                    f"{p.PREFIX}/cards/verify",
                    body={
                        "card_no": self.t.card_no,
                        "holder_name": self.t.holder_name,
                        "id_or_phone_last4": self.t.last4,
                    },
                ),
            )
        r = await self.send(
            "POST",
            f"{p.PREFIX}/cards/verify",
            body={"card_no": "000000000000", "holder_name": "无此人", "id_or_phone_last4": "0000"},
        )
        self.envelope(r, status={404, 422})
        return "verified" if self.t.holder_name else "refusal shape only (no holder given)"

    async def order_shapes(self) -> str:
        card = self.t.card_no
        orders = self.shape(
            "unpaid_orders",
            await self.send("GET", f"{p.PREFIX}/orders", query=f"card_no={card}&status=unpaid"),
        ).items
        self.shape(
            "refundable_items",
            await self.send("GET", f"{p.PREFIX}/refundable-items", query=f"card_no={card}"),
        )
        if orders:
            pre = self.shape(
                "pre_settle",
                await self.send(
                    "POST",
                    f"{p.PREFIX}/orders/pre-settle",
                    body={"card_no": card, "order_ids": [orders[0].order_id]},
                ),
            )
            if pre.insurance_fen + pre.self_pay_fen != pre.total_fen:
                raise CheckFailed("pre-settlement shares do not add up to the total")
            self.shape(
                "execution_status",
                await self.send("GET", f"{p.PREFIX}/orders/{orders[0].order_id}/execution"),
            )
        today = get_clock().today()
        self.shape(
            "day_settlements",
            await self.send("GET", f"{p.PREFIX}/settlements", query=f"on_date={today.isoformat()}"),
        )
        return f"{len(orders)} unpaid order(s)"

    async def report_shapes(self) -> str:
        since = (get_clock().today() - timedelta(days=3 * 365)).isoformat()
        reports = self.shape(
            "reports",
            await self.send(
                "GET", f"{p.PREFIX}/reports", query=f"card_no={self.t.card_no}&since={since}"
            ),
        )
        kinds = set()
        for summary in reports.items[:10]:
            envelope = self.shape(
                "report", await self.send("GET", f"{p.PREFIX}/reports/{summary.report_id}")
            )
            if (envelope.lab is None) == (envelope.exam is None):
                raise CheckFailed("a report must carry exactly one of lab / exam")
            kinds.add(envelope.kind.value)
        return f"{len(reports.items)} report(s), kinds {sorted(kinds)}"

    async def write_idempotency(self) -> str:
        if "schedule_id" not in self.found:
            raise CheckFailed("needs a free slot (catalog check failed)")
        ref = "CONF" + secrets.token_hex(6).upper()
        body = {
            "schedule_id": self.found["schedule_id"],
            "sequence_no": self.found["sequence_no"],
            "card_no": self.t.card_no,
            "booking_ref": ref,
        }
        key = {"Idempotency-Key": f"conformance:{ref}"}
        first = await self.send("POST", f"{p.PREFIX}/appointments", body=body, headers=key)
        appointment = self.shape("register_appointment", first)
        second = await self.send("POST", f"{p.PREFIX}/appointments", body=body, headers=key)
        if second.status_code != 200 or second.json() != first.json():
            raise CheckFailed("repeating the write did not return the first result")
        reused = await self.send(
            "POST", f"{p.PREFIX}/appointments", body={**body, "booking_ref": ref + "X"}, headers=key
        )
        self.envelope(reused, status={409, 422})
        no_key = await self.send(
            "POST", f"{p.PREFIX}/appointments", body={**body, "booking_ref": ref + "Y"}
        )
        self.envelope(no_key, status={400, 422})
        self.shape(
            "appointment",
            await self.send("GET", f"{p.PREFIX}/appointments/{appointment.appointment_id}"),
        )
        cancel_key = {"Idempotency-Key": f"conformance:cancel:{ref}"}
        path = f"{p.PREFIX}/appointments/{appointment.appointment_id}/cancel"
        c1 = await self.send("POST", path, body={"reason": "conformance"}, headers=cancel_key)
        cancelled = self.shape("cancel_appointment", c1)
        c2 = await self.send("POST", path, body={"reason": "conformance"}, headers=cancel_key)
        if c2.status_code != 200 or c2.json() != c1.json():
            raise CheckFailed("repeating the cancel did not return the first result")
        return f"register and cancel replayed the same answer ({cancelled.status.value})"

    async def suspension_write(self) -> str:
        """``suspend_schedule``: refusals that change nothing always; a real suspension (and
        its replay) only on the session the operator set aside for the test."""
        ref = "CONF" + secrets.token_hex(6).upper()
        unknown_path = f"{p.PREFIX}/schedules/NOSUCHSCHEDULE/suspend"
        body = {"reason": "conformance", "request_ref": ref}
        key = {"Idempotency-Key": f"conformance:suspend:{ref}"}
        first = await self.send("POST", unknown_path, body=body, headers=key)
        self.envelope(first, status={404}, code="not_found")
        again = await self.send("POST", unknown_path, body=body, headers=key)
        if again.status_code != first.status_code or again.json() != first.json():
            raise CheckFailed("a repeated refused suspension did not get the same answer")
        target = self.t.suspend_schedule_id
        path = f"{p.PREFIX}/schedules/{target or 'NOSUCHSCHEDULE'}/suspend"
        empty = await self.send(
            "POST",
            path,
            body={"reason": "", "request_ref": ref + "E"},
            headers={"Idempotency-Key": f"conformance:suspend:{ref}E"},
        )
        self.envelope(empty, status={404, 422})
        no_key = await self.send("POST", path, body={**body, "request_ref": ref + "K"})
        self.envelope(no_key, status={400, 422})
        if not target:
            return "refusals only (no --suspend-schedule-id given)"
        real = {"reason": "conformance", "request_ref": ref + "S"}
        real_key = {"Idempotency-Key": f"conformance:suspend:{ref}S"}
        s1 = await self.send("POST", path, body=real, headers=real_key)
        suspended = self.shape("suspend_schedule", s1)
        if suspended.schedule_id != target or suspended.status.value != "suspended":
            raise CheckFailed("the answer is not the suspended schedule")
        s2 = await self.send("POST", path, body=real, headers=real_key)
        if s2.status_code != 200 or s2.json() != s1.json():
            raise CheckFailed("repeating the suspension did not return the first result")
        pool = self.shape(
            "slot_pool", await self.send("GET", f"{p.PREFIX}/schedules/{target}/slots")
        )
        if any(slot.available for slot in pool.slots):
            raise CheckFailed("a suspended session still offers slots")
        other = await self.send(
            "POST",
            path,
            body={"reason": "conformance", "request_ref": ref + "T"},
            headers={"Idempotency-Key": f"conformance:suspend:{ref}T"},
        )
        self.envelope(other, status={409, 422}, code="schedule_suspended")
        return f"{target} suspended once, replayed, pool closed, a second request refused"

    async def money_writes_refuse_safely(self) -> str:
        """Settle and refund are checked only through refusals that move no money: a
        settlement one fen off must be ``amount_mismatch`` (the same answer when repeated),
        a refund of an item that does not exist must be refused."""
        card = self.t.card_no
        orders = self.shape(
            "unpaid_orders",
            await self.send("GET", f"{p.PREFIX}/orders", query=f"card_no={card}&status=unpaid"),
        ).items
        if not orders:
            raise CheckFailed("the test card needs an unpaid order")
        ids = [orders[0].order_id]
        pre = self.shape(
            "pre_settle",
            await self.send(
                "POST", f"{p.PREFIX}/orders/pre-settle", body={"card_no": card, "order_ids": ids}
            ),
        )
        ref = "CONF" + secrets.token_hex(6).upper()
        body = {
            "card_no": card,
            "order_ids": ids,
            "payment_ref": ref,
            "self_pay_fen": pre.self_pay_fen + 1,
        }
        key = {"Idempotency-Key": f"conformance:settle:{ref}"}
        first = await self.send("POST", f"{p.PREFIX}/settlements", body=body, headers=key)
        self.envelope(first, status={422}, code="amount_mismatch")
        self.found["refused_payment_ref"] = ref  # must read back as not settled
        again = await self.send("POST", f"{p.PREFIX}/settlements", body=body, headers=key)
        if again.status_code != first.status_code or again.json() != first.json():
            raise CheckFailed("a repeated refused settlement did not get the same answer")
        still = self.shape(
            "unpaid_orders",
            await self.send("GET", f"{p.PREFIX}/orders", query=f"card_no={card}&status=unpaid"),
        ).items
        if ids[0] not in {o.order_id for o in still}:
            raise CheckFailed("a refused settlement changed the order")
        refund = await self.send(
            "POST",
            f"{p.PREFIX}/refunds",
            body={"card_no": card, "item_ids": ["NOSUCHITEM"], "refund_ref": ref},
            headers={"Idempotency-Key": f"conformance:refund:{ref}"},
        )
        self.envelope(refund, status={404, 409, 422})
        return "wrong amount and unknown item refused, nothing changed"

    async def settlement_read(self) -> str:
        """``GET /settlements/{payment_ref}``, which Frontdesk asks before it refunds a
        payment whose settlement failed or timed out: a reference never settled must be
        ``404 not_found`` (a refused settlement included — else a refused payment would be
        taken for settled and the money kept), and a settlement of today's list must read
        back with the same reference, card and self-pay money. Reads only."""
        never = "CONF" + secrets.token_hex(6).upper()
        self.envelope(
            await self.send("GET", f"{p.PREFIX}/settlements/{never}"),
            status={404},
            code="not_found",
        )
        refused = self.found.get("refused_payment_ref")
        if refused:
            self.envelope(
                await self.send("GET", f"{p.PREFIX}/settlements/{refused}"),
                status={404},
                code="not_found",
            )
        today = get_clock().today()
        day = self.shape(
            "day_settlements",
            await self.send("GET", f"{p.PREFIX}/settlements", query=f"on_date={today.isoformat()}"),
        ).items
        payments = [r for r in day if r.kind == "payment"]
        if not payments:
            return "unknown reference is not_found (no settlement today to read back)"
        record = payments[0]
        got = self.shape(
            "settlement", await self.send("GET", f"{p.PREFIX}/settlements/{record.reference}")
        )
        if got.payment_ref != record.reference:
            raise CheckFailed(f"asked for {record.reference}, got {got.payment_ref}")
        if got.settlement_id != record.his_id:
            raise CheckFailed("the settlement id differs from the day's list")
        if got.card_no != record.card_no or got.self_pay_fen != record.amount_fen:
            raise CheckFailed("card or self-pay money differs from the day's list")
        if got.insurance_fen + got.self_pay_fen != got.total_fen:
            raise CheckFailed("settlement shares do not add up to the total")
        return f"unknown reference is not_found; {record.reference} reads back as listed"

    async def event_feed_ordering(self) -> str:
        whole = self.shape(
            "events", await self.send("GET", f"{p.PREFIX}/events", query="limit=200")
        )
        paged: list[Any] = []
        after = ""
        for _ in range(40):
            query = f"after={after}&limit=5" if after else "limit=5"
            page = self.shape("events", await self.send("GET", f"{p.PREFIX}/events", query=query))
            paged.extend(page.events)
            if not page.has_more or len(paged) >= len(whole.events):
                after = page.next_cursor
                break
            after = page.next_cursor
        ids = [e.event_id for e in whole.events]
        if len(set(ids)) != len(ids):
            raise CheckFailed("an event id appears twice")
        if [e.event_id for e in paged][: len(ids)] != ids[: len(paged)]:
            raise CheckFailed("paging by next_cursor does not give the same order")
        if whole.events and whole.next_cursor != whole.events[-1].cursor:
            raise CheckFailed("next_cursor is not the cursor of the last event")
        tail = self.shape(
            "events",
            await self.send(
                "GET",
                f"{p.PREFIX}/events",
                query=f"after={whole.next_cursor}&limit=200" if whole.next_cursor else "limit=1",
            ),
        )
        if whole.events and not whole.has_more and any(e.event_id in set(ids) for e in tail.events):
            raise CheckFailed("events after the last cursor repeat earlier events")
        return f"{len(ids)} event(s) in order, paging consistent"


CHECKS: list[tuple[str, Callable[[_Kit], Awaitable[str]]]] = [
    ("signature required", _Kit.signature_required),
    ("forged signature refused", _Kit.forged_signature_refused),
    ("stale timestamp refused", _Kit.stale_timestamp_refused),
    ("nonce replay refused", _Kit.nonce_replay_refused),
    ("error envelope shape", _Kit.error_envelope_shape),
    ("catalog shapes", _Kit.catalog_shapes),
    ("card shapes", _Kit.card_shapes),
    ("order shapes", _Kit.order_shapes),
    ("report shapes", _Kit.report_shapes),
    ("idempotency of a write", _Kit.write_idempotency),
    ("suspension write", _Kit.suspension_write),
    ("money writes refuse safely", _Kit.money_writes_refuse_safely),
    ("settlement read", _Kit.settlement_read),
    ("event feed ordering", _Kit.event_feed_ordering),
]


async def run_checks(client: httpx.AsyncClient, target: Target) -> list[CheckResult]:
    """Run every check in order; one failing check does not stop the others."""
    kit = _Kit(client, target)
    results = []
    for name, check in CHECKS:
        try:
            detail = await check(kit)
            results.append(CheckResult(name, True, detail))
        except CheckFailed as exc:
            results.append(CheckResult(name, False, str(exc)))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    return results


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [
        f"{r.name.ljust(width)}  {'PASS' if r.passed else 'FAIL':6}  {r.detail}" for r in results
    ]
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


async def check_and_report(
    client: httpx.AsyncClient, target: Target, echo: Callable[[str], Any] = print
) -> int:
    """Run the checks, print the table, return the process exit code (0 = conformant)."""
    results = await run_checks(client, target)
    echo(format_table(results))
    return 0 if all(r.passed for r in results) else 1
