"""Reconciliation benchmark (issue 11): a 1,000,000-line ALL trade bill parsed and matched
three ways (bill <-> ledger <-> HIS), streaming, in under 60 s and 1 GB; compared in the
same run with a plain pandas merge of the same data.

    .venv/bin/python -m bench.recon.bench_recon all --lines 1000000

``all`` writes the bill once (the Pay simulator's own writer, CRLF, backticks, summary) and
runs each contender in a fresh process so its peak RSS is its own:

- ``ours``: ``BillParser.rows`` over the bill file (one line at a time) fed to
  ``matching.match``, the ledger and the HIS's settlements read from their files (as a
  database cursor or the HIS bridge would hand them over). ``--ledger stream``: both
  streamed into the indexes; ``--ledger service``: as ``service.reconcile`` gets them (the
  HIS's list indexed at once and dropped, then the ledger in 24 hourly lists, each indexed
  and dropped);
  ``--ledger list``: both as whole lists first.
- ``pandas``: ``read_csv`` of the same file, backticks stripped, yuan to integer fen, the
  ledger and HIS as DataFrames, two outer merges on the key and the same difference rules
  for the classes injected here (long, short, unsettled, amount).

Differences are injected deterministically so both must find the same counts: every
100,000th movement is missing from the ledger (long), every 50,000th is missing from the
HIS (unsettled), every 250,000th has one more fen in the ledger (amount), and 7 ledger
payments are not in the bill (short).

Peak RSS is ``ru_maxrss`` of the child process (the interpreter and imports included).
Dependencies for the baseline only: ``bench/requirements.txt`` (pandas).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from frontdesk.his.port import SettlementRecord
from frontdesk.reconciliation.billfile import BillParser
from frontdesk.reconciliation.matching import LedgerIndex, index_his, index_ledger, match
from frontdesk.reconciliation.schemas import LedgerEntry
from frontdesk.sims.recon_day import Item, clean_items, payment
from frontdesk.sims.wechat_sim.pay_bill import BillLine, iter_bill

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 26)
SHORTS = 7


def _items(n: int) -> Iterator[tuple[int, Item]]:
    yield from enumerate(clean_items(DAY, n, tz=TZ))


def datetime_of(day: date) -> datetime:
    return datetime.combine(day, dtime.min, tzinfo=TZ)


def _ledger_row(e: LedgerEntry) -> str:
    at = "" if e.at is None else str(e.at.timestamp())
    return "\t".join(
        [
            e.kind,
            e.out_trade_no,
            e.out_refund_no or "",
            e.transaction_id or "",
            e.refund_id or "",
            e.trade_type,
            str(e.amount_fen),
            e.state,
            at,
            e.card_no,
            e.his_ref,
            e.his_state,
            str(e.ledger_id),
        ]
    )


def _his_row(h: SettlementRecord) -> str:
    return "\t".join(
        [h.kind, h.reference, h.his_id, h.card_no, str(h.amount_fen), str(h.at.timestamp())]
    )


LEDGER_COLUMNS = [
    "kind",
    "out_trade_no",
    "out_refund_no",
    "transaction_id",
    "refund_id",
    "trade_type",
    "amount_fen",
    "state",
    "at",
    "card_no",
    "his_ref",
    "his_state",
    "ledger_id",
]
HIS_COLUMNS = ["kind", "reference", "his_id", "card_no", "amount_fen", "at"]


def write_data(n: int, folder: Path) -> float:
    """The bill, and our ledger and the HIS's settlements as tab-separated files (what a
    database cursor would hand over row by row), with the differences injected."""
    started = time.perf_counter()
    classes: Counter[str] = Counter()
    with (
        (folder / "bill.csv").open("w", encoding="utf-8", newline="") as bill_fh,
        (folder / "ledger.tsv").open("w", encoding="utf-8", newline="") as led_fh,
        (folder / "his.tsv").open("w", encoding="utf-8", newline="") as his_fh,
    ):
        led_fh.write("\t".join(LEDGER_COLUMNS) + "\n")
        his_fh.write("\t".join(HIS_COLUMNS) + "\n")

        def bill_lines() -> Iterator[BillLine]:
            for i, item in _items(n):
                kind = item.ledger.kind if item.ledger is not None else "payment"
                if i % 100_000 == 99_999:
                    classes["long"] += 1
                elif i % 250_000 == 249_999:
                    classes["amount"] += 1
                elif i % 50_000 == 49_999:
                    classes["unsettled" if kind == "payment" else "state"] += 1
                if item.ledger is not None and i % 100_000 != 99_999:  # else long
                    entry = item.ledger
                    if i % 250_000 == 249_999:  # amount
                        entry = replace(entry, amount_fen=entry.amount_fen + 1)
                    led_fh.write(_ledger_row(entry) + "\n")
                if i % 50_000 != 49_999:  # else unsettled
                    for h in item.his:
                        his_fh.write(_his_row(h) + "\n")
                if item.bill is not None:
                    yield item.bill
            noon = datetime_of(DAY) + timedelta(hours=12)
            for k in range(SHORTS):  # short: ours and the HIS's, not in the bill
                entry, his, _ = payment(9_000_000 + k, noon, 1000, trade_type="JSAPI")
                led_fh.write(_ledger_row(entry) + "\n")
                his_fh.write(_his_row(his) + "\n")
                classes["short"] += 1

        for line in iter_bill(bill_lines(), bill_type="ALL", tz=TZ):
            bill_fh.write(line + "\r\n")
    (folder / "expected.json").write_text(json.dumps(dict(sorted(classes.items()))))
    return time.perf_counter() - started


def read_ledger(path: Path) -> Iterator[LedgerEntry]:
    with path.open(encoding="utf-8", newline="") as fh:
        next(fh)
        for line in fh:
            k, otn, orn, txn, rid, tt, amount, state, at, card, ref, his_state, lid = line.rstrip(
                "\n"
            ).split("\t")
            yield LedgerEntry(
                kind=k,
                out_trade_no=otn,
                out_refund_no=orn or None,
                transaction_id=txn or None,
                refund_id=rid or None,
                trade_type=tt,
                amount_fen=int(amount),
                state=state,
                at=datetime.fromtimestamp(float(at), tz=UTC) if at else None,
                card_no=card,
                his_ref=ref,
                his_state=his_state,
                ledger_id=int(lid),
            )


def read_his(path: Path) -> Iterator[SettlementRecord]:
    with path.open(encoding="utf-8", newline="") as fh:
        next(fh)
        for line in fh:
            kind, ref, his_id, card, amount, at = line.rstrip("\n").split("\t")
            yield SettlementRecord(
                kind=kind,
                reference=ref,
                his_id=his_id,
                card_no=card,
                amount_fen=int(amount),
                at=datetime.fromtimestamp(float(at), tz=UTC),
            )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_ours(folder: Path, ledger_mode: str) -> dict[str, Any]:
    started = time.perf_counter()
    ledger: Any = read_ledger(folder / "ledger.tsv")
    his: Any = read_his(folder / "his.tsv")
    if ledger_mode == "list":  # everything as lists at once
        ledger, his = list(ledger), list(his)
    elif ledger_mode == "service":
        # What the job and service.reconcile do: the HIS's settlements arrive as one list
        # (the HIS port gives one) and are indexed at once, the list dropped; then the
        # ledger is read as 24 lists (one per hour), each indexed and dropped.
        his = index_his(list(his))
        index: LedgerIndex = {}
        chunk: list[LedgerEntry] = []
        size = sum(1 for _ in (folder / "ledger.tsv").open(encoding="utf-8")) // 24 + 1
        for entry in ledger:
            chunk.append(entry)
            if len(chunk) == size:
                index_ledger(chunk, index)
                chunk = []
        ledger = index_ledger(chunk, index)
    parser = BillParser(mchid="1230000109")
    with (folder / "bill.csv").open("r", encoding="utf-8", newline="") as fh:
        result = match(parser.rows(fh), ledger, his, keep_matched=False)
    elapsed = time.perf_counter() - started
    classes = Counter(f.cls for f in result.findings)
    matched = sum(t.matched_count for t in result.totals.values())
    return {
        "contender": f"ours (ledger {ledger_mode})",
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
        "bill_lines": result.bill_count,
        "matched": matched,
        "differences": dict(sorted(classes.items())),
        "summary_checked": parser.summary is not None,
    }


def run_pandas(folder: Path) -> dict[str, Any]:
    import pandas as pd

    started = time.perf_counter()
    raw = pd.read_csv(folder / "bill.csv", dtype=str, keep_default_na=False)
    raw = raw[raw["交易状态"] != ""]  # the two summary rows (7 fields) come out padded
    bill = raw.apply(lambda col: col.str.slice(1))  # strip the backticks
    refund = bill["交易状态"] == "REFUND"
    settle = bill["应结订单金额"].str.replace(".", "", regex=False).astype("int64")
    refunded = bill["退款金额"].str.replace(".", "", regex=False).astype("int64")
    b = pd.DataFrame(
        {
            "key": ("r|" + bill["商户退款单号"]).where(refund, "p|" + bill["商户订单号"]),
            "bill_fen": refunded.where(refund, settle),
        }
    )
    led = pd.read_csv(folder / "ledger.tsv", sep="\t", dtype=str, keep_default_na=False)
    led = pd.DataFrame(
        {
            "key": ("r|" + led["out_refund_no"]).where(
                led["kind"] == "refund", "p|" + led["out_trade_no"]
            ),
            "ledger_fen": led["amount_fen"].astype("int64"),
        }
    )
    hs = pd.read_csv(folder / "his.tsv", sep="\t", dtype=str, keep_default_na=False)
    hs = pd.DataFrame(
        {
            "key": ("r|" + hs["reference"]).where(hs["kind"] == "refund", "p|" + hs["reference"]),
            "his_fen": hs["amount_fen"].astype("int64"),
        }
    )
    merged = b.merge(led, on="key", how="outer").merge(hs, on="key", how="outer")
    in_bill, in_led, in_his = (
        merged["bill_fen"].notna(),
        merged["ledger_fen"].notna(),
        merged["his_fen"].notna(),
    )
    long = in_bill & ~in_led
    short = in_led & ~in_bill
    amount = in_bill & in_led & (merged["bill_fen"] != merged["ledger_fen"])
    unsettled = in_bill & in_led & ~amount & ~in_his
    elapsed = time.perf_counter() - started
    classes = {
        "amount": int(amount.sum()),
        "long": int(long.sum()),
        "short": int(short.sum()),
        "unsettled": int(unsettled.sum()),
    }
    return {
        "contender": f"pandas {pd.__version__} merge (baseline)",
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
        "bill_lines": len(b),
        "matched": int((in_bill & in_led & in_his & ~amount).sum()),
        "differences": classes,
        "summary_checked": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["all", "gen", "ours", "pandas"])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--ledger", choices=["stream", "service", "list"], default="stream")
    args = parser.parse_args()
    if args.what == "gen":
        print(json.dumps({"seconds": round(write_data(args.lines, args.dir), 1)}))
        return
    if args.what == "ours":
        print(json.dumps(run_ours(args.dir, args.ledger), ensure_ascii=False))
        return
    if args.what == "pandas":
        print(json.dumps(run_pandas(args.dir), ensure_ascii=False))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gen_seconds = write_data(args.lines, folder)
        size = (folder / "bill.csv").stat().st_size
        print(
            f"bill: {args.lines} lines, {size / 2**20:.1f} MiB, data written in {gen_seconds:.1f} s"
        )
        print(f"injected differences: {(folder / 'expected.json').read_text()}")
        for extra in (
            ["ours", "--ledger", "stream"],
            ["ours", "--ledger", "service"],
            ["pandas"],
            ["ours", "--ledger", "list"],
        ):
            out = subprocess.run(
                [sys.executable, "-m", "bench.recon.bench_recon", *extra, "--dir", str(folder)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ},
            )
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
