"""Visit cards and the accounts that hold them.

Rules: the privacy notice is accepted before the first binding; a card binds only when the
HIS confirms card number + holder name + last 4 digits of the ID number or phone, and then
(unless the hospital switched it off) a one-time code reaches the phone the HIS holds for
the card — so a name and an ID number alone never bind a card. An account holds at most
``max_cards`` cards; one of them is active. Every bind, unbind and consent change is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import repository as repo
from frontdesk.accounts.errors import (
    AlreadyBound,
    CardNotFound,
    CardNotVerified,
    ChallengeExpired,
    ChallengeInvalid,
    ConsentRequired,
    NoPhoneOnFile,
    SmsFailed,
    TooManyCards,
)
from frontdesk.accounts.models import BindingChallenge, Card, CardBinding, Consent
from frontdesk.accounts.schemas import BindingStarted, BindRequest, BoundCard, PatientScope
from frontdesk.core import audit
from frontdesk.core.errors import Unavailable
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.his.port import (
    CardType,
    CardVerification,
    HisGateway,
    HisRejected,
    HisUnavailable,
)
from frontdesk.sms.port import SmsRejected, SmsSender, SmsUnavailable


@dataclass(frozen=True)
class CodeRefused:
    """The one-time code was wrong; ``attempts_left`` more tries before it is void."""

    attempts_left: int


@dataclass(frozen=True)
class BindingPolicy:
    max_cards: int = 10
    sms_enabled: bool = True
    code_ttl: timedelta = timedelta(minutes=5)
    max_code_attempts: int = 5


def _actor(openid: str) -> str:
    return f"patient:{openid}"


# --------------------------------------------------------------------------- the scope


async def scope_for(session: AsyncSession, *, openid: str) -> PatientScope:
    """The one place where a caller's patient-data scope is decided: their bound cards."""
    rows = await repo.scope_rows(session, openid)
    return PatientScope(
        openid=openid,
        cards=tuple(
            BoundCard(
                card_id=r[0],
                card_no=r[1],
                card_type=r[2],
                holder_name_masked=r[3],
                id_number_masked=r[4],
                phone_masked=r[5],
                relationship=r[6],
                status=r[7],
                is_active=r[8],
                bound_at=r[9],
            )
            for r in rows
        ),
    )


# --------------------------------------------------------------------------- consent


async def consent_version(session: AsyncSession, *, openid: str) -> str | None:
    consent = await repo.current_consent(session, openid)
    return consent.version if consent else None


async def accept_notice(
    session: AsyncSession, *, openid: str, version: str, now: datetime, ip: str | None = None
) -> None:
    current = await repo.current_consent(session, openid)
    if current is not None and current.version == version:
        return
    session.add(Consent(openid=openid, version=version, accepted_at=now))
    await audit.record(
        session,
        at=now,
        actor=_actor(openid),
        action="consent.accept",
        record_type="consent",
        record_id=version,
        ip=ip,
    )
    await session.flush()


async def withdraw_consent(
    session: AsyncSession, *, openid: str, now: datetime, ip: str | None = None
) -> int:
    """Withdraw consent: every card is unbound and no more messages are sent. Returns how
    many cards were unbound."""
    await repo.withdraw_consents(session, openid, now)
    scope = await scope_for(session, openid=openid)
    for card in scope.cards:
        await _unbind(session, openid=openid, card=card, now=now, by="consent_withdrawn", ip=ip)
    await audit.record(
        session,
        at=now,
        actor=_actor(openid),
        action="consent.withdraw",
        record_type="consent",
        record_id=openid,
        ip=ip,
        detail={"cards_unbound": len(scope.cards)},
    )
    return len(scope.cards)


