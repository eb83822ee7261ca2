"""A day of money for reconciliation tests and the benchmark: our ledger, the HIS's
settlements and WeChat's ALL bill (rendered by the Pay simulator's own bill writer), built
together so that they agree, plus known differences injected on purpose.

``clean_item(i)`` is deterministic in ``i`` so a benchmark can stream a million of them
without holding them; ``generate_day`` builds a small day with every class of difference
(``expected`` says which key has which class) and clean noise around them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from frontdesk.his.port import SettlementRecord
from frontdesk.reconciliation.schemas import LedgerEntry, payment_key, refund_key
from frontdesk.sims.wechat_sim.pay_bill import BillLine

MCHID = "1230000109"
APPID = "wxd678efh567hg6787"
TRADE_TYPES = ("JSAPI", "NATIVE", "MICROPAY")
MARGIN_SECONDS = 1800  # clean movements stay this far from midnight


@dataclass(frozen=True)
class Item:
    """One movement as the three sources record it (None: that source does not have it)."""

    ledger: LedgerEntry | None
    his: tuple[SettlementRecord, ...]
    bill: BillLine | None


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def payment(
    i: int, at: datetime, amount_fen: int, *, trade_type: str, tag: str = "P"
) -> tuple[LedgerEntry, SettlementRecord, BillLine]:
    otn = f"{tag}{at:%Y%m%d}{i:09d}"
    txn = f"42000{at:%Y%m%d}{i:013d}"
    entry = LedgerEntry(
        kind="payment",
        out_trade_no=otn,
        out_refund_no=None,
        transaction_id=txn,
        refund_id=None,
        trade_type=trade_type,
        amount_fen=amount_fen,
        state="paid",
        at=at,
        card_no=f"C{i % 100000:06d}",
        his_ref=otn,
        his_state="settled",
        ledger_id=i * 2 + 1,
    )
    his = SettlementRecord(
        kind="payment",
        reference=otn,
        his_id=f"S{i:010d}",
        card_no=entry.card_no,
        amount_fen=amount_fen,
        at=at + timedelta(seconds=1),
    )
    bill = BillLine(
        at=at,
        appid=APPID,
        mchid=MCHID,
        transaction_id=txn,
        out_trade_no=otn,
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        trade_type=trade_type,
        trade_state="SUCCESS",
        bank_type="OTHERS",
        amount_fen=amount_fen,
        description="门诊缴费",
        attach="",
    )
    return entry, his, bill


def refund(
    i: int, pay: tuple[LedgerEntry, SettlementRecord, BillLine], at: datetime, refund_fen: int
) -> tuple[LedgerEntry, SettlementRecord, BillLine]:
    entry, _, bill = pay
    orn = f"R{entry.out_trade_no[1:]}"
    rid = f"50300{at:%Y%m%d}{i:013d}"
    led = replace(
        entry,
        kind="refund",
        out_refund_no=orn,
        refund_id=rid,
        amount_fen=refund_fen,
        state="success",
        at=at + timedelta(seconds=3),
        his_ref=orn,
        his_state="refunded",
        ledger_id=i * 2 + 2,
    )
    his = SettlementRecord(
        kind="refund",
        reference=orn,
        his_id=f"F{i:010d}",
        card_no=entry.card_no,
        amount_fen=refund_fen,
        at=at,
    )
    line = replace(
        bill,
        at=at,
        trade_state="REFUND",
        refund_id=rid,
        out_refund_no=orn,
        refund_fen=refund_fen,
        refund_type="ORIGINAL",
        refund_status="SUCCESS",
        refund_success_at=at + timedelta(seconds=3),
    )
    return led, his, line


def clean_items(day: date, n: int, *, tz: ZoneInfo, start_index: int = 0) -> Iterator[Item]:
    """``n`` movements that agree everywhere; every 10th payment is partly refunded (the
    refund is a movement of its own). Deterministic: the same arguments, the same day."""
    start = _day_start(day, tz)
    span = 86400 - 2 * MARGIN_SECONDS
    made = 0
    i = start_index
    while made < n:
        at = start + timedelta(seconds=MARGIN_SECONDS + (i * 7919) % span)
        amount = 100 + (i * 104729) % 50000
        pay = payment(i, at, amount, trade_type=TRADE_TYPES[i % 3])
        yield Item(pay[0], (pay[1],), pay[2])
        made += 1
        if i % 10 == 0 and made < n:
            ref = refund(i, pay, at + timedelta(seconds=120), amount // 2 or 1)
            yield Item(ref[0], (ref[1],), ref[2])
            made += 1
        i += 1


@dataclass
class GeneratedDay:
    day: date
    ledger: list[LedgerEntry] = field(default_factory=list)
    his: list[SettlementRecord] = field(default_factory=list)
    bill: list[BillLine] = field(default_factory=list)
    next_day_bill: list[BillLine] = field(default_factory=list)  # cross-day lines
    expected: dict[str, str] = field(default_factory=dict)  # key -> class, for ``day``
    started: dict[str, datetime] = field(default_factory=dict)  # unfinished: when begun
    clean: int = 0

    def add(self, item: Item) -> None:
        if item.ledger is not None:
            self.ledger.append(item.ledger)
        self.his.extend(item.his)
        if item.bill is not None:
            self.bill.append(item.bill)


def generate_day(
    day: date,
    *,
    tz: ZoneInfo,
    clean: int = 120,
    each: int = 3,
    seed: int = 7,
    start_index: int = 0,
) -> GeneratedDay:
    """A day with ``each`` differences of every class and ``clean`` agreeing movements."""
    rng = random.Random(seed)
    g = GeneratedDay(day=day)
    for item in clean_items(day, clean, tz=tz, start_index=start_index):
        g.add(item)
    g.clean = clean
    start = _day_start(day, tz)
    end = start + timedelta(days=1)
    index = 500_000 + start_index

    def mid_day() -> datetime:
        return start + timedelta(seconds=rng.randrange(MARGIN_SECONDS, 86400 - MARGIN_SECONDS))

    def fresh(trade_type: str | None = None) -> tuple[LedgerEntry, SettlementRecord, BillLine]:
        nonlocal index
        index += 1
        return payment(
            index,
            mid_day(),
            rng.randrange(100, 90000),
            trade_type=trade_type or rng.choice(TRADE_TYPES),
        )

    for _ in range(each):
        # 长款: WeChat has a payment our ledger never saw.
        led, his, bill = fresh()
        g.add(Item(None, (), bill))
        g.expected[payment_key(led.out_trade_no)] = "long"
        # 短款: paid and settled with us, missing from WeChat's bill.
        led, his, bill = fresh()
        g.add(Item(led, (his,), None))
        g.expected[payment_key(led.out_trade_no)] = "short"
        # amount: the bill says one more fen.
        led, his, bill = fresh()
        g.add(Item(led, (his,), replace(bill, amount_fen=bill.amount_fen + 1)))
        g.expected[payment_key(led.out_trade_no)] = "amount"
        # amount: the HIS booked a different amount.
        led, his, bill = fresh()
        g.add(Item(led, (replace(his, amount_fen=his.amount_fen - 100),), bill))
        g.expected[payment_key(led.out_trade_no)] = "amount"
        # state: refunded in WeChat and by us, not in the HIS.
        pay = fresh()
        g.add(Item(pay[0], (pay[1],), pay[2]))
        paid_at = pay[0].at
        assert paid_at is not None
        r_led, _, r_bill = refund(index, pay, paid_at + timedelta(minutes=5), 100)
        g.add(Item(replace(r_led, his_state="pending"), (), r_bill))
        g.expected[refund_key(r_led.out_refund_no or "")] = "state"
        # state: WeChat billed it, our payment is still pending (a lost notify).
        led, his, bill = fresh()
        g.started[led.out_trade_no] = bill.at - timedelta(minutes=1)
        g.add(Item(replace(led, state="pending", at=None, his_state="pending"), (), bill))
        g.expected[payment_key(led.out_trade_no)] = "state"
        # in the HIS but not paid: a settlement without any payment.
        led, his, bill = fresh()
        g.add(Item(None, (his,), None))
        g.expected[payment_key(led.out_trade_no)] = "his_unpaid"
        # paid, not settled in the HIS.
        led, his, bill = fresh()
        g.add(Item(replace(led, his_state="pending"), (), bill))
        g.expected[payment_key(led.out_trade_no)] = "unsettled"
        # across days: paid 23:59:5x with us (and in the HIS), billed after midnight.
        led, his, bill = fresh()
        late = end - timedelta(seconds=rng.randrange(1, 30))
        led = replace(led, at=late)
        his = replace(his, at=late + timedelta(milliseconds=500))
        g.add(Item(led, (his,), None))
        g.next_day_bill.append(replace(bill, at=end + timedelta(seconds=rng.randrange(0, 30))))
        g.expected[payment_key(led.out_trade_no)] = "cross_day"
        # duplicate: the HIS booked one payment twice.
        led, his, bill = fresh()
        g.add(Item(led, (his, replace(his, his_id=his.his_id + "B")), bill))
        g.expected[payment_key(led.out_trade_no)] = "duplicate"
        # noise that is no difference: a payment started and never paid, nowhere else.
        led, his, bill = fresh()
        g.started[led.out_trade_no] = bill.at
        g.add(Item(replace(led, state="pending", at=None, his_state="pending"), (), None))
    return g
