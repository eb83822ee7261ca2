"""Sign-in, second factor, lockout, sessions, CSRF and role refusals in the staff console."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console import service
from frontdesk.console.auth import COOKIE
from frontdesk.console.models import Role, StaffSession, StaffUser
from frontdesk.core import outbox
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from tests.console.conftest import (
    PASSWORD,
    audit_rows,
    count_rows,
    create_staff,
    csrf_from,
    live_sessions,
    post_login,
    reload_staff,
    sign_in,
)


async def test_password_and_code_open_a_server_side_session(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)

    response = await post_login(
        client,
        username="alice",
        password=PASSWORD,
        code=service.totp_code(staff.secret, clock.now()),
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/console/"
    set_cookie = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")]
    assert len(set_cookie) == 1
    attributes = {part.strip().lower() for part in set_cookie[0].split(";")}
    assert {"httponly", "samesite=strict", "path=/console"} <= attributes
    assert "secure" not in attributes  # only in production
    token = set_cookie[0].split(";")[0].split("=", 1)[1]
    row = (await db.execute(select(StaffSession))).scalar_one()
    assert row.staff_id == staff.id
    assert row.token_hash == service.hash_token(token)
    assert token not in {row.token_hash, row.csrf_token}
    assert row.created_at == row.last_seen_at == clock.now()
    assert row.expires_at == clock.now() + timedelta(hours=12)
    [signin] = await audit_rows(db, action="staff.signin")
    assert (signin.actor, signin.outcome, signin.record_id) == (
        f"staff:{staff.id}",
        "ok",
        str(staff.id),
    )
    assert (signin.ip, signin.request_id) == ("127.0.0.1", response.headers["x-request-id"])
    home = await client.get("/console/")
    assert home.status_code == 200
    assert "Alice" in home.text


async def test_wrong_password_is_refused_counted_and_audited(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)

    response = await post_login(
        client,
        username="alice",
        password="wrong password!!",
        code=service.totp_code(staff.secret, clock.now()),
    )

    assert response.status_code == 401
    assert "用户名、密码或验证码不正确" in response.text
    assert COOKIE not in response.cookies
    assert await count_rows(db, StaffSession) == 0
    user = await reload_staff(db, staff.id)
    assert user.failed_attempts == 1
    assert user.totp_last_step is None  # the code was not spent
    [denied] = await audit_rows(db, action="staff.signin")
    assert (denied.outcome, denied.detail) == ("denied", {"reason": "bad_password"})
    assert (await client.get("/console/")).status_code == 303


async def test_wrong_code_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    right = service.totp_code(staff.secret, clock.now())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    for code in (wrong, "", "abcdef", "1234567", "12345"):
        response = await post_login(client, username="alice", password=PASSWORD, code=code)
        assert response.status_code == 401

    assert await count_rows(db, StaffSession) == 0
    user = await reload_staff(db, staff.id)  # the fifth failure locked the account
    assert (user.failed_attempts, user.locked_until_at) == (0, clock.now() + timedelta(minutes=15))
    reasons = [row.detail["reason"] for row in await audit_rows(db, action="staff.signin")]
    assert reasons == ["bad_code"] * 5


async def test_unknown_user_is_refused_like_a_wrong_password(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    await create_staff(db, clock)

    response = await post_login(client, username="mallory", password=PASSWORD, code="123456")

    assert response.status_code == 401
    assert "用户名、密码或验证码不正确" in response.text
    assert await count_rows(db, StaffSession) == 0
    [denied] = await audit_rows(db, action="staff.signin")
    assert (denied.actor, denied.outcome, denied.detail) == (
        "anonymous",
        "denied",
        {"reason": "unknown_user", "username": "mallory"},
    )


async def test_a_totp_code_is_accepted_only_once(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    code = service.totp_code(staff.secret, clock.now())
    assert (
        await post_login(client, username="alice", password=PASSWORD, code=code)
    ).status_code == 303
    step = (await reload_staff(db, staff.id)).totp_last_step
    clock.advance(seconds=5)  # still the same 30-second step

    replay = await post_login(client, username="alice", password=PASSWORD, code=code)

    assert replay.status_code == 401
    assert await count_rows(db, StaffSession) == 1
    user = await reload_staff(db, staff.id)
    assert (user.totp_last_step, user.failed_attempts) == (step, 1)
    assert (await audit_rows(db, action="staff.signin"))[-1].detail == {"reason": "replayed_code"}


async def test_an_older_code_than_the_last_accepted_one_is_a_replay(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    earlier = service.totp_code(staff.secret, clock.now() - timedelta(seconds=30))
    later = service.totp_code(staff.secret, clock.now() + timedelta(seconds=30))
    assert (
        await post_login(client, username="alice", password=PASSWORD, code=later)
    ).status_code == 303

    response = await post_login(client, username="alice", password=PASSWORD, code=earlier)

    assert response.status_code == 401
    assert await count_rows(db, StaffSession) == 1


async def test_five_failures_lock_the_account_even_against_the_right_code(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    for _ in range(4):
        assert (
            await post_login(client, username="alice", password="not the password", code="000000")
        ).status_code == 401
    assert (await reload_staff(db, staff.id)).locked_until_at is None

    fifth = await post_login(client, username="alice", password="not the password", code="000000")

    assert fifth.status_code == 401
    user = await reload_staff(db, staff.id)
    assert user.locked_until_at == clock.now() + timedelta(minutes=15)
    assert user.failed_attempts == 0
    [lockout] = await audit_rows(db, action="staff.lockout")
    assert (lockout.actor, lockout.outcome) == (f"staff:{staff.id}", "locked")

    clock.advance(minutes=14, seconds=59)
    right = await post_login(
        client,
        username="alice",
        password=PASSWORD,
        code=service.totp_code(staff.secret, clock.now()),
    )

    assert right.status_code == 401
    assert "账号已临时锁定" in right.text
    assert await count_rows(db, StaffSession) == 0
    user = await reload_staff(db, staff.id)
    assert (user.failed_attempts, user.totp_last_step) == (0, None)
    assert (await audit_rows(db, action="staff.signin"))[-1].outcome == "locked"


async def test_the_lock_expires_after_the_set_time(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    for _ in range(5):
        await post_login(client, username="alice", password="not the password", code="000000")
    clock.advance(minutes=15)

    response = await post_login(
        client,
        username="alice",
        password=PASSWORD,
        code=service.totp_code(staff.secret, clock.now()),
    )

    assert response.status_code == 303
    user = await reload_staff(db, staff.id)
    assert (user.failed_attempts, user.locked_until_at) == (0, None)
    assert await live_sessions(db, staff.id) == 1


async def test_a_success_resets_the_failure_count(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    for _ in range(4):
        await post_login(client, username="alice", password="not the password", code="000000")

    await sign_in(client, clock, staff)
    clock.advance(seconds=30)
    for _ in range(4):
        await post_login(client, username="alice", password="not the password", code="000000")

    user = await reload_staff(db, staff.id)
    assert (user.failed_attempts, user.locked_until_at) == (4, None)


async def test_a_session_ends_after_30_idle_minutes(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    await sign_in(client, clock, staff)

    clock.advance(minutes=29, seconds=59)
    assert (await client.get("/console/")).status_code == 200
    clock.advance(minutes=29, seconds=59)  # activity restarted the idle timer
    assert (await client.get("/console/")).status_code == 200
    clock.advance(minutes=30)
    expired = await client.get("/console/")

    assert expired.status_code == 303
    assert expired.headers["location"] == "/console/login?expired=1"
    row = (
        await db.execute(select(StaffSession).execution_options(populate_existing=True))
    ).scalar_one()
    assert row.revoked_at == clock.now()
    assert (await client.get("/console/")).status_code == 303


async def test_a_session_ends_12_hours_after_sign_in_however_busy(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    await sign_in(client, clock, staff)
    signed_in_at = clock.now()

    while clock.now() + timedelta(minutes=20) < signed_in_at + timedelta(hours=12):
        clock.advance(minutes=20)
        assert (await client.get("/console/")).status_code == 200
    clock.set(signed_in_at + timedelta(hours=12))
    response = await client.get("/console/")

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?expired=1"
    assert await live_sessions(db, staff.id) == 0


async def test_a_tampered_session_cookie_finds_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    await sign_in(client, clock, staff)
    token = client.cookies.get(COOKIE)
    assert token is not None
    row = (await db.execute(select(StaffSession))).scalar_one()
    seen = row.last_seen_at
    clock.advance(minutes=1)

    for forged in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "x",
        "",
        row.token_hash,
        "x" * 500,
    ):
        client.cookies.set(COOKIE, forged, path="/console")
        response = await client.get("/console/")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/login"

    row = (
        await db.execute(select(StaffSession).execution_options(populate_existing=True))
    ).scalar_one()
    assert (row.last_seen_at, row.revoked_at) == (seen, None)


async def test_signed_out_visitors_are_sent_to_sign_in(client: httpx.AsyncClient) -> None:
    for path in (
        "/console/",
        "/console/audit",
        "/console/health",
        "/console/staff",
        "/console/audit.csv",
    ):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/login"


async def test_sign_in_form_without_its_csrf_token_is_refused_and_counts_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    page = await client.get("/console/login")
    token = csrf_from(page.text)
    code = service.totp_code(staff.secret, clock.now())
    audit_before = await count_rows(db, AuditEntry)

    for given in ("", "forged-token-forged-token-forged", token + "x"):
        response = await client.post(
            "/console/login",
            data={"username": "alice", "password": PASSWORD, "code": code, "csrf_token": given},
        )
        assert response.status_code == 403

    assert await count_rows(db, StaffSession) == 0
    user = await reload_staff(db, staff.id)
    assert (user.failed_attempts, user.totp_last_step) == (0, None)
    assert await count_rows(db, AuditEntry) == audit_before


async def test_state_changes_without_a_valid_csrf_token_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    csrf = await sign_in(client, clock, staff)
    staff_before = await count_rows(db, StaffUser)
    form = {
        "username": "bob",
        "display_name": "Bob",
        "role": "cashier",
        "password": "a long enough password",
    }

    missing = await client.post("/console/staff", data=form)
    forged = await client.post("/console/staff", data={**form, "csrf_token": csrf[:-2] + "zz"})
    other = await client.post("/console/logout", data={"csrf_token": "x" * len(csrf)})

    assert [missing.status_code, forged.status_code, other.status_code] == [403, 403, 403]
    assert await count_rows(db, StaffUser) == staff_before
    assert await live_sessions(db, staff.id) == 1
    denials = await audit_rows(db, action="console.csrf")
    assert [(d.actor, d.outcome, d.record_id) for d in denials] == [
        (f"staff:{staff.id}", "denied", "/console/staff"),
        (f"staff:{staff.id}", "denied", "/console/staff"),
        (f"staff:{staff.id}", "denied", "/console/logout"),
    ]
    assert await audit_rows(db, action="staff.create") != []
    assert [r.detail["username"] for r in await audit_rows(db, action="staff.create")] == ["alice"]
    ok = await client.post("/console/staff", data={**form, "csrf_token": csrf})
    assert ok.status_code == 200
    assert await count_rows(db, StaffUser) == staff_before + 1


async def test_a_role_reaching_a_page_it_does_not_have_gets_403_and_an_audit_row(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    cashier = await create_staff(db, clock, username="carol", role=Role.cashier)
    await create_staff(db, clock, username="dave", role=Role.finance)
    csrf = await sign_in(client, clock, cashier)
    staff_before = await count_rows(db, StaffUser)

    for path in ("/console/audit", "/console/audit.csv", "/console/staff", "/console/health"):
        response = await client.get(path, headers={"accept": "text/html"})
        assert response.status_code == 403, path
        assert "您没有权限进行此操作" in response.text
    create = await client.post(
        "/console/staff",
        data={
            "csrf_token": csrf,
            "username": "eve",
            "display_name": "Eve",
            "role": "admin",
            "password": "a long enough password",
        },
    )
    assert create.status_code == 403

    assert await count_rows(db, StaffUser) == staff_before
    denials = await audit_rows(db, action="console.access")
    assert [
        (d.actor, d.record_id, d.outcome, d.detail["method"], d.detail["role"]) for d in denials
    ] == [
        (f"staff:{cashier.id}", "/console/audit", "denied", "GET", "cashier"),
        (f"staff:{cashier.id}", "/console/audit.csv", "denied", "GET", "cashier"),
        (f"staff:{cashier.id}", "/console/staff", "denied", "GET", "cashier"),
        (f"staff:{cashier.id}", "/console/health", "denied", "GET", "cashier"),
        (f"staff:{cashier.id}", "/console/staff", "denied", "POST", "cashier"),
    ]
    assert all(d.ip == "127.0.0.1" for d in denials)
    home = await client.get("/console/")
    assert home.status_code == 200
    assert 'href="/console/audit"' not in home.text
    assert 'href="/console/staff"' not in home.text


async def test_the_auditor_reads_the_log_but_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    auditor = await create_staff(db, clock, username="olga", role=Role.auditor)
    victim = await create_staff(db, clock, username="bob", role=Role.cashier)
    job_id = await outbox.enqueue(db, "test.nothing", dedupe_key="console-auditor")
    assert job_id is not None
    await db.execute(
        update(outbox.OutboxJob)
        .where(outbox.OutboxJob.id == job_id)
        .values(status=outbox.DEAD, finished_at=clock.now())
    )
    csrf = await sign_in(client, clock, auditor)

    assert (await client.get("/console/audit")).status_code == 200
    assert (await client.get("/console/audit.csv")).status_code == 200
    refused = [
        await client.post(f"/console/staff/{victim.id}/disable", data={"csrf_token": csrf}),
        await client.post(f"/console/staff/{victim.id}/reset-totp", data={"csrf_token": csrf}),
        await client.post(f"/console/health/outbox/{job_id}/retry", data={"csrf_token": csrf}),
        await client.get("/console/health"),
    ]

    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    user = await reload_staff(db, victim.id)
    assert (user.disabled_at, user.totp_secret) == (None, victim.secret)
    status = (
        await db.execute(select(outbox.OutboxJob.status).where(outbox.OutboxJob.id == job_id))
    ).scalar_one()
    assert status == outbox.DEAD
    assert len(await audit_rows(db, action="console.access")) == 4


async def test_sign_out_ends_this_session_only(
    db: AsyncSession, clock: FrozenClock, app: object
) -> None:
    staff = await create_staff(db, clock)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as office,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as ward,
    ):
        csrf = await sign_in(office, clock, staff)
        clock.advance(seconds=30)
        await sign_in(ward, clock, staff)

        response = await office.post("/console/logout", data={"csrf_token": csrf})

        assert response.status_code == 303
        assert response.headers["location"] == "/console/login"
        assert (await office.get("/console/")).status_code == 303
        assert (await ward.get("/console/")).status_code == 200
        assert await live_sessions(db, staff.id) == 1
        [signout] = await audit_rows(db, action="staff.signout")
        assert signout.detail == {"sessions": 1}


async def test_sign_out_everywhere_ends_every_session(
    db: AsyncSession, clock: FrozenClock, app: object
) -> None:
    staff = await create_staff(db, clock)
    other = await create_staff(db, clock, username="bob", role=Role.cashier)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as office,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as ward,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as bobs,
    ):
        csrf = await sign_in(office, clock, staff)
        clock.advance(seconds=30)
        await sign_in(ward, clock, staff)
        await sign_in(bobs, clock, other)

        response = await office.post("/console/logout-all", data={"csrf_token": csrf})

        assert response.status_code == 303
        assert (await office.get("/console/")).status_code == 303
        assert (await ward.get("/console/")).status_code == 303
        assert (await bobs.get("/console/")).status_code == 200
        assert await live_sessions(db, staff.id) == 0
        [signout] = await audit_rows(db, action="staff.signout_all")
        assert signout.detail == {"sessions": 2}


async def test_a_disabled_account_cannot_sign_in_and_loses_its_sessions(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock, app: object
) -> None:
    admin = await create_staff(db, clock)
    bob = await create_staff(db, clock, username="bob", role=Role.cashier)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as bobs:
        await sign_in(bobs, clock, bob)
        csrf = await sign_in(client, clock, admin)

        response = await client.post(f"/console/staff/{bob.id}/disable", data={"csrf_token": csrf})

        assert response.status_code == 303
        assert (await bobs.get("/console/")).status_code == 303
        clock.advance(seconds=30)
        again = await post_login(
            bobs, username="bob", password=PASSWORD, code=service.totp_code(bob.secret, clock.now())
        )
        assert again.status_code == 401
        assert await live_sessions(db, bob.id) == 0
        assert (await audit_rows(db, action="staff.signin"))[-1].detail["reason"] == "disabled"


def test_every_console_route_is_guarded_by_require_role_first() -> None:
    from fastapi.routing import APIRoute

    from frontdesk.console.routes import router

    public = {"/console/login", "/console/static/{name}", "/console/lang/{code}"}
    guarded = 0
    for route in router.routes:
        assert isinstance(route, APIRoute)
        if route.path in public:
            continue
        first = route.dependant.dependencies[0].call
        assert hasattr(first, "allowed_roles"), route.path
        guarded += 1
    assert guarded >= 12  # logout(2), dashboard, staff(5), audit(2), health(2)


async def test_a_form_posted_from_an_expired_session_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    staff = await create_staff(db, clock)
    csrf = await sign_in(client, clock, staff)
    before = await count_rows(db, StaffUser)
    clock.advance(minutes=31)

    response = await client.post(
        "/console/staff",
        data={
            "csrf_token": csrf,
            "username": "bob",
            "display_name": "Bob",
            "role": "cashier",
            "password": "a long enough password",
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?expired=1"
    assert await count_rows(db, StaffUser) == before
    assert [r.detail["username"] for r in await audit_rows(db, action="staff.create")] == ["alice"]
