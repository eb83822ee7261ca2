"""Benchmark: the report list and a 3-year trend for a card with ~300 reports, in a large
demo hospital, from the local copy and through the bridge.

    PYTHONPATH=src:. .venv/bin/python bench/reports/bench_reports.py \
        [--size large] [--his-db var/bench/his-large.db] [--requests 200]

What runs, all in this one process on the machine's 2 cores:

- the demo HIS (``--size large``: 200,000 patients, about 2 million reports, on its own
  SQLite file; seeded once and reused), plus 290 more reviewed reports for card
  6100000001 so that it has 300 over three years;
- the front app (``create_app``) on its own SQLite database, reached with httpx over
  ASGITransport; the patient signs in through the WeChat simulator's OAuth and binds the
  card through the accounts service;
- the real bridge client (``HttpHisGateway``: signing, verification, JSON) to the demo HIS
  over ASGITransport, so "through the bridge" includes the HIS's own work and no network.

"Server time" is the wall time of one request measured around the in-process call
(routing, scope, cache or HIS, audit row, commit, template rendering). Requests are sent
one after another (no concurrency), after 10 warm-up requests per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from tests.sims.wechat_env import build_wechat_env
from tests.wechat.test_oauth import sign_in

from frontdesk.accounts import service as accounts
from frontdesk.accounts.schemas import BindRequest, Relationship
from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.clock import Clock
from frontdesk.core.database import create_engine
from frontdesk.core.settings import Settings
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim import seed as seeding
from frontdesk.sims.his_sim.app import create_his_sim_app, seed, sim_state

CARD = "6100000001"
TARGET_REPORTS = 300


async def ensure_his(his_db: Path, size: str, today: Any) -> Any:
    url = f"sqlite+aiosqlite:///{his_db}"
    his_app = create_his_sim_app(database_url=url, size=size, key_id="bench", secret="b" * 32)
    state = sim_state(his_app)
    fresh = not his_db.exists()
    if not fresh:
        async with state.engine.connect() as conn:
            patients = (await conn.execute(select(func.count()).select_from(m.patient))).scalar()
        fresh = patients != seeding.SIZES[size].patients
    if fresh:
        started = time.perf_counter()
        counts = await seed(his_app, size=size, today=today)
        print(f"seeded the {size} demo HIS in {time.perf_counter() - started:.0f} s: {counts}")
    async with state.engine.begin() as conn:
        have = (
            await conn.execute(
                select(func.count()).select_from(m.report).where(m.report.c.card_no == CARD)
            )
        ).scalar_one()
        if have < TARGET_REPORTS:
            doctors = [{"department_name": name} for _, name, _ in seeding.DEPARTMENTS]
            rows = list(
                seeding.iter_reports(
                    random.Random(7), CARD, TARGET_REPORTS - have, today, doctors, 900_000_000
                )
            )
            await conn.execute(m.report.insert(), rows)
        total = (await conn.execute(select(func.count()).select_from(m.report))).scalar_one()
        mine = (
            await conn.execute(
                select(func.count()).select_from(m.report).where(m.report.c.card_no == CARD)
            )
        ).scalar_one()
    print(f"demo HIS: {total:,} reports; card {CARD} has {mine}")
    return his_app


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def timed(client: httpx.AsyncClient, url: str, n: int, warmup: int = 10) -> dict[str, Any]:
    for _ in range(warmup):
        response = await client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return {
        "n": n,
        "p50": statistics.median(times),
        "p95": percentile(times, 95),
        "p99": percentile(times, 99),
        "max": max(times),
        "bytes": len(response.content),
    }


async def main(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock("Asia/Shanghai")
    his_db = Path(args.his_db) if args.his_db else work / f"his-{args.size}.db"
    his_app = await ensure_his(his_db, args.size, clock.today())
    front_db = work / "front.db"
    front_db.unlink(missing_ok=True)
    results: dict[str, dict[str, Any]] = {}
    # (local copy kept for, bodies fetched from the HIS at once)
    for cache_seconds, concurrency in ((900, 8), (0, 8), (0, 1)):
        settings = Settings(
            env="test",
            database_url=f"sqlite+aiosqlite:///{front_db}",
            secret_key="x" * 40,
            reports_cache_seconds=cache_seconds,
            reports_fetch_concurrency=concurrency,
            _env_file=None,
        )
        engine = create_engine(settings.database_url)
        await migrate.upgrade(engine)
        await engine.dispose()
        container = build_container(settings, clock=clock)
        env = build_wechat_env(container, clock)  # type: ignore[arg-type]
        his_http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=his_app), base_url="http://his"
        )
        container.services["his"] = HttpHisGateway(
            base_url="http://his", key_id="bench", secret="b" * 32, client=his_http
        )
        try:
            user = env.sim.add_user("基准", following=True)
            await sign_in(env, user.openid, next_url="/h5/")
            async with sim_state(his_app).engine.connect() as conn:
                patient = (
                    await conn.execute(
                        select(m.patient.c.name, m.patient.c.id_number)
                        .join(m.card, m.card.c.patient_id == m.patient.c.id)
                        .where(m.card.c.card_no == CARD)
                    )
                ).one()
            async with container.db.session() as s:
                now = clock.now()
                if await accounts.consent_version(s, openid=user.openid) is None:
                    await accounts.accept_notice(s, openid=user.openid, version="2026-11", now=now)
                await accounts.start_binding(
                    s,
                    his=container.services["his"],
                    sms=None,
                    openid=user.openid,
                    request=BindRequest(
                        card_no=CARD,
                        holder_name=patient.name,
                        id_or_phone_last4=patient.id_number[-4:],
                        relationship=Relationship.self_,
                    ),
                    policy=accounts.BindingPolicy(sms_enabled=False),
                    secret=settings.secret_key.get_secret_value(),
                    now=now,
                )
            phone = env.front
            listing = await phone.get("/h5/reports")
            assert listing.status_code == 200, listing.text[:500]
            count_text = listing.text.split("共 ", 1)[1].split(" 份", 1)[0]
            labs = await container.services["his"].reports(
                card_no=CARD, since=clock.today() - timedelta(days=3 * 365)
            )
            lab = next(s for s in labs if s.kind.value == "lab" and s.title == "肝功能")
            trend_url = f"/h5/reports/{lab.report_id}/trend/ALT"
            trend = await phone.get(trend_url)
            assert trend.status_code == 200, trend.text[:500]
            points = trend.text.count('<g class="point')
            where = (
                "from cache"
                if cache_seconds
                else f"through the bridge, {concurrency} body fetch(es) at a time"
            )
            print(f"[{where}] list shows {count_text} reports; ALT trend has {points} points")
            n = args.requests if cache_seconds else max(20, args.requests // 4)
            if args.profile and cache_seconds:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
                await timed(phone, trend_url if args.profile == "trend" else args.profile, 30, 0)
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
            if concurrency == 8:
                results[f"list (page 1 of 6), {where.split(',')[0]}"] = await timed(
                    phone, "/h5/reports", n
                )
                results[f"list (page 6 of 6), {where.split(',')[0]}"] = await timed(
                    phone, "/h5/reports?page=6", max(20, n // 2)
                )
                results[f"report page (lab, with changes), {where}"] = await timed(
                    phone, f"/h5/reports/{lab.report_id}", max(20, n // 2)
                )
            results[f"trend 3 years, {where}"] = await timed(phone, trend_url, n)
        finally:
            await his_http.aclose()
            await env.aclose()
            await container.aclose()
            front_db.unlink(missing_ok=True)
    await sim_state(his_app).engine.dispose()
    print()
    print("| scenario | requests | p50 ms | p95 ms | p99 ms | max ms | page bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['max']:.1f} | {r['bytes']:,} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--size", default="large", choices=sorted(seeding.SIZES))
    parser.add_argument("--his-db", default="")
    parser.add_argument("--workdir", default="var/bench")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--profile", default="", help="profile 30 requests of this URL")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
