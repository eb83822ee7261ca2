"""The 7 a.m. rush: seed PostgreSQL with 20,000 patients holding bound cards and one day's
pools of 5,000 slots, start the real app under uvicorn on 127.0.0.1, drive it with an
open-model load (constant arrival rate; latency measured from each request's intended send
time), then check the invariants in SQL. Baselines in the same run: pgbench running the same
booking SQL, and a bare FastAPI + asyncpg endpoint doing only that SQL.

    .venv/bin/python -m bench.booking_rush.run \
        --dsn postgresql://postgres@127.0.0.1:5432/frontdesk_booking --rates 250,500,1000 \
        --pages 300 --recovery 2000,5,200

Each run prints one JSON line: attempts/s, successful bookings/s, p50/p99/p99.9 from the
intended send time, the latency of shed answers (429/503) apart from the served ones, the
server's CPU per attempt (from /proc, the uvicorn processes only) and, for the full app,
the invariants checked in SQL. ``--pages`` adds a read-storm run (schedule pages and slot
lists); ``--recovery`` an overload followed at once by 10 s at a normal rate, reported per
second with the time until every second is served again (p99 <= 100 ms, nothing shed).

It DROPS and recreates schema public of that database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from itsdangerous import TimestampSigner

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 20_000
SCHEDULES = 200
SLOTS_PER_SCHEDULE = 25  # 5,000 slots
SECRET = "bench-secret-key-0123456789abcdef0123456789"
TZ = ZoneInfo("Asia/Shanghai")
APP_PORT, BARE_PORT = 8711, 8712


def visit_day() -> date:
    return datetime.now(TZ).date() + timedelta(days=1)


async def prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    await conn.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    migrate = (
        "import asyncio\nfrom sqlalchemy.ext.asyncio import create_async_engine\n"
        "from frontdesk.core import migrate\n"
        f"e = create_async_engine({dsn.replace('postgresql://', 'postgresql+asyncpg://')!r})\n"
        "asyncio.run(migrate.upgrade(e))\n"
    )
    subprocess.run([sys.executable, "-c", migrate], check=True, env=env, cwd=ROOT)
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    day = visit_day()
    await conn.copy_records_to_table(
        "catalog_department",
        records=[(1, "GIM", "全科医学科", "", 0, now)],
        columns=["id", "code", "name", "intro", "position", "synced_at"],
    )
    await conn.copy_records_to_table(
        "catalog_doctor",
        records=[
            (n, f"D{n:04d}", "GIM", f"医生{n}", "主治医师", "", "", "", now)
            for n in range(1, SCHEDULES + 1)
        ],
        columns=[
            "id",
            "code",
            "department_code",
            "name",
            "title",
            "specialty",
            "intro",
            "photo_url",
            "synced_at",
        ],
    )
    await conn.copy_records_to_table(
        "catalog_schedule",
        records=[
            (
                n,
                f"S{day:%Y%m%d}D{n:04d}AM",
                f"D{n:04d}",
                "GIM",
                day,
                "am",
                "ordinary",
                1500,
                "open",
                1,
                now,
            )
            for n in range(1, SCHEDULES + 1)
        ],
        columns=[
            "id",
            "his_schedule_id",
            "doctor_code",
            "department_code",
            "on_date",
            "period",
            "level",
            "fee_fen",
            "status",
            "pool_version",
            "synced_at",
        ],
    )
    start = datetime.combine(day, datetime.min.time().replace(hour=8), tzinfo=TZ)
    slots = []
    for s in range(1, SCHEDULES + 1):
        for q in range(SLOTS_PER_SCHEDULE):
            at = (start + timedelta(minutes=10 * q)).astimezone(UTC)
            slots.append((s, q + 1, at, at + timedelta(minutes=10), True))
    await conn.copy_records_to_table(
        "slot",
        records=slots,
        columns=["schedule_id", "sequence_no", "starts_at", "ends_at", "his_available"],
    )
    await conn.copy_records_to_table(
        "card",
        records=[
            (
                i,
                f"C{i:08d}",
                "self_pay",
                "张*",
                "3201**********1234",
                "138****5678",
                "active",
                None,
                now,
                now,
            )
            for i in range(1, PATIENTS + 1)
        ],
        columns=[
            "id",
            "card_no",
            "card_type",
            "holder_name_masked",
            "id_number_masked",
            "phone_masked",
            "status",
            "merged_into_card_no",
            "verified_at",
            "created_at",
        ],
    )
    await conn.copy_records_to_table(
        "card_binding",
        records=[(f"o-bench-{i:06d}", i, "self", True, now) for i in range(1, PATIENTS + 1)],
        columns=["openid", "card_id", "relationship", "is_active", "bound_at"],
    )
    # the baselines' scratch tables: the same SQL, nothing else
    await conn.execute(
        "CREATE TABLE bench_slot (id BIGINT PRIMARY KEY, booking_id BIGINT);"
        "CREATE TABLE bench_booking (id BIGSERIAL PRIMARY KEY, slot_id BIGINT NOT NULL,"
        " card_id BIGINT NOT NULL);"
    )
    await conn.execute(
        "INSERT INTO bench_slot SELECT g, NULL FROM generate_series(1, $1) g",
        SCHEDULES * SLOTS_PER_SCHEDULE,
    )
    for table in ("slot", "card", "card_binding", "catalog_schedule", "catalog_doctor"):
        await conn.execute(f"ANALYZE {table}")
    await conn.close()


async def reset(dsn: str) -> None:
    """Between runs: every slot free again, bookings and side rows gone."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("UPDATE slot SET booking_id = NULL WHERE booking_id IS NOT NULL")
    await conn.execute(
        "TRUNCATE booking, booking_request, outbox_job, outbox_attempt, rate_counter"
    )
    await conn.execute("UPDATE bench_slot SET booking_id = NULL WHERE booking_id IS NOT NULL")
    await conn.execute("TRUNCATE bench_booking")
    await conn.close()