async def may_message(session: AsyncSession, *, openid: str) -> bool:
    """Whether the hospital may send this account notifications (consent not withdrawn)."""
    if await repo.current_consent(session, openid) is not None:
        return True
    withdrawn = await session.execute(
        select(Consent.id)
        .where(Consent.openid == openid, Consent.withdrawn_at.is_not(None))
        .limit(1)
    )
    return withdrawn.first() is None


# --------------------------------------------------------------------------- binding


def _code_hash(secret: str, challenge_id: str, code: str) -> str:
    message = f"bind|{challenge_id}|{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


async def _lock_account(session: AsyncSession, openid: str) -> None:
    """Serialise bindings of one account (PostgreSQL row lock on its consent; SQLite
    transactions are already serial), so two parallel binds cannot pass the card cap."""
    await session.execute(
        select(Consent.id)
        .where(Consent.openid == openid, Consent.withdrawn_at.is_(None))
        .with_for_update()
    )


async def start_binding(
    session: AsyncSession,
    *,
    his: HisGateway,
    sms: SmsSender | None,
    openid: str,
    request: BindRequest,
    policy: BindingPolicy,
    secret: str,
    now: datetime,
    ip: str | None = None,
) -> BindingStarted:
    """Verify the card with the HIS and send the one-time code (or bind at once when the
    hospital switched the SMS step off). Refusals change nothing."""
    if await repo.current_consent(session, openid) is None:
        raise ConsentRequired
    await _lock_account(session, openid)
    if await repo.count_open_bindings(session, openid) >= policy.max_cards:
        raise TooManyCards(max_cards=policy.max_cards)
    existing = await repo.card_by_no(session, request.card_no)
    if existing is not None and await repo.open_binding(session, openid, existing.id):
        raise AlreadyBound
    try:
        verified = await his.verify_card(
            card_no=request.card_no,
            holder_name=request.holder_name,
            id_or_phone_last4=request.id_or_phone_last4.upper(),
        )
    except HisRejected as exc:
        # Which of name / digits was wrong is not said, to the patient or to an attacker.
        raise CardNotVerified from exc
    except HisUnavailable as exc:
        raise Unavailable from exc
    if not policy.sms_enabled:
        card = await _bind(
            session,
            openid=openid,
            verified=verified,
            relationship=request.relationship.value,
            now=now,
            ip=ip,
            policy=policy,
            via="his",
        )
        return BindingStarted(challenge_id=None, phone_masked=verified.phone_masked, bound=card)
    if not verified.sms_phone:
        raise NoPhoneOnFile
    if sms is None:
        raise SmsFailed
    challenge_id = secrets.token_hex(16)
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        BindingChallenge(
            id=challenge_id,
            openid=openid,
            card_no=verified.card_no,
            relationship=request.relationship.value,
            card_type=verified.card_type.value,
            holder_name_masked=verified.holder_name_masked,
            id_number_masked=verified.id_number_masked,
            phone_masked=verified.phone_masked,
            code_hash=_code_hash(secret, challenge_id, code),
            attempts=0,
            created_at=now,
            expires_at=now + policy.code_ttl,
        )
    )
    await session.flush()
    try:
        await sms.send_code(phone=verified.sms_phone, code=code)
    except (SmsUnavailable, SmsRejected) as exc:
        raise SmsFailed from exc  # the caller's transaction rolls the challenge back
    return BindingStarted(challenge_id=challenge_id, phone_masked=verified.phone_masked)


