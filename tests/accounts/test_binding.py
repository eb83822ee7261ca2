"""Binding cards through the real HIS adapter (demo HIS) and the real SMS adapter (SMS sim)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service
from frontdesk.accounts.errors import (
    AlreadyBound,
    CardNotFound,
    CardNotVerified,
    ChallengeExpired,
    ChallengeInvalid,
    ConsentRequired,
    SmsFailed,
    TooManyCards,
)
from frontdesk.accounts.models import BindingChallenge, Card, CardBinding
from frontdesk.accounts.schemas import BindingStarted, BindRequest, BoundCard, Relationship
from frontdesk.container import Container
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.core.errors import Unavailable
from frontdesk.sims.his_sim.app import sim_state
from tests.accounts.helpers import SimPatient, inbox_size, last_code, sim_patients

SECRET = "binding-test-secret"
POLICY = service.BindingPolicy()
NO_SMS = service.BindingPolicy(sms_enabled=False)
ME, FAMILY, STRANGER = (
    "o-me-0000000000000000001",
    "o-family-00000000000002",
    "o-stranger-0000000003",
)


def req(
    p: SimPatient,
    *,
    name: str | None = None,
    last4: str | None = None,
    relationship: Relationship = Relationship.self_,
) -> BindRequest:
    return BindRequest(
        card_no=p.card_no,
        holder_name=name or p.name,
        id_or_phone_last4=last4 or p.id_last4,
        relationship=relationship,
    )


async def start(
    db: AsyncSession,
    clock: FrozenClock,
    his: Any,
    request: BindRequest,
    *,
    sms: Any,
    openid: str,
    policy: service.BindingPolicy,
) -> BindingStarted:
    """``service.start_binding`` with this module's secret and the frozen clock."""
    return await service.start_binding(
        db,
        his=his,
        sms=sms,
        openid=openid,
        request=request,
        policy=policy,
        secret=SECRET,
        now=clock.now(),
    )


async def confirm(
    db: AsyncSession, clock: FrozenClock, *, openid: str, challenge_id: str, code: str
) -> BoundCard | service.CodeRefused:
    """``service.confirm_binding`` with this module's policy, secret and frozen clock."""
    return await service.confirm_binding(
        db,
        openid=openid,
        challenge_id=challenge_id,
        code=code,
        policy=POLICY,
        secret=SECRET,
        now=clock.now(),
    )


async def counts(db: AsyncSession) -> tuple[int, int, int]:
    cards = (await db.execute(select(func.count()).select_from(Card))).scalar_one()
    bindings = (await db.execute(select(func.count()).select_from(CardBinding))).scalar_one()
    challenges = (await db.execute(select(func.count()).select_from(BindingChallenge))).scalar_one()
    return int(cards), int(bindings), int(challenges)


async def consent(db: AsyncSession, clock: FrozenClock, openid: str = ME) -> None:
    await service.accept_notice(db, openid=openid, version="2026-11", now=clock.now())


