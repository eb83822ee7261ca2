"""Trade bills (交易账单) in WeChat Pay's exact CSV layout (spec §4.10).

Header row, detail rows, summary header, summary data; comma separated, no quoting; every field
of the detail and summary-data rows prefixed with a backtick; CRLF line endings; UTF-8 without
BOM. Amounts in yuan with 2 decimals, the fee with 5, the rate like ``0.60%``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

ALL_HEADER = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
]
SUCCESS_HEADER = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "费率备注",
]
REFUND_HEADER = [*ALL_HEADER[:14], "退款申请时间", "退款成功时间", *ALL_HEADER[14:]]
SUMMARY_ALL = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
]
SUMMARY_SUCCESS = ["总交易单数", "应结订单总金额", "手续费总金额", "订单总金额"]

# The fee rate in hundred-thousandths of the amount per fen: 0.60% of 1 fen = 0.00006 yuan,
# i.e. 6 units of 0.00001 yuan. Integer arithmetic keeps every sum exact.
FEE_UNITS_PER_FEN = 6
RATE_TEXT = "0.60%"


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def fee_text(units: int) -> str:
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // 100000}.{units % 100000:05d}"


@dataclass(frozen=True)
class BillLine:
    """One detail row: a payment (``refund_*`` empty) or a refund."""

    at: datetime  # payment success time or refund apply time
    appid: str
    mchid: str
    transaction_id: str
    out_trade_no: str
    openid: str
    trade_type: str
    trade_state: str  # SUCCESS / REFUND / REVOKED
    bank_type: str
    amount_fen: int  # 应结订单金额 (payments)
    description: str
    attach: str
    device_info: str = ""
    refund_id: str = ""
    out_refund_no: str = ""
    refund_fen: int = 0
    refund_type: str = ""
    refund_status: str = ""
    refund_success_at: datetime | None = None

    @property
    def is_refund(self) -> bool:
        return bool(self.refund_id)

    @property
    def fee_units(self) -> int:
        return (
            -self.refund_fen * FEE_UNITS_PER_FEN
            if self.is_refund
            else self.amount_fen * FEE_UNITS_PER_FEN
        )


def _row(fields: list[str]) -> str:
    return ",".join("`" + f for f in fields)


def render_bill(lines: list[BillLine], *, bill_type: str, tz: ZoneInfo) -> bytes:
    if bill_type == "SUCCESS":
        selected = [line for line in lines if not line.is_refund]
    elif bill_type == "REFUND":
        selected = [line for line in lines if line.is_refund]
    else:
        selected = list(lines)
    selected.sort(key=lambda line: (line.at, line.out_trade_no, line.out_refund_no))
    return ("\r\n".join(iter_bill(selected, bill_type=bill_type, tz=tz)) + "\r\n").encode("utf-8")


def iter_bill(selected: Iterable[BillLine], *, bill_type: str, tz: ZoneInfo) -> Iterator[str]:
    """The bill's text lines (without line ends) for lines already selected and in order:
    a bill of any size can be written out without holding it."""

    def when(at: datetime | None) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if at else ""

    header = {"SUCCESS": SUCCESS_HEADER, "REFUND": REFUND_HEADER}.get(bill_type, ALL_HEADER)
    yield ",".join(header)
    count = settle_total = refund_total = fee_total = 0
    for line in selected:
        count += 1
        settle_total += 0 if line.is_refund else line.amount_fen
        refund_total += line.refund_fen
        fee_total += line.fee_units
        settle = 0 if line.is_refund else line.amount_fen
        common = [
            when(line.at),
            line.appid,
            line.mchid,
            "0",
            line.device_info,
            line.transaction_id,
            line.out_trade_no,
            line.openid,
            line.trade_type,
            line.trade_state,
            line.bank_type,
            "CNY",
            yuan(settle),
            "0.00",
        ]
        if bill_type == "SUCCESS":
            yield (
                _row(
                    [
                        *common,
                        line.description,
                        line.attach,
                        fee_text(line.fee_units),
                        RATE_TEXT,
                        yuan(line.amount_fen),
                        "",
                    ]
                )
            )
            continue
        refund_part = [
            line.refund_id or "0",
            line.out_refund_no or "0",
            yuan(line.refund_fen),
            "0.00",
            line.refund_type,
            line.refund_status,
        ]
        tail = [
            line.description,
            line.attach,
            fee_text(line.fee_units),
            RATE_TEXT,
            yuan(settle),
            yuan(line.refund_fen),
            "",
        ]
        if bill_type == "REFUND":
            yield _row([*common, when(line.at), when(line.refund_success_at), *refund_part, *tail])
        else:
            yield _row([*common, *refund_part, *tail])
    if bill_type == "SUCCESS":
        yield ",".join(SUMMARY_SUCCESS)
        yield _row([str(count), yuan(settle_total), fee_text(fee_total), yuan(settle_total)])
    else:
        yield ",".join(SUMMARY_ALL)
        yield (
            _row(
                [
                    str(count),
                    yuan(settle_total),
                    yuan(refund_total),
                    "0.00",
                    fee_text(fee_total),
                    yuan(settle_total),
                    yuan(refund_total),
                ]
            )
        )
