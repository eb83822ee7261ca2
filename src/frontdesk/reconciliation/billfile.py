"""The WeChat Pay trade bill (交易账单, ALL), parsed line by line.

The layout (spec §4.10): a header row of column names, detail rows, a summary header and one
summary data row; comma separated without quoting; every field of the detail and summary
data rows prefixed with a backtick; yuan with exactly 2 decimals, the fee with exactly 5.
Columns are found by name (old merchants get 总金额/企业红包金额 instead of 应结订单金额/
代金券金额). Anything unexpected stops the parse with ``BillRejected`` naming the line: a
reconciliation on a bill we do not fully understand would report differences that are not
there. Rows are yielded one by one, so a bill of any size is parsed in constant memory
(except the set of keys used to refuse duplicate lines).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone

from frontdesk.reconciliation.errors import BillRejected
from frontdesk.reconciliation.schemas import BillRow, BillSummary

# WeChat writes bill times in China Standard Time (no daylight saving since 1991).
CST = timezone(timedelta(hours=8), "CST")

KNOWN_COLUMNS = frozenset(
    {
        "交易时间",
        "公众账号ID",
        "商户号",
        "特约商户号",
        "子商户号",
        "设备号",
        "微信订单号",
        "商户订单号",
        "用户标识",
        "交易类型",
        "交易状态",
        "付款银行",
        "货币种类",
        "应结订单金额",
        "总金额",
        "代金券金额",
        "企业红包金额",
        "微信退款单号",
        "商户退款单号",
        "退款金额",
        "充值券退款金额",
        "企业红包退款金额",
        "退款类型",
        "退款状态",
        "商品名称",
        "商户数据包",
        "手续费",
        "费率",
        "订单金额",
        "申请退款金额",
        "费率备注",
        "退款申请时间",
        "退款成功时间",
    }
)
REQUIRED = (
    "交易时间",
    "商户号",
    "微信订单号",
    "商户订单号",
    "交易类型",
    "交易状态",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "退款状态",
    "手续费",
)
SETTLE_COLUMNS = ("应结订单金额", "总金额")  # current name, legacy name
# Amount columns we do not use, still held to exactly two decimals: a bill that writes any
# amount wrongly is not one to trust.
OTHER_AMOUNTS = (
    "代金券金额",
    "企业红包金额",
    "充值券退款金额",
    "企业红包退款金额",
    "订单金额",
    "申请退款金额",
)
# Summary columns that add up a detail column we only check.
SUMMARY_OF = {
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
    "充值券退款总金额": "充值券退款金额",
    "企业红包退款总金额": "企业红包退款金额",
}
SUMMARY_FIRST = "总交易单数"
SUMMARY_REQUIRED = ("总交易单数", "退款总金额", "手续费总金额")
SUMMARY_SETTLE = ("应结订单总金额", "总交易额")
CACHE_LIMIT = 200_000
TRADE_STATES = frozenset({"SUCCESS", "REFUND", "REVOKED"})
REFUND_STATES = frozenset({"SUCCESS", "PROCESSING", "CLOSED", "ABNORMAL", "CHANGE"})


def amount_fen(text: str, *, what: str, line_no: int) -> int:
    """Yuan with exactly two decimals -> integer fen ("23.50" -> 2350, "-0.05" -> -5)."""
    return _fixed(text, 2, what=what, line_no=line_no)


def fee_milli_fen(text: str, *, what: str, line_no: int) -> int:
    """The fee, yuan with exactly five decimals -> milli-fen ("0.14100" -> 14100)."""
    return _fixed(text, 5, what=what, line_no=line_no)


def _fixed(text: str, decimals: int, *, what: str, line_no: int) -> int:
    dot = len(text) - decimals - 1
    if dot >= 1 and text[dot] == "." and text.isascii():
        whole, frac = text[:dot], text[dot + 1 :]
        if frac.isdigit() and (
            whole.isdigit() or (whole[:1] == "-" and len(whole) > 1 and whole[1:].isdigit())
        ):
            return int(whole + frac)
    # Slow path: say what is wrong.
    point = text.find(".")
    whole = text[:point] if point >= 0 else text
    digits = whole[1:] if whole.startswith("-") else whole
    if point < 1 or not (digits.isascii() and digits.isdigit()):
        raise BillRejected("row", f"line {line_no}: {what} {text!r} is not an amount")
    raise BillRejected(
        "decimals", f"line {line_no}: {what} {text!r} needs exactly {decimals} decimals"
    )


def _time(text: str, line_no: int) -> datetime:
    # yyyy-MM-dd HH:mm:ss, checked by shape, parsed by slicing (strptime is 5x slower).
    if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[10] != " ":
        raise BillRejected("row", f"line {line_no}: 交易时间 {text!r} is not yyyy-MM-dd HH:mm:ss")
    try:
        local = datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            tzinfo=CST,
        )
    except ValueError as exc:
        raise BillRejected("row", f"line {line_no}: 交易时间 {text!r}: {exc}") from exc
    return local.astimezone(UTC)


class BillParser:
    """Parse one bill: iterate ``rows(lines)``; afterwards ``summary`` holds the checked
    summary. ``mchid`` (when given) refuses rows of another merchant."""

    def __init__(self, *, mchid: str | None = None) -> None:
        self.mchid = mchid
        self.summary: BillSummary | None = None
        self.count = 0
        self.settle_fen = 0
        self.refund_fen = 0
        self.fee_milli_fen = 0
        self.other_fen: dict[str, int] = {}

    def rows(self, lines: Iterable[str]) -> Iterator[BillRow]:
        it = iter(lines)
        line_no = 0
        header: list[str] | None = None
        for raw in it:
            line_no += 1
            line = raw.rstrip("\r\n")
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            if line:
                header = line.split(",")
                break
        if header is None:
            raise BillRejected("truncated", "the file is empty")
        index = self._layout(header)
        width = len(header)
        (
            i_time,
            i_mch,
            i_txn,
            i_otn,
            i_type,
            i_state,
            i_rid,
            i_orn,
            i_refund,
            i_rstate,
            i_fee,
        ) = (index[name] for name in REQUIRED)
        i_settle = next(index[n] for n in SETTLE_COLUMNS if n in index)
        others = [(index[n], n) for n in OTHER_AMOUNTS if n in index]
        other_fen = self.other_fen = {n: 0 for _, n in others}
        seen: set[str] = set()
        mchid = self.mchid
        last_stamp, last_at = "", datetime.min.replace(tzinfo=UTC)
        # Amount texts repeat (0.00 in most columns, common prices): parse each text once.
        yuan_seen: dict[str, int] = {}
        fee_seen: dict[str, int] = {}

        def yuan_fen(text: str, what: str, line_no: int) -> int:
            value = yuan_seen.get(text)
            if value is None:
                value = amount_fen(text, what=what, line_no=line_no)
                if len(yuan_seen) < CACHE_LIMIT:
                    yuan_seen[text] = value
            return value

        def fee_of(text: str, what: str, line_no: int) -> int:
            value = fee_seen.get(text)
            if value is None:
                value = fee_milli_fen(text, what=what, line_no=line_no)
                if len(fee_seen) < CACHE_LIMIT:
                    fee_seen[text] = value
            return value

        for raw in it:
            line_no += 1
            line = raw.rstrip("\r\n")
            if not line:
                continue
            if line.startswith(SUMMARY_FIRST):
                self._summary(line, it, line_no)
                return
            # Every field starts with a backtick and none holds a comma, so splitting on
            # ",`" after the first backtick gives the values; a missing backtick shows as
            # a wrong number of fields.
            f = line[1:].split(",`") if line[0] == "`" else []
            if len(f) != width:
                fields = line.split(",")
                if len(fields) == width:
                    raise BillRejected("row", f"line {line_no}: a field has no backtick")
                raise BillRejected(
                    "truncated" if len(fields) < width else "row",
                    f"line {line_no}: {len(fields)} fields, the header has {width}",
                )
            state = f[i_state]
            if state not in TRADE_STATES:
                raise BillRejected("row", f"line {line_no}: 交易状态 {state!r}")
            if mchid is not None and f[i_mch] != mchid:
                raise BillRejected("merchant", f"line {line_no}: 商户号 {f[i_mch]!r}")
            is_refund = state == "REFUND"
            for pos, name in others:
                other_fen[name] += yuan_fen(f[pos], name, line_no)
            refund_status = f[i_rstate]
            if is_refund and refund_status not in REFUND_STATES:
                raise BillRejected("row", f"line {line_no}: 退款状态 {refund_status!r}")
            stamp = f[i_time]
            if stamp != last_stamp:  # bills are in time order: many rows share a second
                last_stamp, last_at = stamp, _time(stamp, line_no)
            row = BillRow(
                at=last_at,
                mchid=f[i_mch],
                transaction_id=f[i_txn],
                out_trade_no=f[i_otn],
                trade_type=f[i_type],
                trade_state=state,
                settle_fen=yuan_fen(f[i_settle], "应结订单金额", line_no),
                refund_id=f[i_rid] if is_refund else "",
                out_refund_no=f[i_orn] if is_refund else "",
                refund_fen=yuan_fen(f[i_refund], "退款金额", line_no),
                refund_status=refund_status if is_refund else "",
                fee_milli_fen=fee_of(f[i_fee], "手续费", line_no),
                line_no=line_no,
            )
            if (
                not row.out_trade_no
                or not row.transaction_id
                or (is_refund and not row.out_refund_no)
            ):
                raise BillRejected("row", f"line {line_no}: merchant or transaction number empty")
            key = sys.intern(row.key)  # shared with the ledger's and the HIS's key
            if key in seen:
                raise BillRejected("duplicate", f"line {line_no}: {key[2:]} appears twice")
            seen.add(key)
            self.count += 1
            self.settle_fen += row.settle_fen
            self.refund_fen += row.refund_fen
            self.fee_milli_fen += row.fee_milli_fen
            yield row
        raise BillRejected("truncated", f"no summary after line {line_no}")

    @staticmethod
    def _layout(header: list[str]) -> dict[str, int]:
        if any(name.startswith("`") for name in header):
            raise BillRejected("layout", "line 1 is a data row, not the column names")
        unknown = [name for name in header if name not in KNOWN_COLUMNS]
        if unknown:
            raise BillRejected("layout", f"unknown columns {unknown}")
        if len(set(header)) != len(header):
            raise BillRejected("layout", "a column name appears twice")
        index = {name: pos for pos, name in enumerate(header)}
        missing = [name for name in REQUIRED if name not in index]
        if missing or not any(name in index for name in SETTLE_COLUMNS):
            raise BillRejected("layout", f"missing columns {missing or list(SETTLE_COLUMNS)}")
        return index

    def _summary(self, header_line: str, it: Iterator[str], line_no: int) -> None:
        names = header_line.split(",")
        index = {name: pos for pos, name in enumerate(names)}
        settle_name = next((n for n in SUMMARY_SETTLE if n in index), None)
        if any(n not in index for n in SUMMARY_REQUIRED) or settle_name is None:
            raise BillRejected("layout", f"line {line_no}: unknown summary columns {names}")
        data: str | None = None
        for raw in it:
            line_no += 1
            line = raw.rstrip("\r\n")
            if not line:
                continue
            if data is not None:
                raise BillRejected("row", f"line {line_no}: text after the summary")
            data = line
        if data is None:
            raise BillRejected("truncated", f"no summary data after line {line_no}")
        fields = data.split(",")
        if len(fields) != len(names) or not all(x.startswith("`") for x in fields):
            raise BillRejected("truncated", "the summary data row is incomplete")
        f = [x[1:] for x in fields]
        count_text = f[index[SUMMARY_FIRST]]
        if not (count_text.isascii() and count_text.isdigit()):
            raise BillRejected("row", f"summary 总交易单数 {count_text!r}")
        summary = BillSummary(
            count=int(count_text),
            settle_fen=amount_fen(f[index[settle_name]], what=settle_name, line_no=line_no),
            refund_fen=amount_fen(f[index["退款总金额"]], what="退款总金额", line_no=line_no),
            fee_milli_fen=fee_milli_fen(
                f[index["手续费总金额"]], what="手续费总金额", line_no=line_no
            ),
        )
        details = BillSummary(self.count, self.settle_fen, self.refund_fen, self.fee_milli_fen)
        if summary != details:
            raise BillRejected("summary", f"summary {summary} but the rows add up to {details}")
        for total_name, column in SUMMARY_OF.items():
            if total_name in index and column in self.other_fen:
                stated = amount_fen(f[index[total_name]], what=total_name, line_no=line_no)
                if stated != self.other_fen[column]:
                    raise BillRejected(
                        "summary",
                        f"{total_name} {stated} fen but the rows add up to "
                        f"{self.other_fen[column]} fen",
                    )
        self.summary = summary


def parse_text(text: str, *, mchid: str | None = None) -> tuple[list[BillRow], BillSummary]:
    """A whole bill held in memory (small bills, tests)."""
    parser = BillParser(mchid=mchid)
    rows = list(parser.rows(text.splitlines()))
    assert parser.summary is not None
    return rows, parser.summary