async def test_bind_with_the_code_sent_to_the_phone_the_his_holds(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    started = await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    assert started.phone_masked == p.phone[:3] + "****" + p.phone[-4:]
    assert started.bound is None
    assert await counts(db) == (0, 0, 1)  # nothing bound before the code comes back
    code = await last_code(sms_sim, p.phone)
    card = await confirm(db, clock, openid=ME, challenge_id=started.challenge_id or "", code=code)
    assert isinstance(card, BoundCard)
    assert (card.card_no, card.card_type, card.is_active, card.relationship) == (
        p.card_no,
        p.card_type,
        True,
        "self",
    )
    assert card.holder_name_masked != p.name and card.holder_name_masked[0] == p.name[0]
    assert "*" in card.id_number_masked and card.phone_masked.count("*") == 4
    scope = await service.scope_for(db, openid=ME)
    assert [c.card_no for c in scope.cards] == [p.card_no]
    audit_rows = (
        await db.execute(
            select(AuditEntry.action, AuditEntry.actor).where(AuditEntry.card_id == card.card_id)
        )
    ).all()
    assert [tuple(r) for r in audit_rows] == [("card.bind", f"patient:{ME}")]
    # The code is spent: using it again is refused.
    with pytest.raises(ChallengeInvalid):
        await confirm(db, clock, openid=ME, challenge_id=started.challenge_id or "", code=code)


async def test_consent_comes_first(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    with pytest.raises(ConsentRequired):
        await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    assert await counts(db) == (0, 0, 0)
    assert await inbox_size(sms_sim, p.phone) == 0


@pytest.mark.parametrize("wrong", ["name", "digits", "card"])
async def test_wrong_details_bind_nothing_and_send_nothing(
    wrong: str,
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    bad = {
        "name": req(p, name="王小二"),
        "digits": req(p, last4="0000" if p.id_last4 != "0000" else "1111"),
        "card": BindRequest(
            card_no="999999999",
            holder_name=p.name,
            id_or_phone_last4=p.id_last4,
            relationship=Relationship.self_,
        ),
    }[wrong]
    with pytest.raises(CardNotVerified):
        await start(db, clock, his_gateway, bad, sms=sms_sender, openid=ME, policy=POLICY)
    assert await counts(db) == (0, 0, 0)
    assert await inbox_size(sms_sim, p.phone) == 0


async def test_name_and_id_number_alone_never_bind(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    """Someone who knows the holder's name and ID number but not the phone gets nowhere:
    wrong codes use up the attempts, and then even the right code is refused."""
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock, STRANGER)
    started = await start(
        db, clock, his_gateway, req(p), sms=sms_sender, openid=STRANGER, policy=POLICY
    )
    challenge = started.challenge_id or ""
    right = await last_code(sms_sim, p.phone)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for attempt in range(POLICY.max_code_attempts):
        refused = await confirm(db, clock, openid=STRANGER, challenge_id=challenge, code=wrong)
        assert refused == service.CodeRefused(attempts_left=POLICY.max_code_attempts - attempt - 1)
    with pytest.raises(ChallengeInvalid):  # now even the right code is refused
        await confirm(db, clock, openid=STRANGER, challenge_id=challenge, code=right)
    assert (await service.scope_for(db, openid=STRANGER)).cards == ()


async def test_a_challenge_is_only_its_accounts_and_expires(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    started = await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    challenge = started.challenge_id or ""
    code = await last_code(sms_sim, p.phone)
    with pytest.raises(ChallengeInvalid):  # another account cannot use it, even with the code
        await confirm(db, clock, openid=STRANGER, challenge_id=challenge, code=code)
    clock.advance(seconds=POLICY.code_ttl.total_seconds())
    with pytest.raises(ChallengeExpired):
        await confirm(db, clock, openid=ME, challenge_id=challenge, code=code)
    assert (await service.scope_for(db, openid=ME)).cards == ()


async def test_the_eleventh_card_is_refused(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    patients = await sim_patients(his_sim, count=11)
    assert len(patients) == 11
    await consent(db, clock)
    for p in patients[:10]:
        await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
    before = await counts(db)
    with pytest.raises(TooManyCards):
        await start(db, clock, his_gateway, req(patients[10]), sms=None, openid=ME, policy=NO_SMS)
    assert await counts(db) == before == (10, 10, 0)
    scope = await service.scope_for(db, openid=ME)
    assert [c.is_active for c in scope.cards] == [True] + [False] * 9


async def test_same_card_twice_is_refused_but_a_family_may_share_it(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    for openid in (ME, FAMILY):
        await consent(db, clock, openid)
    await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
    with pytest.raises(AlreadyBound):
        await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
    shared = await start(
        db,
        clock,
        his_gateway,
        req(p, relationship=Relationship.child),
        sms=None,
        openid=FAMILY,
        policy=NO_SMS,
    )
    assert shared.bound is not None and shared.bound.relationship == "child"
    assert await counts(db) == (1, 2, 0)


async def test_his_down_says_try_later_and_writes_nothing(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, sms_sender: Any, his_sim: Any
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    faults = sim_state(his_sim).faults
    faults.mode, faults.count, faults.path_contains = "error", None, "cards"
    with pytest.raises(Unavailable):
        await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    assert await counts(db) == (0, 0, 0)


async def test_sms_failure_leaves_nothing_half_written(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    sms_sim.state.sim.fail_next = "isv.BUSINESS_LIMIT_CONTROL"
    with pytest.raises(SmsFailed):
        async with db.begin_nested():  # the request's transaction
            await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    assert await counts(db) == (0, 0, 0)


async def test_switch_and_unbind(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    a, b, c = await sim_patients(his_sim, count=3)
    await consent(db, clock)
    await consent(db, clock, STRANGER)
    ids = []
    for p in (a, b, c):
        started = await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
        assert started.bound is not None
        ids.append(started.bound.card_id)
    await service.set_active(db, openid=ME, card_id=ids[2])
    assert (await service.scope_for(db, openid=ME)).require_active().card_id == ids[2]
    # Someone else's card: not found, nothing changes.
    with pytest.raises(CardNotFound):
        await service.set_active(db, openid=STRANGER, card_id=ids[0])
    with pytest.raises(CardNotFound):
        await service.unbind(db, openid=STRANGER, card_id=ids[0], now=clock.now())
    # Unbinding the active card makes the oldest remaining one active.
    await service.unbind(db, openid=ME, card_id=ids[2], now=clock.now())
    scope = await service.scope_for(db, openid=ME)
    assert [(c.card_id, c.is_active) for c in scope.cards] == [(ids[0], True), (ids[1], False)]
    with pytest.raises(CardNotFound):
        await service.unbind(db, openid=ME, card_id=ids[2], now=clock.now())
    actions = (
        (
            await db.execute(
                select(AuditEntry.action)
                .where(AuditEntry.card_id == ids[2])
                .order_by(AuditEntry.id)
            )
        )
        .scalars()
        .all()
    )
    assert actions == ["card.bind", "card.unbind"]


async def test_withdrawing_consent_unbinds_everything_and_stops_messages(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    a, b = await sim_patients(his_sim, count=2)
    await consent(db, clock)
    for p in (a, b):
        await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
    assert await service.may_message(db, openid=ME) is True
    clock.advance(minutes=5)
    assert await service.withdraw_consent(db, openid=ME, now=clock.now()) == 2
    assert (await service.scope_for(db, openid=ME)).cards == ()
    assert await service.may_message(db, openid=ME) is False
    assert await service.consent_version(db, openid=ME) is None
    with pytest.raises(ConsentRequired):
        await start(db, clock, his_gateway, req(a), sms=None, openid=ME, policy=NO_SMS)


async def test_cards_the_his_voids_or_merges_are_shown_as_such(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    await consent(db, clock)
    await start(db, clock, his_gateway, req(p), sms=None, openid=ME, policy=NO_SMS)
    assert (
        await service.mark_card(db, card_no=p.card_no, status="merged", merged_into="M0001") is True
    )
    [card] = (await service.scope_for(db, openid=ME)).cards
    assert (card.status, card.usable) == ("merged", False)
    assert await service.mark_card(db, card_no="nope", status="invalid") is False
    with pytest.raises(ValueError, match="unknown card status"):
        await service.mark_card(db, card_no=p.card_no, status="deleted")


async def test_parallel_binds_never_pass_the_cap(
    container: Container, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> None:
    patients = await sim_patients(his_sim, count=6)
    policy = service.BindingPolicy(max_cards=3, sms_enabled=False)
    async with container.db.session() as s:
        await consent(s, clock)

    async def one(p: SimPatient) -> str:
        try:
            async with container.db.session() as s:
                await service.start_binding(
                    s,
                    his=his_gateway,
                    sms=None,
                    openid=ME,
                    request=req(p),
                    policy=policy,
                    secret=SECRET,
                    now=clock.now(),
                )
            return "bound"
        except TooManyCards:
            return "refused"

    results = await asyncio.gather(*(one(p) for p in patients))
    assert sorted(results) == ["bound"] * 3 + ["refused"] * 3
    async with container.db.session() as s:
        assert len((await service.scope_for(s, openid=ME)).cards) == 3


def test_bad_input_is_refused_before_anything_runs() -> None:
    from pydantic import ValidationError

    good = {
        "card_no": "00012345",
        "holder_name": "张三",
        "id_or_phone_last4": "123X",
        "relationship": "self",
    }
    assert BindRequest(**good).id_or_phone_last4 == "123X"
    for field, value in [
        ("card_no", "../etc"),
        ("card_no", ""),
        ("card_no", "1" * 33),
        ("holder_name", ""),
        ("holder_name", "张\x00三"),
        ("holder_name", "<script>"),
        ("holder_name", "x" * 40),
        ("id_or_phone_last4", "12"),
        ("id_or_phone_last4", "12a4"),
        ("relationship", "boss"),
        ("card_no", 12345),
    ]:
        with pytest.raises(ValidationError):
            BindRequest(**{**good, field: value})
    with pytest.raises(ValidationError):
        BindRequest.model_validate({**good, "admin": True})


async def test_a_card_without_a_mobile_number_cannot_get_a_code(
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    sms_sender: Any,
    sms_sim: Any,
    his_sim: Any,
) -> None:
    from sqlalchemy import update as sql_update

    from frontdesk.accounts.errors import NoPhoneOnFile
    from frontdesk.sims.his_sim import models as m

    [p] = await sim_patients(his_sim, count=1)
    async with sim_state(his_sim).engine.begin() as conn:
        await conn.execute(sql_update(m.patient).where(m.patient.c.name == p.name).values(phone=""))
    await consent(db, clock)
    with pytest.raises(NoPhoneOnFile):
        await start(db, clock, his_gateway, req(p), sms=sms_sender, openid=ME, policy=POLICY)
    assert await counts(db) == (0, 0, 0)