def cookie(openid: str) -> str:
    signer = TimestampSigner(SECRET.encode(), salt="wechat-openid-session")
    return signer.sign(openid).decode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def start_server(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    for _ in range(200):
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}/healthz"
                    if port == APP_PORT
                    else f"http://127.0.0.1:{port}/docs",
                    timeout=0.5,
                ).status_code
                < 500
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on {port} did not start")


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator shares
    the 2 cores with the server, and httpx costs more CPU per request than the app under
    test (it, not the server, capped an earlier attempt at ~100 requests/s)."""

    def __init__(self, port: int, max_connections: int = 1024) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.max = max_connections
        self.freed = asyncio.Condition()

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.open < self.max:
                self.open += 1
                try:
                    return await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    self.open -= 1
                    raise
            async with self.freed:
                await self.freed.wait()

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> int:
        reader, writer = await self._conn()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        try:
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            self.open -= 1
            async with self.freed:
                self.freed.notify()
            raise
        if close:
            writer.close()
            self.open -= 1
        else:
            self.idle.append((reader, writer))
        async with self.freed:
            self.freed.notify()
        return status

    async def close(self) -> None:
        for _r, w in self.idle:
            w.close()


async def load(
    port: int,
    *,
    rate: float,
    seconds: float,
    bare: bool,
    seed: int,
    then_rate: float = 0,
    then_seconds: float = 0,
) -> dict[str, Any]:
    """Open model: request i is due at t0 + i/rate whatever happened before; its latency is
    measured from that due time, so a server that falls behind shows it. With
    ``then_rate``, the load drops to that rate for ``then_seconds`` right after (recovery
    from an overload), and each second of the run is reported on its own."""
    rng = random.Random(seed)
    dues = [i / rate for i in range(int(rate * seconds))]
    if then_rate:
        dues += [seconds + i / then_rate for i in range(int(then_rate * then_seconds))]
    n = len(dues)
    results: list[tuple[float, str, float]] = []  # (due offset, status, latency)
    client = RawClient(port)
    cookies = {}
    t0 = time.perf_counter() + 0.3

    async def one(i: int) -> None:
        patient = rng.randrange(1, PATIENTS + 1)
        slot = rng.randrange(1, SCHEDULES * SLOTS_PER_SCHEDULE + 1)
        if patient not in cookies:
            cookies[patient] = cookie(f"o-bench-{patient:06d}")
        due = t0 + dues[i]
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if bare:
                status = await client.post(
                    "/book", json.dumps({"slot_id": slot, "card_id": patient}).encode(), {}
                )
            else:
                status = await client.post(
                    "/api/patient/booking/bookings",
                    json.dumps({"card_id": patient, "slot_id": slot}).encode(),
                    {
                        "Idempotency-Key": f"k{seed}-{i:08d}",
                        "Cookie": f"fd_wx_session={cookies[patient]}",
                    },
                )
            outcome = str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = type(exc).__name__
        results.append((dues[i], outcome, time.perf_counter() - due))

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return summarise(
        results, rate=rate, seconds=seconds, elapsed=elapsed, per_second=bool(then_rate)
    )


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(p * len(values)))], 1)


def summarise(
    results: list[tuple[float, str, float]],
    *,
    rate: float,
    seconds: float,
    elapsed: float,
    per_second: bool,
) -> dict[str, Any]:
    latencies = [lat for _d, _s, lat in results]
    statuses = Counter(s for _d, s, _l in results)
    shed = [lat for _d, s, lat in results if s in ("429", "503")]
    served = [lat for _d, s, lat in results if s not in ("429", "503")]
    ok = statuses.get("201", 0)
    out: dict[str, Any] = {
        "target_rate": rate,
        "attempts": len(results),
        "elapsed_s": round(elapsed, 2),
        "attempts_per_s": round(len(results) / elapsed, 1),
        "answered_not_shed_per_s": round(len(served) / elapsed, 1),
        "bookings_per_s": round(ok / elapsed, 1),
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "p999_ms": _pct(latencies, 0.999),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else 0.0,
        "served_p99_ms": _pct(served, 0.99),
        "shed_p50_ms": _pct(shed, 0.50),
        "shed_p99_ms": _pct(shed, 0.99),
        "statuses": dict(statuses),
    }
    if per_second:
        seconds_out = []
        for sec in range(int(max(d for d, _s, _l in results)) + 1):
            bucket = [(s, lat) for d, s, lat in results if sec <= d < sec + 1]
            seconds_out.append(
                {
                    "second": sec,
                    "phase": "overload" if sec < seconds else "normal",
                    "sent": len(bucket),
                    "p99_ms": _pct([lat for _s, lat in bucket], 0.99),
                    "shed": sum(1 for s, _l in bucket if s in ("429", "503")),
                    "ok_201": sum(1 for s, _l in bucket if s == "201"),
                }
            )
        out["per_second"] = seconds_out
        # recovered: the first second after the overload from which every second answers
        # its requests with p99 <= 100 ms and sheds none
        after = [b for b in seconds_out if b["phase"] == "normal"]
        recovered = next(
            (
                b["second"] - seconds
                for k, b in enumerate(after)
                if all(x["p99_ms"] <= 100 and x["shed"] == 0 for x in after[k:])
            ),
            None,
        )
        out["recovered_after_s"] = recovered
    return out


async def pages(port: int, *, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    """The read storm: signed-in patients open doctors' 14-day schedule pages (H5) and
    sessions' slot lists (JSON API) at a constant arrival rate, half each."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    results: list[tuple[float, str, float]] = []
    client = RawClient(port)
    t0 = time.perf_counter() + 0.3

    async def one(i: int) -> None:
        patient = rng.randrange(1, PATIENTS + 1)
        n_sched = rng.randrange(1, SCHEDULES + 1)
        path = (
            f"/h5/booking/doctors/D{n_sched:04d}"
            if i % 2
            else f"/api/patient/booking/schedules/{n_sched}/slots"
        )
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            status = await client.post(
                path,
                b"",
                {"Cookie": f"fd_wx_session={cookie(f'o-bench-{patient:06d}')}"},
                method="GET",
            )
            outcome = str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = type(exc).__name__
        results.append((i / rate, outcome, time.perf_counter() - due))

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await client.close()
    out = summarise(results, rate=rate, seconds=seconds, elapsed=elapsed, per_second=False)
    out["kind"] = "pages"
    return out


