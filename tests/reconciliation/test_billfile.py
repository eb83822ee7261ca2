"""The trade bill parser: the spec's vector, names not positions, exact fen, and every
kind of bad bill refused with the line and the reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from frontdesk.reconciliation.billfile import BillParser, amount_fen, fee_milli_fen, parse_text
from frontdesk.reconciliation.errors import BillRejected
from frontdesk.sims.wechat_sim.pay_bill import ALL_HEADER

ROW = (
    "`2024-01-01 10:00:00,`wxd678efh567hg6787,`1230000109,`0,`,`4200000000202401010000000001,"
    "`1217752501201407033233368018,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,"
    "`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`门诊缴费,`,`0.00600,`0.60%,`1.00,`0.00,`"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
SUMMARY = "`1,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00"


def vector(
    *, header: str | None = None, rows: list[str] | None = None, summary: str = SUMMARY
) -> str:
    lines = [header or ",".join(ALL_HEADER), *(rows if rows is not None else [ROW])]
    return "\r\n".join([*lines, SUMMARY_HEADER, summary]) + "\r\n"


def test_the_spec_vector_parses_to_exact_fen() -> None:
    text = vector()
    raw = text.encode()
    assert len(raw) == 825
    assert hashlib.sha1(raw).hexdigest() == "0738cd68a29e9c94b22f991c4fe8c6a87298cd08"  # noqa: S324

    rows, summary = parse_text(text, mchid="1230000109")

    assert len(rows) == 1
    row = rows[0]
    assert (row.kind, row.out_trade_no, row.transaction_id, row.trade_type) == (
        "payment",
        "1217752501201407033233368018",
        "4200000000202401010000000001",
        "JSAPI",
    )
    assert (row.settle_fen, row.refund_fen, row.fee_milli_fen) == (100, 0, 600)
    assert row.at == datetime(2024, 1, 1, 2, 0, tzinfo=UTC)  # 10:00 China time
    assert (summary.count, summary.settle_fen, summary.fee_milli_fen) == (1, 100, 600)


def test_columns_are_found_by_name_and_bom_and_lf_are_tolerated() -> None:
    header = list(ALL_HEADER)
    fields = ROW.split(",")
    # Swap two columns in both the header and the row: the parse is the same.
    i, j = header.index("商户订单号"), header.index("微信订单号")
    header[i], header[j] = header[j], header[i]
    fields[i], fields[j] = fields[j], fields[i]
    text = "\ufeff" + vector(header=",".join(header), rows=[",".join(fields)]).replace("\r\n", "\n")

    rows, _ = parse_text(text)

    assert rows[0].out_trade_no == "1217752501201407033233368018"


def test_the_legacy_layout_is_read() -> None:
    header = (
        ",".join(ALL_HEADER).replace("应结订单金额", "总金额").replace("代金券金额", "企业红包金额")
    )
    rows, _ = parse_text(vector(header=header))
    assert rows[0].settle_fen == 100


@pytest.mark.parametrize(
    ("text", "amount", "fen"),
    [("23.50", 2, 2350), ("0.01", 2, 1), ("-3.50", 2, -350), ("0.14100", 5, 14100)],
)
def test_amounts_are_exact_integers(text: str, amount: int, fen: int) -> None:
    parse = amount_fen if amount == 2 else fee_milli_fen
    assert parse(text, what="x", line_no=2) == fen


@pytest.mark.parametrize("text", ["23.5", "23.500", "23", "1e2", "23.5O", "２3.50"])
def test_amounts_with_the_wrong_decimals_are_refused(text: str) -> None:
    with pytest.raises(BillRejected) as caught:
        amount_fen(text, what="应结订单金额", line_no=7)
    assert caught.value.reason in ("decimals", "row")
    assert "line 7" in str(caught.value)


def _reason(text: str, mchid: str | None = None) -> str:
    parser = BillParser(mchid=mchid)
    with pytest.raises(BillRejected) as caught:
        list(parser.rows(text.splitlines()))
    assert parser.summary is None
    return caught.value.reason


def test_a_yuan_amount_with_three_decimals_stops_the_parse() -> None:
    assert _reason(vector(rows=[ROW.replace("`1.00,`0.00,`0,", "`1.000,`0.00,`0,")])) == "decimals"


def test_a_fee_with_two_decimals_stops_the_parse() -> None:
    assert _reason(vector(rows=[ROW.replace("`0.00600", "`0.01")])) == "decimals"


def test_an_unknown_column_layout_is_refused() -> None:
    assert _reason(vector(header=",".join(ALL_HEADER).replace("手续费", "服务费"))) == "layout"
    assert _reason(vector(header=",".join(ALL_HEADER[:-3]))) == "row"
    assert _reason(ROW + "\r\n" + ROW + "\r\n") == "layout"


def test_a_summary_that_disagrees_with_the_rows_is_refused() -> None:
    assert _reason(vector(summary=SUMMARY.replace("`1,", "`2,", 1))) == "summary"
    assert _reason(vector(summary=SUMMARY.replace("`0.00600", "`0.00700"))) == "summary"
    assert (
        _reason(vector(summary=SUMMARY.replace("`1.00,`0.00,`0.00", "`1.01,`0.00,`0.00")))
        == "summary"
    )


def test_duplicate_lines_are_refused() -> None:
    double = SUMMARY.replace("`1,`1.00", "`2,`2.00").replace("`0.00600,`1.00", "`0.01200,`2.00")
    assert _reason(vector(rows=[ROW, ROW], summary=double)) == "duplicate"


def test_a_truncated_bill_is_refused() -> None:
    text = vector()
    assert _reason(text[: text.index(SUMMARY_HEADER)]) == "truncated"
    assert _reason(text[: text.index(SUMMARY)]) == "truncated"
    assert _reason(text[: len(",".join(ALL_HEADER)) + 40]) == "truncated"
    assert _reason("") == "truncated"


def test_a_row_of_another_merchant_is_refused() -> None:
    assert _reason(vector(), mchid="1999999999") == "merchant"