async def confirm_binding(
    session: AsyncSession,
    *,
    openid: str,
    challenge_id: str,
    code: str,
    policy: BindingPolicy,
    secret: str,
    now: datetime,
    ip: str | None = None,
) -> BoundCard | CodeRefused:
    """Check the one-time code and bind the card.

    A wrong code is not an exception: it *returns* ``CodeRefused`` so the caller commits the
    used-up attempt (raising would roll the count back and allow unlimited guesses). After
    ``max_code_attempts`` wrong codes the challenge is dead, even for the right code.
    """
    challenge = await repo.challenge_for_update(session, challenge_id)
    if challenge is None or challenge.openid != openid or challenge.consumed_at is not None:
        raise ChallengeInvalid
    if challenge.expires_at <= now:
        raise ChallengeExpired
    if challenge.attempts >= policy.max_code_attempts:
        raise ChallengeInvalid
    if not await repo.count_attempt(session, challenge.id, challenge.attempts):
        raise ChallengeInvalid  # a parallel guess counted first
    if not hmac.compare_digest(challenge.code_hash, _code_hash(secret, challenge.id, code)):
        return CodeRefused(attempts_left=policy.max_code_attempts - challenge.attempts - 1)
    consumed = await session.execute(
        update(BindingChallenge)
        .where(BindingChallenge.id == challenge.id, BindingChallenge.consumed_at.is_(None))
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(consumed, "rowcount", 0):
        raise ChallengeInvalid
    if await repo.current_consent(session, openid) is None:
        raise ConsentRequired
    await _lock_account(session, openid)
    if await repo.count_open_bindings(session, openid) >= policy.max_cards:
        raise TooManyCards(max_cards=policy.max_cards)
    verified = CardVerification(
        card_no=challenge.card_no,
        card_type=CardType(challenge.card_type),
        holder_name_masked=challenge.holder_name_masked,
        id_number_masked=challenge.id_number_masked,
        phone_masked=challenge.phone_masked,
    )
    return await _bind(
        session,
        openid=openid,
        verified=verified,
        relationship=challenge.relationship,
        now=now,
        ip=ip,
        policy=policy,
        via="sms",
    )


async def _bind(
    session: AsyncSession,
    *,
    openid: str,
    verified: CardVerification,
    relationship: str,
    now: datetime,
    ip: str | None,
    policy: BindingPolicy,
    via: str,
) -> BoundCard:
    await session.execute(
        insert_ignoring_conflict(
            session,
            Card.__table__,
            {
                "card_no": verified.card_no,
                "card_type": verified.card_type.value,
                "holder_name_masked": verified.holder_name_masked,
                "id_number_masked": verified.id_number_masked,
                "phone_masked": verified.phone_masked,
                "status": "active",
                "verified_at": now,
                "created_at": now,
            },
            conflict_columns=["card_no"],
        )
    )
    # The HIS is the record: refresh what we show from what it just confirmed.
    await session.execute(
        update(Card)
        .where(Card.card_no == verified.card_no)
        .values(
            card_type=verified.card_type.value,
            holder_name_masked=verified.holder_name_masked,
            id_number_masked=verified.id_number_masked,
            phone_masked=verified.phone_masked,
            status="active",
            verified_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    card = await repo.card_by_no(session, verified.card_no)
    assert card is not None
    has_active = any(r.binding.is_active for r in await repo.open_bindings(session, openid))
    binding = CardBinding(
        openid=openid,
        card_id=card.id,
        relationship=relationship,
        is_active=not has_active,
        bound_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(binding)
            await session.flush()
    except IntegrityError as exc:
        raise AlreadyBound from exc
    if await repo.count_open_bindings(session, openid) > policy.max_cards:
        raise TooManyCards(max_cards=policy.max_cards)
    await audit.record(
        session,
        at=now,
        actor=_actor(openid),
        action="card.bind",
        record_type="card",
        record_id=card.id,
        card_id=card.id,
        ip=ip,
        detail={"relationship": relationship, "via": via},
    )
    scope = await scope_for(session, openid=openid)
    return scope.card(card.id)


# --------------------------------------------------------------------------- switching


async def set_active(session: AsyncSession, *, openid: str, card_id: int) -> BoundCard:
    scope = await scope_for(session, openid=openid)
    scope.card(card_id)  # refuses a card that is not this account's
    await repo.clear_active(session, openid)
    await session.execute(
        update(CardBinding)
        .where(
            CardBinding.openid == openid,
            CardBinding.card_id == card_id,
            CardBinding.unbound_at.is_(None),
        )
        .values(is_active=True)
        .execution_options(synchronize_session=False)
    )
    return (await scope_for(session, openid=openid)).card(card_id)


async def unbind(
    session: AsyncSession,
    *,
    openid: str,
    card_id: int,
    now: datetime,
    by: str = "patient",
    ip: str | None = None,
) -> None:
    scope = await scope_for(session, openid=openid)
    await _unbind(session, openid=openid, card=scope.card(card_id), now=now, by=by, ip=ip)


async def _unbind(
    session: AsyncSession, *, openid: str, card: BoundCard, now: datetime, by: str, ip: str | None
) -> None:
    result = await session.execute(
        update(CardBinding)
        .where(
            CardBinding.openid == openid,
            CardBinding.card_id == card.card_id,
            CardBinding.unbound_at.is_(None),
        )
        .values(unbound_at=now, unbound_by=by, is_active=False)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise CardNotFound
    if card.is_active:
        remaining = await repo.open_bindings(session, openid)
        if remaining:
            await set_active(session, openid=openid, card_id=remaining[0].card.id)
    actor = _actor(openid) if by in {"patient", "consent_withdrawn"} else by
    await audit.record(
        session,
        at=now,
        actor=actor,
        action="card.unbind",
        record_type="card",
        record_id=card.card_id,
        card_id=card.card_id,
        ip=ip,
        detail={"openid": openid, "by": by},
    )


# --------------------------------------------------------------------------- notifications


async def accounts_of_card_no(session: AsyncSession, *, card_no: str) -> list[str]:
    """Openids that hold an open binding to this card and may be sent notifications
    (consent not withdrawn); empty for a card nobody bound."""
    card = await repo.card_by_no(session, card_no)
    if card is None:
        return []
    openids = sorted(set(await repo.accounts_of_card(session, card.id)))
    return [o for o in openids if await may_message(session, openid=o)]


# --------------------------------------------------------------------------- HIS changes


async def mark_card(
    session: AsyncSession, *, card_no: str, status: str, merged_into: str | None = None
) -> bool:
    """Record that the HIS voided (``invalid``) or merged (``merged``) a card; the pages
    show it as such and features refuse to use it."""
    if status not in {"active", "invalid", "merged"}:
        raise ValueError(f"unknown card status {status!r}")
    result = await session.execute(
        update(Card)
        .where(Card.card_no == card_no)
        .values(status=status, merged_into_card_no=merged_into)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- staff


async def staff_lookup(
    session: AsyncSession, *, staff_actor: str, query: str, now: datetime, ip: str | None = None
) -> list[PatientScope]:
    """Customer service looks up bindings by openid or by card number (masked data only);
    the lookup itself is audited."""
    query = query.strip()
    openids: list[str] = []
    card = await repo.card_by_no(session, query)
    if card is not None:
        openids = await repo.accounts_of_card(session, card.id)
    elif await repo.count_open_bindings(session, query):
        openids = [query]
    scopes = [await scope_for(session, openid=o) for o in sorted(set(openids))]
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="card.lookup",
        record_type="card" if card else "account",
        record_id=str(card.id) if card else query[:128],
        card_id=card.id if card else None,
        ip=ip,
        detail={"accounts": len(scopes)},
    )
    return scopes


async def staff_unbind(
    session: AsyncSession,
    *,
    staff_actor: str,
    openid: str,
    card_id: int,
    reason: str,
    now: datetime,
    ip: str | None = None,
) -> None:
    scope = await scope_for(session, openid=openid)
    card = scope.card(card_id)
    await _unbind(session, openid=openid, card=card, now=now, by=staff_actor, ip=ip)
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="card.staff_unbind",
        record_type="card",
        record_id=card_id,
        card_id=card_id,
        ip=ip,
        detail={"openid": openid, "reason": reason},
    )
