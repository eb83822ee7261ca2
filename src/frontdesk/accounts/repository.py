"""All SQL of the accounts domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.models import BindingChallenge, Card, CardBinding, Consent
from frontdesk.core.sql import pg_connection


@dataclass(frozen=True)
class BoundCardRow:
    binding: CardBinding
    card: Card


async def open_bindings(session: AsyncSession, openid: str) -> list[BoundCardRow]:
    rows = await session.execute(
        select(CardBinding, Card)
        .join(Card, Card.id == CardBinding.card_id)
        .where(CardBinding.openid == openid, CardBinding.unbound_at.is_(None))
        .order_by(CardBinding.bound_at, CardBinding.id)
    )
    return [BoundCardRow(binding=b, card=c) for b, c in rows.all()]


# The scope of every patient request: the open bindings' columns, built once and read
# without the ORM's identity map (it runs on every H5 page and patient API call).
_SCOPE = (
    select(
        Card.id,
        Card.card_no,
        Card.card_type,
        Card.holder_name_masked,
        Card.id_number_masked,
        Card.phone_masked,
        CardBinding.relationship,
        Card.status,
        CardBinding.is_active,
        CardBinding.bound_at,
    )
    .join(Card, Card.id == CardBinding.card_id)
    .where(CardBinding.openid == bindparam("openid"), CardBinding.unbound_at.is_(None))
    .order_by(CardBinding.bound_at, CardBinding.id)
)


# The same statement compiled once for asyncpg ($1 = openid): on PostgreSQL the scope is
# read straight through the session's asyncpg connection, in the session's transaction,
# which costs a fraction of SQLAlchemy's per-statement Python (every patient request reads
# it; at the booking release time that is thousands a second).
_SCOPE_PG = str(_SCOPE.compile(dialect=asyncpg_dialect()))  # type: ignore[no-untyped-call]


async def scope_rows(session: AsyncSession, openid: str) -> list[Any]:
    """(card id, card no, type, masked holder/id/phone, relationship, status, is active,
    bound at) of each open binding, oldest first."""
    pg = await pg_connection(session)
    if pg is not None:
        return list(await pg.fetch(_SCOPE_PG, openid))
    conn = await session.connection()
    return list((await conn.execute(_SCOPE, {"openid": openid})).all())


async def count_open_bindings(session: AsyncSession, openid: str) -> int:
    stmt = (
        select(func.count())
        .select_from(CardBinding)
        .where(CardBinding.openid == openid, CardBinding.unbound_at.is_(None))
    )
    return int((await session.execute(stmt)).scalar_one())


async def card_by_no(session: AsyncSession, card_no: str) -> Card | None:
    return (await session.execute(select(Card).where(Card.card_no == card_no))).scalar_one_or_none()


async def open_binding(session: AsyncSession, openid: str, card_id: int) -> CardBinding | None:
    stmt = select(CardBinding).where(
        CardBinding.openid == openid,
        CardBinding.card_id == card_id,
        CardBinding.unbound_at.is_(None),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def clear_active(session: AsyncSession, openid: str) -> None:
    await session.execute(
        update(CardBinding)
        .where(CardBinding.openid == openid, CardBinding.is_active.is_(True))
        .values(is_active=False)
        .execution_options(synchronize_session=False)
    )


async def current_consent(session: AsyncSession, openid: str) -> Consent | None:
    stmt = (
        select(Consent)
        .where(Consent.openid == openid, Consent.withdrawn_at.is_(None))
        .order_by(Consent.accepted_at.desc(), Consent.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def withdraw_consents(session: AsyncSession, openid: str, at: datetime) -> int:
    result = await session.execute(
        update(Consent)
        .where(Consent.openid == openid, Consent.withdrawn_at.is_(None))
        .values(withdrawn_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def challenge_for_update(session: AsyncSession, challenge_id: str) -> BindingChallenge | None:
    stmt = select(BindingChallenge).where(BindingChallenge.id == challenge_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def count_attempt(session: AsyncSession, challenge_id: str, attempts_seen: int) -> bool:
    """Count a code attempt with a guarded update, so parallel guesses each count."""
    result = await session.execute(
        update(BindingChallenge)
        .where(
            BindingChallenge.id == challenge_id,
            BindingChallenge.attempts == attempts_seen,
            BindingChallenge.consumed_at.is_(None),
        )
        .values(attempts=attempts_seen + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def accounts_of_card(session: AsyncSession, card_id: int) -> list[str]:
    rows = await session.execute(
        select(CardBinding.openid).where(
            CardBinding.card_id == card_id, CardBinding.unbound_at.is_(None)
        )
    )
    return list(rows.scalars())
