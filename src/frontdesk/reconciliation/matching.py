"""The three-way match of one day: WeChat's bill <-> our ledger <-> the HIS's settlements.

Pure and streaming: the ledger and the HIS settlements are indexed by key (our merchant
numbers: ``p|out_trade_no`` for payments, ``r|out_refund_no`` for refunds — the HIS knows
them as payment_ref/refund_ref), then the bill's rows flow past one at a time and each takes
its ledger entry and settlements out of the indexes. What is left in the indexes afterwards
is in our ledger or in the HIS but not in the bill. Each key then has what the three sources
say about it (``Sides``) and ``classify`` names the difference, if any. WeChat's transaction
id is checked against the one our ledger knows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime

from frontdesk.his.port import SettlementRecord
from frontdesk.reconciliation.schemas import (
    AMOUNT,
    DUPLICATE,
    HIS_UNPAID,
    LONG,
    OTHER_TRADE_TYPE,
    SHORT,
    STATE,
    TRADE_TYPES,
    UNSETTLED,
    BillRow,
    Finding,
    LedgerEntry,
    MatchResult,
    Sides,
    TypeTotals,
    payment_key,
    refund_key,
)

PAID_STATES = frozenset({"paid", "refunded", "partially_refunded"})
HIS_SETTLED_STATES = frozenset({"settled", "refunded"})

# A compact ledger index value: (amount, state, at, transaction id, his_state, trade type,
# out_trade_no, count). Tuples, not objects: a million of them must fit in memory.
_LedgerItem = tuple[int, str, datetime | None, str | None, str, str, str, int]
# (amount, at, count)
_HisItem = tuple[int, datetime, int]


def trade_type_bucket(trade_type: str | None) -> str:
    return trade_type if trade_type in TRADE_TYPES else OTHER_TRADE_TYPE


def ledger_key(entry: LedgerEntry) -> str:
    if entry.kind == "refund":
        return refund_key(entry.out_refund_no or "")
    return payment_key(entry.out_trade_no)


def his_key(record: SettlementRecord) -> str:
    return (
        refund_key(record.reference) if record.kind == "refund" else payment_key(record.reference)
    )


LedgerIndex = dict[str, _LedgerItem]


def index_ledger(entries: Iterable[LedgerEntry], index: LedgerIndex | None = None) -> LedgerIndex:
    """Index ledger entries by key (into ``index`` when given: the ledger can be read in
    pieces, each piece dropped once indexed)."""
    index = {} if index is None else index
    # Few distinct values repeat a million times: keep one copy of each.
    canon: dict[str, str] = {}
    for e in entries:
        key = sys.intern(ledger_key(e))
        old = index.get(key)
        index[key] = (
            e.amount_fen,
            canon.setdefault(e.state, e.state),
            e.at,
            e.transaction_id,
            canon.setdefault(e.his_state, e.his_state),
            canon.setdefault(e.trade_type, e.trade_type),
            # a payment's number is in its key
            e.out_trade_no if e.kind == "refund" else "",
            1 if old is None else old[7] + 1,
        )
    return index


HisIndex = dict[str, _HisItem]


def index_his(records: Iterable[SettlementRecord]) -> HisIndex:
    """Index the HIS's settlements by key (compact: the records can be dropped after)."""
    index: HisIndex = {}
    for r in records:
        key = sys.intern(his_key(r))
        old = index.get(key)
        index[key] = (r.amount_fen, r.at, 1 if old is None else old[2] + 1)
    return index


def classify(s: Sides) -> Finding | None:
    """The difference between what the three sources say about one movement, or None."""
    if s.ledger_count > 1:
        return Finding(DUPLICATE, "ledger_twice", s)
    if s.his_count > 1:
        return Finding(DUPLICATE, "his_twice", s)
    billed = s.bill_fen is not None
    if s.kind == "payment":
        in_bill = billed and s.bill_state == "SUCCESS"
        moved = s.ledger_state in PAID_STATES
        if in_bill and s.ledger_state is None:
            return Finding(LONG, "not_in_ledger", s)
        if moved and not in_bill:
            if s.bill_state == "REVOKED":
                return Finding(STATE, "revoked_in_wechat", s)
            return Finding(SHORT, "not_in_bill", s)
        if in_bill and not moved:
            # WeChat has the money, our payment is still pending: the notify was lost or is
            # late. A query settles it; the system asks and closes the difference itself.
            return Finding(STATE, "pending_but_billed", s, auto=True)
        if not in_bill:  # not paid anywhere
            return Finding(HIS_UNPAID, "his_not_paid", s) if s.his_count else None
    else:
        moved = s.ledger_state == "success"
        if billed and s.ledger_state is None:
            return Finding(LONG, "not_in_ledger", s)
        if moved and not billed:
            return Finding(SHORT, "not_in_bill", s)
        if not billed:
            return Finding(HIS_UNPAID, "his_not_refunded", s) if s.his_count else None
        bill_state = (s.bill_state or "").lower()
        if bill_state != s.ledger_state:
            late = bill_state == "success" and s.ledger_state == "processing"
            return Finding(STATE, "refund_state", s, auto=late)
        if not moved:  # both say processing / closed: no money moved yet
            return Finding(HIS_UNPAID, "his_not_refunded", s) if s.his_count else None
    # Money moved in WeChat and in our ledger.
    if s.bill_fen != s.ledger_fen:
        return Finding(AMOUNT, "bill_amount", s)
    if s.ledger_txn and s.transaction_id and s.ledger_txn != s.transaction_id:
        return Finding(STATE, "transaction_id", s)
    if not s.his_count:
        if s.ledger_his_state == "not_needed":
            return None
        if s.kind == "payment":
            return Finding(UNSETTLED, "not_in_his", s)
        return Finding(STATE, "not_refunded_in_his", s)
    if s.his_fen != s.ledger_fen:
        return Finding(AMOUNT, "his_amount", s)
    if s.ledger_his_state not in HIS_SETTLED_STATES and s.ledger_his_state != "not_needed":
        return Finding(STATE, "his_state", s)
    return None