async def invariants(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    live = "status IN ('booked', 'held', 'checked_in', 'no_show')"  # a hold holds its slot
    q = {
        "slot_given_twice": f"SELECT count(*) FROM (SELECT slot_id FROM booking WHERE {live} "
        "GROUP BY slot_id HAVING count(*) > 1) t",
        "slot_mismatch": "SELECT count(*) FROM booking b LEFT JOIN slot s ON s.id = b.slot_id "
        f"AND s.booking_id = b.id WHERE b.{live} AND s.id IS NULL",
        "slot_orphan": "SELECT count(*) FROM slot s LEFT JOIN booking b ON b.id = s.booking_id "
        f"AND b.{live} WHERE s.booking_id IS NOT NULL AND b.id IS NULL",
        "card_day_twice": f"SELECT count(*) FROM (SELECT card_id FROM booking WHERE {live} "
        "GROUP BY card_id, doctor_code, on_date HAVING count(*) > 1) t",
        "card_over_open_limit": "SELECT count(*) FROM (SELECT card_id FROM booking WHERE "
        "status = 'booked' GROUP BY card_id HAVING count(*) > 3) t",
        "booking_without_his_registration_job": "SELECT count(*) FROM booking b WHERE NOT EXISTS "
        "(SELECT 1 FROM outbox_job j WHERE j.dedupe_key = 'booking.register:' || b.id)",
        "bookings": "SELECT count(*) FROM booking",
    }
    out = {k: int(await conn.fetchval(sql)) for k, sql in q.items()}
    await conn.close()
    return out


def pgbench(dsn: str, clients: int, seconds: int) -> str:
    script = (
        "\\set s random(1, 5000)\n\\set c random(1, 20000)\nBEGIN;\n"
        "INSERT INTO bench_booking (slot_id, card_id) VALUES (:s, :c) RETURNING id AS b \\gset\n"
        "UPDATE bench_slot SET booking_id = :b WHERE id = :s AND booking_id IS NULL;\nEND;\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", f.name, dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line for line in out.splitlines() if line.startswith("tps"))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rates", default="250,500,1000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--overload", type=float, default=0, help="an extra run at this rate")
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn processes for the full app")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--pages", type=float, default=0, help="a schedule-page run at this rate")
    ap.add_argument(
        "--recovery",
        default="",
        help="OVERLOAD_RATE,SECONDS,NORMAL_RATE: overload, then 10 s at the normal rate",
    )
    args = ap.parse_args()
    dsn = args.dsn
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "runs": []}
    await prepare(dsn)
    if not args.skip_baselines:
        results["pgbench_16_clients"] = pgbench(dsn, 16, 10)
    await reset(dsn)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "FRONTDESK_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
        "FRONTDESK_SECRET_KEY": SECRET,
        "FRONTDESK_DB_POOL_SIZE": str(args.pool),
        "FRONTDESK_DB_MAX_OVERFLOW": "0",
        "FRONTDESK_LOG_LEVEL": "WARNING",
        # one load generator = one IP: the per-IP limit would refuse the whole test
        "FRONTDESK_BOOKING_ATTEMPTS_PER_MINUTE_IP": "100000000",
        "BENCH_DSN": dsn,
        "BENCH_POOL": str(args.pool),
    }
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    rates = [float(r) for r in args.rates.split(",")] + ([args.overload] if args.overload else [])
    servers = [
        ("bare", [*uvicorn, "--port", str(BARE_PORT), "bench.booking_rush.bare:app"], BARE_PORT),
        (
            "full",
            [
                *uvicorn,
                "--port",
                str(APP_PORT),
                "--workers",
                str(args.workers),
                "--factory",
                "frontdesk.web.factory:app_from_env",
            ],
            APP_PORT,
        ),
    ]
    for kind, cmd, port in servers[1:] if args.skip_baselines else servers:
        proc = start_server(cmd, env, port)
        try:
            # warm-up (connections, caches, imports), not measured
            await load(port, rate=50, seconds=2, bare=kind == "bare", seed=1)
            plan: list[tuple[float, float, float]] = [(r, args.seconds, 0) for r in rates]
            if args.recovery and kind == "full":
                over, secs, normal = (float(x) for x in args.recovery.split(","))
                plan.append((over, secs, normal))
            if args.pages and kind == "full":
                cpu0 = cpu_seconds(proc.pid)
                run = await pages(port, rate=args.pages, seconds=args.seconds, seed=7)
                run["server_cpu_ms_per_attempt"] = round(
                    1000 * (cpu_seconds(proc.pid) - cpu0) / run["attempts"], 2
                )
                print(json.dumps(run, ensure_ascii=False), flush=True)
                results["runs"].append(run)
            for rate, secs, then in plan:
                await reset(dsn)
                cpu0, gen0 = cpu_seconds(proc.pid), time.process_time()
                run = await load(
                    port,
                    rate=rate,
                    seconds=secs,
                    bare=kind == "bare",
                    seed=int(rate),
                    then_rate=then,
                    then_seconds=10 if then else 0,
                )
                run["server_cpu_ms_per_attempt"] = round(
                    1000 * (cpu_seconds(proc.pid) - cpu0) / run["attempts"], 2
                )
                # the load generator's own CPU: it shares the 2 cores with the server
                run["loadgen_cpu_ms_per_attempt"] = round(
                    1000 * (time.process_time() - gen0) / run["attempts"], 2
                )
                run["kind"] = kind
                if kind == "full":
                    run["invariants"] = await invariants(dsn)
                print(json.dumps(run, ensure_ascii=False), flush=True)
                results["runs"].append(run)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    try:  # the generator on uvloop spends less of the shared cores than the server it drives
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(main())
    else:
        uvloop.run(main())
