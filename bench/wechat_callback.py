"""Benchmark: WeChat callback handling in safe (AES) mode against a real uvicorn.

Open-model load: requests are *scheduled* at a constant rate and each latency is measured
from its intended send time, so a slow server cannot slow the generator down and hide its
own queueing (no coordinated omission). Every message is a distinct text message (new
MsgId): signature check, msg_signature, AES decrypt, XML parse, inbox insert, message-board
row, encrypted reply. Messages are prepared before the run so the generator spends its CPU
on sending only (the machine has two cores shared by server, database and generator).

    python bench/wechat_callback.py --rate 200 --seconds 30 [--database-url postgresql+asyncpg://...]

Writes bench/results/wechat_callback.md (appends a section per run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from frontdesk.core.settings import Settings  # noqa: E402
from frontdesk.sims.wechat_sim.platform import SimConfig, SimPlatform  # noqa: E402

IN_FLIGHT = 64
RESULTS = ROOT / "bench" / "results" / "wechat_callback.md"


def prepare(n: int, settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    sim = SimPlatform(
        SimConfig(
            appid=settings.wechat_appid,
            token=settings.wechat_token.get_secret_value(),
            encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
            callback_mode="safe",
        )
    )
    now = int(time.time())
    requests = []
    for i in range(n):
        fields: dict[str, str | int] = {
            "ToUserName": sim.config.original_id,
            "FromUserName": f"oBENCH{i % 500:022d}",
            "CreateTime": now,
            "MsgType": "text",
            "Content": f"请问第{i}号什么时候就诊",
            "MsgId": 7_000_000_000_000_000_000 + i,
        }
        requests.append(sim.signed_request(fields, mode="safe", timestamp=now))
    return requests


async def run_load(
    host: str, port: int, requests: list[tuple[dict[str, str], bytes]], rate: float
) -> tuple[list[float], int, float]:
    """IN_FLIGHT keep-alive connections take requests in order at their scheduled times.

    A raw HTTP/1.1 client on purpose: an httpx client used ~2.5-9 ms of CPU per request
    here, so the generator, not the server, set the pace on two shared cores.
    """
    raw = [
        (
            f"POST /wechat/callback?{urlencode(query)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for query, body in requests
    ]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    start = time.perf_counter() + 0.5

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(raw):
                i = next_index
                next_index += 1
                intended = start + i / rate
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(raw[i])
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - intended)
                if not head.startswith(b"HTTP/1.1 200") or b"<Encrypt>" not in body:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(IN_FLIGHT)))
    return latencies, errors, time.perf_counter() - start


def server_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the server and its worker processes."""
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


async def reset_schema(url: str) -> None:
    import sqlalchemy as sa

    from frontdesk.core.database import create_engine

    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-wechat-")
    db_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
    env = {
        **os.environ,
        "FRONTDESK_DATABASE_URL": db_url,
        "FRONTDESK_LOG_LEVEL": "WARNING",
        "FRONTDESK_WECHAT_CALLBACK_MODE": "safe",
        "PYTHONPATH": str(ROOT / "src"),
    }
    settings = Settings(_env_file=None, database_url=db_url)
    if db_url.startswith("postgresql"):
        asyncio.run(reset_schema(db_url))  # an empty schema: repeatable runs
    subprocess.run(
        [sys.executable, "-m", "frontdesk", "db", "upgrade"], env=env, check=True, cwd=ROOT
    )
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    n = int(args.rate * args.seconds)
    requests = prepare(n, settings)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frontdesk",
            "serve",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # CPU of the server process per message tells capacity apart from a busy machine.
        proc = psutil.Process(server.pid)
        cpu_before = server_cpu(proc)
        me = psutil.Process()
        my_cpu_before = sum(me.cpu_times()[:2])
        latencies, errors, elapsed = asyncio.run(
            run_load("127.0.0.1", args.port, requests, args.rate)
        )
        server_cpu_ms = (server_cpu(proc) - cpu_before) / len(requests) * 1000
        generator_cpu_ms = (sum(me.cpu_times()[:2]) - my_cpu_before) / len(requests) * 1000
    finally:
        server.terminate()
        server.wait(timeout=10)

    achieved = len(latencies) / elapsed
    p50, p95, p99 = pct(latencies, 50), pct(latencies, 95), pct(latencies, 99)
    worst = max(latencies) * 1000
    ok = errors == 0 and p99 < 50 and achieved >= 0.98 * args.rate
    database = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite (WAL)"
    lines = [
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {database} · {args.rate:g} msg/s "
        f"for {args.seconds:g} s\n",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; uvicorn {args.workers} worker(s); generator on the "
        f"same machine; "
        f"load average before the run {load_before}",
        f"- messages: {len(latencies)} (safe mode, each new), errors: {errors}",
        f"- achieved rate: {achieved:.1f} msg/s; CPU per message: server {server_cpu_ms:.2f} ms, "
        f"generator {generator_cpu_ms:.2f} ms "
        f"(load average after the run {' '.join(f'{x:.2f}' for x in os.getloadavg())})",
        f"- latency from intended send time: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms, max {worst:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms",
        f"- target (200 msg/s sustained, p99 < 50 ms): **{'met' if ok else 'NOT met'}**",
    ]
    text = "\n".join(lines) + "\n"
    if not RESULTS.exists():
        RESULTS.write_text(
            "# WeChat callback benchmark (safe mode)\n\nProduced by "
            "`bench/wechat_callback.py`; newest runs last.\n",
            encoding="utf-8",
        )
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(text)
    print(text)


if __name__ == "__main__":
    main()