def moved(s: Sides) -> bool:
    """Our ledger says the money moved (a payment paid, a refund succeeded)."""
    if s.kind == "payment":
        return s.ledger_state in PAID_STATES
    return s.ledger_state == "success"


def _fill_ledger(s: Sides, item: _LedgerItem | None) -> None:
    if item is None:
        return
    (
        s.ledger_fen,
        s.ledger_state,
        s.ledger_at,
        s.ledger_txn,
        s.ledger_his_state,
        trade_type,
        out_trade_no,
        s.ledger_count,
    ) = item
    s.trade_type = s.trade_type or trade_type
    s.out_trade_no = s.out_trade_no or out_trade_no


def _fill_his(s: Sides, item: _HisItem | None) -> None:
    if item is not None:
        s.his_fen, s.his_at, s.his_count = item


def match(
    rows: Iterable[BillRow],
    ledger: Iterable[LedgerEntry] | LedgerIndex,
    his: Iterable[SettlementRecord] | HisIndex,
    *,
    keep_matched: bool = True,
    his_later: HisIndex | None = None,
) -> MatchResult:
    """Match a day's bill rows (streamed), ledger entries and HIS settlements (each may be
    given as its index, already built). The indexes are consumed.

    ``his_later``: the HIS's settlements of the next day. A movement of this day that the
    HIS booked only the next day (a late notify, a settlement retried or approved by
    finance the next morning) takes its HIS record from there; the next day's other records
    are not this day's business and are ignored."""
    led = ledger if isinstance(ledger, dict) else index_ledger(ledger)
    settled = his if isinstance(his, dict) else index_his(his)
    later: HisIndex = his_later if his_later is not None else {}

    def his_of(key: str) -> _HisItem | None:
        found = settled.pop(key, None)
        return found if found is not None else later.pop(key, None)

    result = MatchResult(ledger_count=len(led), his_count=len(settled))
    totals = result.totals

    def bucket(trade_type: str | None) -> TypeTotals:
        name = trade_type_bucket(trade_type)
        found = totals.get(name)
        if found is None:
            found = totals[name] = TypeTotals()
        return found

    def record(s: Sides) -> None:
        finding = classify(s)
        t = bucket(s.trade_type)
        amount = next(a for a in (s.bill_fen, s.ledger_fen, s.his_fen, 0) if a is not None)
        if finding is None:
            t.matched_count += 1
            t.matched_fen += amount
            if keep_matched:
                result.matched.append(s)
        else:
            t.unmatched_count += 1
            t.unmatched_fen += amount
            result.findings.append(finding)

    for row in rows:
        result.bill_count += 1
        key = row.key
        is_refund = row.trade_state == "REFUND"
        s = Sides(
            key=key,
            kind="refund" if is_refund else "payment",
            out_trade_no=row.out_trade_no,
            out_refund_no=row.out_refund_no,
            bill_fen=row.refund_fen if is_refund else row.settle_fen,
            bill_state=row.refund_status if is_refund else row.trade_state,
            bill_at=row.at,
            transaction_id=row.transaction_id,
            trade_type=row.trade_type,
            fee_milli_fen=row.fee_milli_fen,
        )
        t = bucket(row.trade_type)
        if is_refund:
            t.refund_count += 1
            t.refund_fen += row.refund_fen
        elif row.trade_state == "SUCCESS":
            t.pay_count += 1
            t.pay_fen += row.settle_fen
        t.fee_milli_fen += row.fee_milli_fen
        _fill_ledger(s, led.pop(key, None))
        _fill_his(s, his_of(key))
        record(s)
    for key, item in led.items():
        kind = "refund" if key.startswith("r|") else "payment"
        s = Sides(
            key=key,
            kind=kind,
            out_trade_no="" if kind == "refund" else key[2:],
            out_refund_no=key[2:] if kind == "refund" else "",
        )
        _fill_ledger(s, item)
        _fill_his(s, his_of(key))
        if not moved(s) and classify(s) is None:
            continue  # started and not final (or closed), nowhere else: no money moved
        record(s)
    for key, his_item in settled.items():
        kind = "refund" if key.startswith("r|") else "payment"
        s = Sides(
            key=key,
            kind=kind,
            out_trade_no=key[2:] if kind == "payment" else "",
            out_refund_no=key[2:] if kind == "refund" else "",
        )
        _fill_his(s, his_item)
        record(s)
    return result
