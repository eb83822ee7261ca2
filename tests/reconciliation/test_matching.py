"""The pure three-way match on a generated day: every injected difference found with its
class, nothing else, and the day's sums exact."""

from __future__ import annotations

from datetime import date

from frontdesk.reconciliation.billfile import BillParser
from frontdesk.reconciliation.matching import match
from frontdesk.sims.recon_day import MCHID, generate_day
from tests.reconciliation.helpers import SH, bill_text

DAY = date(2026, 11, 26)


def test_every_injected_difference_is_found_and_nothing_else() -> None:
    g = generate_day(DAY, tz=SH, clean=150, each=4)
    parser = BillParser(mchid=MCHID)

    result = match(parser.rows(bill_text(g.bill).splitlines()), g.ledger, g.his)

    found = {f.sides.key: f.cls for f in result.findings}
    # Without the adjacent day, a cross-day payment is simply not in this bill (短款); the
    # service turns it into "cross_day" (tests/reconciliation/test_service.py).
    expected = {k: ("short" if c == "cross_day" else c) for k, c in g.expected.items()}
    assert found == expected
    assert sorted(set(expected.values())) == [
        "amount",
        "duplicate",
        "his_unpaid",
        "long",
        "short",
        "state",
        "unsettled",
    ]
    assert all(list(expected.values()).count(c) >= 4 for c in set(expected.values()))
    # The clean movements, plus the payments whose refunds were injected, all match.
    assert len(result.matched) == g.clean + 4


def test_the_day_totals_are_the_bills_exact_sums() -> None:
    g = generate_day(DAY, tz=SH, clean=90, each=2)
    parser = BillParser()

    result = match(parser.rows(bill_text(g.bill).splitlines()), g.ledger, g.his)

    pays = [b for b in g.bill if not b.is_refund]
    refunds = [b for b in g.bill if b.is_refund]
    t = result.totals
    assert sum(x.pay_count for x in t.values()) == len(pays)
    assert sum(x.pay_fen for x in t.values()) == sum(b.amount_fen for b in pays)
    assert sum(x.refund_fen for x in t.values()) == sum(b.refund_fen for b in refunds)
    assert sum(x.fee_milli_fen for x in t.values()) == sum(b.fee_units for b in g.bill)
    for name in ("JSAPI", "NATIVE", "MICROPAY"):
        assert t[name].pay_fen == sum(b.amount_fen for b in pays if b.trade_type == name)
    assert parser.summary is not None
    assert parser.summary.settle_fen == sum(x.pay_fen for x in t.values())
    net = sum(x.net_milli_fen for x in t.values())
    assert net == (parser.summary.settle_fen - parser.summary.refund_fen) * 1000 - (
        parser.summary.fee_milli_fen
    )
    assert sum(x.matched_count + x.unmatched_count for x in t.values()) == len(
        result.matched
    ) + len(result.findings)


def test_a_transaction_id_that_differs_is_a_state_difference() -> None:
    g = generate_day(DAY, tz=SH, clean=5, each=0)
    first = g.bill[0]
    from dataclasses import replace

    g.bill[0] = replace(first, transaction_id="4200000000000000000000000999")

    result = match(BillParser().rows(bill_text(g.bill).splitlines()), g.ledger, g.his)

    assert [(f.cls, f.reason) for f in result.findings] == [("state", "transaction_id")]
