"""Console pages: staff admin, audit log viewer and export, integration health, dashboard."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console import auditlog, dashboard, health, service
from frontdesk.console.models import Role, StaffSession, StaffUser
from frontdesk.core import audit, outbox
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.core.i18n import translate
from tests.console.conftest import (
    PASSWORD,
    Staff,
    audit_rows,
    count_rows,
    create_staff,
    live_sessions,
    post_login,
    reload_staff,
    sign_in,
)

NEW_STAFF = {
    "username": "bob.w",
    "display_name": "王小明",
    "role": "cashier",
    "password": "a long enough password",
}


# --------------------------------------------------------------------------- staff admin


async def test_an_admin_creates_staff_who_then_signs_in_with_the_enrolled_code(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: object
) -> None:
    admin = await create_staff(db, clock)
    csrf = await sign_in(client, clock, admin)

    page = await client.post("/console/staff", data={**NEW_STAFF, "csrf_token": csrf})

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert '<svg width="' in page.text
    assert 'class="qr"' in page.text
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None
    assert f"secret={secret.group(1)}" in page.text
    bob = (await db.execute(select(StaffUser).where(StaffUser.username == "bob.w"))).scalar_one()
    assert (bob.role, bob.display_name, bob.totp_secret) == ("cashier", "王小明", secret.group(1))
    assert bob.password_hash.startswith("$argon2id$")
    assert "a long enough password" not in bob.password_hash
    created = (await audit_rows(db, action="staff.create"))[-1]
    assert (created.actor, created.record_id) == (f"staff:{admin.id}", str(bob.id))

    clock.advance(seconds=30)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as bobs:
        response = await post_login(
            bobs,
            username="bob.w",
            password="a long enough password",
            code=service.totp_code(secret.group(1), clock.now()),
        )
        assert response.status_code == 303
        assert (await bobs.get("/console/")).status_code == 200


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"username": "Bob"}, 422, "username"),
        ({"username": "b"}, 422, "username"),
        ({"username": "bob'; drop table staff_user;--"}, 422, "username"),
        ({"password": "short"}, 422, "password"),
        ({"password": "x" * 129}, 422, "password"),
        ({"role": "superuser"}, 422, "role"),
        ({"role": ""}, 422, "role"),
        ({"display_name": "  "}, 422, "display_name"),
        ({"display_name": "bad\x00name"}, 422, "display_name"),
        ({"username": "alice"}, 409, "username"),
    ],
)
async def test_bad_staff_forms_are_refused_and_add_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    change: dict[str, str],
    status: int,
    field: str,
) -> None:
    admin = await create_staff(db, clock)
    csrf = await sign_in(client, clock, admin)
    before = (await count_rows(db, StaffUser), await count_rows(db, AuditEntry))

    response = await client.post("/console/staff", data={**NEW_STAFF, **change, "csrf_token": csrf})

    assert response.status_code == status
    assert 'data-testid="staff-error"' in response.text
    assert translate(f"console.field.{field}", "zh-CN") in response.text
    assert (await count_rows(db, StaffUser), await count_rows(db, AuditEntry)) == before


async def test_resetting_totp_retires_the_old_secret_and_every_session(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: object
) -> None:
    admin = await create_staff(db, clock)
    bob = await create_staff(db, clock, username="bob", role=Role.cashier)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as bobs:
        await sign_in(bobs, clock, bob)
        csrf = await sign_in(client, clock, admin)

        page = await client.post(f"/console/staff/{bob.id}/reset-totp", data={"csrf_token": csrf})

        assert page.status_code == 200
        user = await reload_staff(db, bob.id)
        assert user.totp_secret != bob.secret
        assert user.totp_secret in page.text
        assert user.totp_last_step is None
        assert await live_sessions(db, bob.id) == 0
        assert (await bobs.get("/console/")).status_code == 303
        clock.advance(seconds=30)
        old = await post_login(
            bobs, username="bob", password=PASSWORD, code=service.totp_code(bob.secret, clock.now())
        )
        assert old.status_code == 401
        new = Staff(id=bob.id, username="bob", secret=user.totp_secret, role=Role.cashier)
        await sign_in(bobs, clock, new)
        [reset] = await audit_rows(db, action="staff.totp_reset")
        assert (reset.actor, reset.record_id) == (f"staff:{admin.id}", str(bob.id))


async def test_an_admin_cannot_disable_their_own_account(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    csrf = await sign_in(client, clock, admin)

    response = await client.post(f"/console/staff/{admin.id}/disable", data={"csrf_token": csrf})

    assert response.status_code == 422
    assert (await reload_staff(db, admin.id)).disabled_at is None
    assert await live_sessions(db, admin.id) == 1
    assert await audit_rows(db, action="staff.disable") == []


async def test_disable_then_enable_and_unknown_ids(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    bob = await create_staff(db, clock, username="bob", role=Role.cashier)
    csrf = await sign_in(client, clock, admin)

    assert (
        await client.post(f"/console/staff/{bob.id}/disable", data={"csrf_token": csrf})
    ).status_code == 303
    assert (await reload_staff(db, bob.id)).disabled_at == clock.now()
    assert (
        await client.post(f"/console/staff/{bob.id}/enable", data={"csrf_token": csrf})
    ).status_code == 303
    assert (await reload_staff(db, bob.id)).disabled_at is None
    missing = await client.post("/console/staff/999999/disable", data={"csrf_token": csrf})
    assert missing.status_code == 404
    not_a_number = await client.post("/console/staff/abc/disable", data={"csrf_token": csrf})
    assert not_a_number.status_code == 422
    actions = [
        (await audit_rows(db, action=a))[0].record_id for a in ("staff.disable", "staff.enable")
    ]
    assert actions == [str(bob.id), str(bob.id)]


async def test_the_staff_list_searches_and_pages(db: AsyncSession, clock: FrozenClock) -> None:
    for n in range(7):
        await service.create_staff(
            db,
            username=f"nurse{n}",
            display_name=f"护士{n}",
            role="customer_service",
            password=PASSWORD,
            now=clock.now(),
            actor="test",
        )
    await create_staff(db, clock, username="zed")

    first = await service.list_staff(db, search="NURSE", page=1, page_size=5)
    second = await service.list_staff(db, search="nurse", page=2, page_size=5)
    by_name = await service.list_staff(db, search="护士3")
    wildcard = await service.list_staff(db, search="%")

    assert [s.username for s in first.items] == [f"nurse{n}" for n in range(5)]
    assert first.has_next
    assert [s.username for s in second.items] == ["nurse5", "nurse6"]
    assert not second.has_next
    assert [s.username for s in by_name.items] == ["nurse3"]
    assert wildcard.items == []


# --------------------------------------------------------------------------- audit log


async def _seed_log(db: AsyncSession, staff: Staff) -> None:
    # 2026-11-26 23:59:59 and 2026-11-27 00:00:00 in Shanghai are the day boundary.
    rows = [
        (datetime(2026, 11, 26, 15, 59, 59, tzinfo=UTC), "report.view", 7),
        (datetime(2026, 11, 26, 16, 0, 0, tzinfo=UTC), "report.view", 7),
        (datetime(2026, 11, 26, 17, 0, 0, tzinfo=UTC), "payment.refund", 8),
        (datetime(2026, 11, 27, 15, 59, 59, tzinfo=UTC), "report.view", 8),
        (datetime(2026, 11, 27, 16, 0, 0, tzinfo=UTC), "report.view", 7),
    ]
    for at, action, card in rows:
        await audit.record(
            db,
            at=at,
            actor=f"staff:{staff.id}",
            action=action,
            record_type="report",
            record_id=f"R{card}",
            card_id=card,
            ip="10.0.0.5",
            detail={"note": '=HYPERLINK("http://x")'},
        )
    await audit.record(
        db,
        at=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        actor="system",
        action="report.sync",
        record_type="report",
        record_id="all",
    )


async def test_audit_filters_by_staff_card_action_and_hospital_dates(
    db: AsyncSession, clock: FrozenClock
) -> None:
    reader = await create_staff(db, clock, username="olga", role=Role.auditor)
    await _seed_log(db, reader)

    def f(**kwargs: str) -> auditlog.AuditFilters:
        return auditlog.parse_filters(**kwargs)

    async def actions(filters: auditlog.AuditFilters) -> list[tuple[str, int | None]]:
        page = await auditlog.search(db, filters, clock=clock)
        return [(e.action, e.card_id) for e in page.items if e.action != "staff.create"]

    on_27th = await auditlog.search(
        db, f(date_from="2026-11-27", date_to="2026-11-27"), clock=clock
    )
    # Newest entry first (the log's append order); 16:00 UTC is midnight in Shanghai.
    assert [e.at for e in on_27th.items] == [
        datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 15, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 26, 17, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 26, 16, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 1, 0, tzinfo=UTC),  # olga's account was created at T0
    ]
    assert await actions(f(actor="olga", card_id="7")) == [
        ("report.view", 7),
        ("report.view", 7),
        ("report.view", 7),
    ]
    assert await actions(f(actor="system")) == [("report.sync", None)]
    assert await actions(f(action="payment.*")) == [("payment.refund", 8)]
    assert await actions(f(action="payment")) == []
    assert await actions(f(actor="nobody")) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"card_id": "12a"}, "card_id"),
        ({"card_id": "-1"}, "card_id"),
        ({"card_id": "１２"}, "card_id"),
        ({"date_from": "2026-13-01"}, "date_from"),
        ({"date_from": "yesterday"}, "date_from"),
        ({"date_from": "2026-11-27", "date_to": "2026-11-26"}, "date_to"),
    ],
)
async def test_bad_audit_filters_are_refused_and_record_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    params: dict[str, str],
    field: str,
) -> None:
    reader = await create_staff(db, clock, username="olga", role=Role.auditor)
    await sign_in(client, clock, reader)
    before = await count_rows(db, AuditEntry)

    page = await client.get("/console/audit", params=params)
    export = await client.get("/console/audit.csv", params=params)

    assert (page.status_code, export.status_code) == (422, 422)
    assert page.json()["error"]["code"] == "console.bad_input"
    assert await count_rows(db, AuditEntry) == before


async def test_the_audit_page_shows_local_times_names_and_pages(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    for n in range(60):
        await audit.record(
            db,
            at=clock.now() + timedelta(seconds=n),
            actor=f"staff:{admin.id}",
            action="report.view",
            record_type="report",
            record_id=f"R{n}",
            card_id=42,
        )
    await sign_in(client, clock, admin)

    first = await client.get("/console/audit", params={"card_id": "42"})
    second = await client.get("/console/audit", params={"card_id": "42", "page": "2"})

    assert first.status_code == 200
    assert first.text.count("report:R") == 50
    assert "2026-11-27 09:00:59" in first.text  # 01:00:59 UTC shown in Shanghai time
    assert f"staff:{admin.id} (alice)" in first.text
    assert 'href="/console/audit?card_id=42&amp;page=2"' in first.text
    assert second.text.count("report:R") == 10
    assert "report:R0<" in second.text


async def test_the_csv_export_streams_the_filtered_log_and_is_itself_audited(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditlog, "EXPORT_BATCH", 2)  # force several batches
    reader = await create_staff(db, clock, username="olga", role=Role.auditor)
    await _seed_log(db, reader)
    await sign_in(client, clock, reader)

    response = await client.get("/console/audit.csv", params={"action": "report.view"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="audit-')
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == list(auditlog.CSV_COLUMNS)
    assert [(r[1], r[3], r[6]) for r in rows[1:]] == [
        ("2026-11-28T00:00:00+08:00", "report.view", "7"),
        ("2026-11-27T23:59:59+08:00", "report.view", "8"),
        ("2026-11-27T00:00:00+08:00", "report.view", "7"),
        ("2026-11-26T23:59:59+08:00", "report.view", "7"),
    ]
    assert rows[1][10] == '{"note": "=HYPERLINK(\\"http://x\\")"}'
    [export] = await audit_rows(db, action="audit.export")
    assert (export.actor, export.detail) == (
        f"staff:{reader.id}",
        {"filters": {"action": "report.view"}},
    )


def test_csv_cells_that_look_like_formulas_are_neutralised() -> None:
    assert [auditlog._cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "plain", None, 5)] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "plain",
        "",
        "5",
    ]


# --------------------------------------------------------------------------- health


@pytest.fixture
def no_panels() -> Iterator[None]:
    saved = dict(health._providers)
    health._providers.clear()
    try:
        yield
    finally:
        health._providers.clear()
        health._providers.update(saved)


async def _dead_job(db: AsyncSession, clock: FrozenClock, name: str, error: str) -> int:
    job_id = await outbox.enqueue(db, name, dedupe_key=f"console-{name}")
    assert job_id is not None
    await db.execute(
        update(outbox.OutboxJob)
        .where(outbox.OutboxJob.id == job_id)
        .values(status=outbox.DEAD, attempts=8, finished_at=clock.now(), last_error=error)
    )
    return job_id


async def test_health_shows_the_outbox_and_dead_letters_with_their_last_error(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, no_panels: None
) -> None:
    admin = await create_staff(db, clock)
    await outbox.enqueue(db, "messaging.push", dedupe_key="console-queued")
    dead = await _dead_job(db, clock, "his.register", "HisUnavailable: <timeout> after 10s")
    await sign_in(client, clock, admin)

    page = await client.get("/console/health")

    assert page.status_code == 200
    counts = dict(re.findall(r'data-status="(\w+)">.*?tile-value">(\d+)<', page.text, re.S))
    assert counts == {"queued": "1", "running": "0", "done": "0", "dead": "1"}
    assert f'data-job="{dead}"' in page.text
    assert "HisUnavailable: &lt;timeout&gt; after 10s" in page.text
    assert f'action="/console/health/outbox/{dead}/retry"' in page.text
    for key in ("his", "wechat", "pay"):
        section = page.text.split(f'data-panel="{key}"')[1].split("</section>")[0]
        assert "未配置" in section


async def test_retrying_a_dead_letter_queues_it_again_and_is_audited(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    dead = await _dead_job(db, clock, "his.register", "boom")
    csrf = await sign_in(client, clock, admin)

    response = await client.post(f"/console/health/outbox/{dead}/retry", data={"csrf_token": csrf})
    again = await client.post(f"/console/health/outbox/{dead}/retry", data={"csrf_token": csrf})

    assert response.status_code == 303
    assert response.headers["location"] == "/console/health"
    job = (
        await db.execute(
            select(outbox.OutboxJob)
            .where(outbox.OutboxJob.id == dead)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    assert (job.status, job.attempts, job.run_after_at) == (outbox.QUEUED, 0, clock.now())
    assert again.status_code == 409  # no longer a dead letter: nothing changed
    [retry] = await audit_rows(db, action="outbox.retry")
    assert (retry.actor, retry.record_type, retry.record_id) == (
        f"staff:{admin.id}",
        "outbox_job",
        str(dead),
    )


async def test_retry_without_csrf_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    dead = await _dead_job(db, clock, "his.register", "boom")
    await sign_in(client, clock, admin)

    response = await client.post(f"/console/health/outbox/{dead}/retry", data={})

    assert response.status_code == 403
    status = (
        await db.execute(select(outbox.OutboxJob.status).where(outbox.OutboxJob.id == dead))
    ).scalar_one()
    assert status == outbox.DEAD
    assert await audit_rows(db, action="outbox.retry") == []


async def test_registered_panels_are_shown_and_a_failing_one_does_not_break_the_page(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, no_panels: None
) -> None:
    async def his_panel(session: AsyncSession, container: object) -> health.Panel:
        return health.Panel(
            rows=(
                health.PanelRow("console.health.his", "2026-11-27 08:59"),
                health.PanelRow("console.outbox.dead", "3 / 100", health.BAD),
            )
        )

    async def broken(session: AsyncSession, container: object) -> health.Panel:
        raise RuntimeError("token endpoint down")

    health.register_health_panel("his", his_panel)
    health.register_health_panel("wechat", broken)
    admin = await create_staff(db, clock)
    await sign_in(client, clock, admin)

    page = await client.get("/console/health")

    assert page.status_code == 200
    his = page.text.split('data-panel="his"')[1].split("</section>")[0]
    assert "2026-11-27 08:59" in his
    assert "status-bad" in his
    wechat = page.text.split('data-panel="wechat"')[1].split("</section>")[0]
    assert "状态读取失败" in wechat
    pay = page.text.split('data-panel="pay"')[1].split("</section>")[0]
    assert "未配置" in pay


# --------------------------------------------------------------------------- dashboard, shell


@pytest.fixture
def no_tiles() -> Iterator[None]:
    saved = dict(dashboard._providers)
    dashboard._providers.clear()
    try:
        yield
    finally:
        dashboard._providers.clear()
        dashboard._providers.update(saved)


async def test_the_dashboard_shows_a_role_its_tiles_with_a_dash_until_filled(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, no_tiles: None
) -> None:
    async def payments(session: AsyncSession, container: object) -> dashboard.TileValue:
        return dashboard.TileValue("128")

    dashboard.register_dashboard_tile("payments_today", payments)
    cashier = await create_staff(db, clock, username="carol", role=Role.cashier)
    await sign_in(client, clock, cashier)

    page = await client.get("/console/")

    tiles = re.findall(r'data-tile="(\w+)">.*?tile-value">([^<]+)<', page.text, re.S)
    assert tiles == [("payments_today", "128"), ("refunds_today", "—")]
    assert "该功能尚未上线" in page.text
    nav = re.findall(r'<li><a href="([^"]+)"', page.text)
    assert nav == ["/console/", "/console/cashier", "/console/payments"]


def test_unknown_dashboard_tiles_are_refused() -> None:
    async def nothing(session: AsyncSession, container: object) -> dashboard.TileValue:
        return dashboard.TileValue("0")

    with pytest.raises(ValueError, match="unknown dashboard tile"):
        dashboard.register_dashboard_tile("bookings_tomorrow", nothing)


async def test_the_admin_nav_and_english_pages(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    await sign_in(client, clock, admin)

    chinese = await client.get("/console/")
    switched = await client.get("/console/lang/en")
    english = await client.get("/console/")

    assert re.findall(r'<li><a href="([^"]+)"', chinese.text) == [
        "/console/",
        "/console/patients",
        "/console/messages",
        "/console/articles",
        "/console/hospital",
        "/console/wechat/keywords",
        "/console/wechat/menu",
        "/console/wechat/deliveries",
        "/console/booking",
        "/console/cashier",
        "/console/payments",
        "/console/reconciliation",
        "/console/audit",
        "/console/health",
        "/console/staff",
    ]
    assert "工作台" in chinese.text
    assert switched.status_code == 303
    assert "Dashboard" in english.text
    assert "Sign out everywhere" in english.text


async def test_pages_have_no_inline_style_or_script_and_use_our_stylesheet(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    admin = await create_staff(db, clock)
    login = await client.get("/console/login")
    await sign_in(client, clock, admin)
    pages = [login] + [
        await client.get(p)
        for p in (
            "/console/",
            "/console/audit",
            "/console/health",
            "/console/staff",
            "/console/patients",
            "/console/booking",
        )
    ]
    enrol = await client.post(
        "/console/staff",
        data={
            **NEW_STAFF,
            "csrf_token": re.findall(r'csrf_token" value="([^"]+)"', pages[1].text)[0],
        },
    )
    css = await client.get("/console/static/console.css")

    for page in [*pages, enrol]:
        assert page.status_code == 200
        assert "style=" not in page.text
        assert "<script" not in page.text
        assert "<style" not in page.text
        assert '<link rel="stylesheet" href="/console/static/console.css">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (await client.get("/console/static/../routes.py")).status_code == 404
    assert (await client.get("/console/static/base.css")).status_code == 404


async def test_locale_catalogs_cover_every_key_the_templates_use() -> None:
    from pathlib import Path

    from frontdesk.core.i18n import catalog

    templates = Path(service.__file__).parent / "templates"
    used = set()
    for path in templates.glob("*.html"):
        used |= set(
            re.findall(r't\(\s*"(console\.[a-z_.]*[a-z_])"', path.read_text(encoding="utf-8"))
        )
    assert len(used) > 40
    # Keys built from a value: one per role, outbox status and language.
    used |= {f"console.role.{r.value}" for r in Role}
    used |= {f"console.outbox.{s}" for s in ("queued", "running", "done", "dead")}
    used |= {"console.lang.zh-CN", "console.lang.en"}
    for locale in ("zh-CN", "en"):
        assert used - set(catalog(locale)) == set(), locale


async def test_sessions_of_a_reset_account_cannot_be_reused(
    db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    policy = service.Policy(
        idle=timedelta(minutes=30),
        absolute=timedelta(hours=12),
        lockout_attempts=5,
        lockout=timedelta(minutes=15),
    )
    result = await service.sign_in(
        db,
        username="alice",
        password=PASSWORD,
        code=service.totp_code(staff.secret, clock.now()),
        now=clock.now(),
        policy=policy,
    )
    assert isinstance(result, service.SignedIn)
    await service.reset_totp(db, staff_id=staff.id, now=clock.now(), actor="test")

    found = await service.resolve_session(db, token=result.token, now=clock.now(), policy=policy)

    assert found == service.NoSession("unknown")
    assert await count_rows(db, StaffSession, StaffSession.revoked_at.is_not(None)) == 1
