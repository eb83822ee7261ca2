"""Staff accounts, sign-in with a second factor, lockout and server-side sessions.

Rules (all numbers are settings):
- a password (argon2) AND a TOTP code are needed for every sign-in; there is no account
  without a TOTP secret;
- a TOTP code is accepted once: the accepted time step is remembered per account and a code
  of that step or an earlier one is a replay, refused like a wrong code;
- ``lockout_attempts`` failures in a row lock the account for ``lockout_minutes``; while
  locked, even the right password and code are refused;
- a session ends after ``idle`` without a request or ``absolute`` after sign-in, whichever
  comes first; the cookie holds a random token and the database only its SHA-256.

Every sign-in, failure, lockout and sign-out is written to the audit log in the caller's
transaction. Services flush, never commit.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Generic, TypeVar

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.errors import BadStaffInput, StaffNotFound, UsernameTaken
from frontdesk.console.models import Role, StaffSession, StaffUser
from frontdesk.core import audit
from frontdesk.core.logging import request_id_var

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,31}$")
PASSWORD_MIN = 12
PASSWORD_MAX = 128
TOTP_PERIOD = 30
# One step either side: the phone's clock may be up to 30 s off. Replays are stopped by the
# remembered step, not by the window.
TOTP_WINDOW = 1

_hasher = PasswordHasher()
T = TypeVar("T")


async def _audit(session: AsyncSession, **fields: Any) -> None:
    # The request id ties the row to the web server's log line of the same request.
    await audit.record(session, request_id=request_id_var.get(), **fields)


def staff_actor(staff_id: int) -> str:
    return f"staff:{staff_id}"


# --------------------------------------------------------------------------- secrets


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    # Verifying against this when the username is unknown makes both answers take as long.
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(*, secret: str, username: str, issuer: str) -> str:
    """The ``otpauth://`` URI authenticator apps read (from a QR code or typed in)."""
    return str(
        pyotp.TOTP(secret, interval=TOTP_PERIOD).provisioning_uri(name=username, issuer_name=issuer)
    )


def totp_code(secret: str, at: datetime) -> str:
    """The code an authenticator shows at ``at`` (tests and the enrolment check use it)."""
    return str(pyotp.TOTP(secret, interval=TOTP_PERIOD).at(at))


def match_totp_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step whose code equals ``code`` within the window around ``at``, or None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    current = int(totp.timecode(at))
    matched: int | None = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        # Compare every candidate (no early exit) in constant time.
        if secrets.compare_digest(str(totp.generate_otp(step)), code):
            matched = step
    return matched


# --------------------------------------------------------------------------- accounts


def _check_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise BadStaffInput(field="username")
    return username


def _check_password(password: str) -> str:
    if not (PASSWORD_MIN <= len(password) <= PASSWORD_MAX) or "\x00" in password:
        raise BadStaffInput(field="password")
    return password


def _check_display_name(display_name: str) -> str:
    name = display_name.strip()
    if not (1 <= len(name) <= 64) or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise BadStaffInput(field="display_name")
    return name


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise BadStaffInput(field="role") from None


@dataclass(frozen=True)
class NewStaff:
    staff: StaffUser
    totp_secret: str  # shown once, as a QR code / URI, to enrol the authenticator


async def create_staff(
    session: AsyncSession,
    *,
    username: str,
    display_name: str,
    role: str,
    password: str,
    now: datetime,
    actor: str,
    ip: str | None = None,
) -> NewStaff:
    """Create an account with a fresh TOTP secret. Refuses a bad field or a taken username
    and then adds nothing."""
    username = _check_username(username)
    name = _check_display_name(display_name)
    checked_role = _check_role(role)
    _check_password(password)
    secret = new_totp_secret()
    staff = StaffUser(
        username=username,
        display_name=name,
        role=checked_role.value,
        password_hash=hash_password(password),
        totp_secret=secret,
        failed_attempts=0,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(staff)
            await session.flush()
    except IntegrityError:
        raise UsernameTaken(field="username") from None
    await _audit(
        session,
        at=now,
        actor=actor,
        action="staff.create",
        record_type="staff",
        record_id=staff.id,
        ip=ip,
        detail={"username": username, "role": checked_role.value},
    )
    return NewStaff(staff=staff, totp_secret=secret)


async def get_staff(session: AsyncSession, staff_id: int) -> StaffUser:
    staff = await session.get(StaffUser, staff_id)
    if staff is None:
        raise StaffNotFound()
    return staff


async def set_disabled(
    session: AsyncSession,
    *,
    staff_id: int,
    disabled: bool,
    now: datetime,
    actor: str,
    ip: str | None = None,
) -> StaffUser:
    """Disable (ending every session at once) or re-enable an account."""
    staff = await get_staff(session, staff_id)
    await session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(disabled_at=now if disabled else None, failed_attempts=0, locked_until_at=None)
        .execution_options(synchronize_session=False)
    )
    if disabled:
        await _revoke_all(session, staff_id=staff_id, now=now)
    await _audit(
        session,
        at=now,
        actor=actor,
        action="staff.disable" if disabled else "staff.enable",
        record_type="staff",
        record_id=staff_id,
        ip=ip,
    )
    await session.refresh(staff)
    return staff


async def reset_totp(
    session: AsyncSession, *, staff_id: int, now: datetime, actor: str, ip: str | None = None
) -> NewStaff:
    """A new TOTP secret (lost phone): the old codes stop working and every session ends."""
    staff = await get_staff(session, staff_id)
    secret = new_totp_secret()
    await session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(totp_secret=secret, totp_last_step=None)
        .execution_options(synchronize_session=False)
    )
    await _revoke_all(session, staff_id=staff_id, now=now)
    await _audit(
        session,
        at=now,
        actor=actor,
        action="staff.totp_reset",
        record_type="staff",
        record_id=staff_id,
        ip=ip,
    )
    await session.refresh(staff)
    return NewStaff(staff=staff, totp_secret=secret)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    has_next: bool


async def list_staff(
    session: AsyncSession, *, search: str = "", page: int = 1, page_size: int = 50
) -> Page[StaffUser]:
    stmt = select(StaffUser)
    needle = search.strip().lower()
    if needle:
        stmt = stmt.where(
            or_(
                func.lower(StaffUser.username).contains(needle, autoescape=True),
                func.lower(StaffUser.display_name).contains(needle, autoescape=True),
            )
        )
    page = max(page, 1)
    rows = list(
        (
            await session.execute(
                stmt.order_by(StaffUser.username)
                .offset((page - 1) * page_size)
                .limit(page_size + 1)
            )
        ).scalars()
    )
    return Page(items=rows[:page_size], page=page, has_next=len(rows) > page_size)


async def find_staff_by_username(session: AsyncSession, username: str) -> StaffUser | None:
    return (
        await session.execute(select(StaffUser).where(StaffUser.username == username))
    ).scalar_one_or_none()


# --------------------------------------------------------------------------- sign-in


@dataclass(frozen=True)
class Policy:
    idle: timedelta
    absolute: timedelta
    lockout_attempts: int
    lockout: timedelta


@dataclass(frozen=True)
class SignedIn:
    staff_id: int
    token: str  # goes into the cookie; never stored


@dataclass(frozen=True)
class Refused:
    # "bad_credentials" (any of: unknown user, disabled, wrong password, wrong or replayed
    # code: the page does not say which) or "locked".
    reason: str


async def sign_in(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    code: str,
    now: datetime,
    policy: Policy,
    ip: str | None = None,
    user_agent: str | None = None,
) -> SignedIn | Refused:
    """Check password and TOTP code; on success open a session, otherwise count a failure.

    The failure count and lock are written with guarded statements, so parallel attempts
    cannot slip past the limit by racing each other.
    """
    staff = await find_staff_by_username(session, username[:64])
    if staff is None or staff.disabled_at is not None:
        verify_password(_dummy_hash(), password)
        await _audit(
            session,
            at=now,
            actor="anonymous" if staff is None else staff_actor(staff.id),
            action="staff.signin",
            record_type="staff",
            record_id="unknown" if staff is None else staff.id,
            ip=ip,
            outcome="denied",
            # Only a well-formed name is kept: people type passwords into the name field.
            detail={
                "reason": "unknown_user" if staff is None else "disabled",
                "username": username if USERNAME_RE.fullmatch(username) else "(malformed)",
            },
        )
        return Refused("bad_credentials")
    if staff.locked_until_at is not None and staff.locked_until_at > now:
        await _audit(
            session,
            at=now,
            actor=staff_actor(staff.id),
            action="staff.signin",
            record_type="staff",
            record_id=staff.id,
            ip=ip,
            outcome="locked",
            detail={"locked_until": staff.locked_until_at.isoformat()},
        )
        return Refused("locked")

    reason: str | None = None
    if not verify_password(staff.password_hash, password):
        reason = "bad_password"
    else:
        step = match_totp_step(staff.totp_secret, code, now)
        if step is None:
            reason = "bad_code"
        else:
            accepted = await session.execute(
                update(StaffUser)
                .where(
                    StaffUser.id == staff.id,
                    or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
                    or_(StaffUser.locked_until_at.is_(None), StaffUser.locked_until_at <= now),
                )
                .values(
                    totp_last_step=step, failed_attempts=0, locked_until_at=None, last_signin_at=now
                )
                .execution_options(synchronize_session=False)
            )
            if accepted.rowcount != 1:  # type: ignore[attr-defined]
                reason = "replayed_code"
    if reason is None:
        token = await _open_session(
            session, staff_id=staff.id, now=now, policy=policy, ip=ip, user_agent=user_agent
        )
        await _audit(
            session,
            at=now,
            actor=staff_actor(staff.id),
            action="staff.signin",
            record_type="staff",
            record_id=staff.id,
            ip=ip,
        )
        if _hasher.check_needs_rehash(staff.password_hash):
            await session.execute(
                update(StaffUser)
                .where(StaffUser.id == staff.id)
                .values(password_hash=hash_password(password))
                .execution_options(synchronize_session=False)
            )
        return SignedIn(staff_id=staff.id, token=token)

    await _count_failure(session, staff_id=staff.id, now=now, policy=policy, ip=ip)
    await _audit(
        session,
        at=now,
        actor=staff_actor(staff.id),
        action="staff.signin",
        record_type="staff",
        record_id=staff.id,
        ip=ip,
        outcome="denied",
        detail={"reason": reason},
    )
    return Refused("bad_credentials")


async def _count_failure(
    session: AsyncSession, *, staff_id: int, now: datetime, policy: Policy, ip: str | None
) -> None:
    await session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(failed_attempts=StaffUser.failed_attempts + 1)
        .execution_options(synchronize_session=False)
    )
    locked = await session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id, StaffUser.failed_attempts >= policy.lockout_attempts)
        .values(failed_attempts=0, locked_until_at=now + policy.lockout)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount == 1:  # type: ignore[attr-defined]
        await _audit(
            session,
            at=now,
            actor=staff_actor(staff_id),
            action="staff.lockout",
            record_type="staff",
            record_id=staff_id,
            ip=ip,
            outcome="locked",
            detail={"minutes": int(policy.lockout.total_seconds() // 60)},
        )


async def _open_session(
    session: AsyncSession,
    *,
    staff_id: int,
    now: datetime,
    policy: Policy,
    ip: str | None,
    user_agent: str | None,
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=hash_token(token),
            staff_id=staff_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
            ip=ip,
            user_agent=(user_agent or "")[:256] or None,
        )
    )
    await session.flush()
    return token


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Principal:
    """The signed-in staff member of one request."""

    staff_id: int
    username: str
    display_name: str
    role: Role
    session_id: int
    csrf_token: str

    @property
    def actor(self) -> str:
        return staff_actor(self.staff_id)


@dataclass(frozen=True)
class NoSession:
    reason: str  # "missing" | "unknown" | "expired"


async def resolve_session(
    session: AsyncSession, *, token: str | None, now: datetime, policy: Policy
) -> Principal | NoSession:
    """The staff member behind a cookie token, touching the session's idle timer.

    An unknown, revoked or tampered token finds nothing; an expired one is revoked now.
    """
    if not token or len(token) > 128:
        return NoSession("missing")
    row = (
        await session.execute(
            select(StaffSession, StaffUser)
            .join(StaffUser, StaffUser.id == StaffSession.staff_id)
            .where(StaffSession.token_hash == hash_token(token))
        )
    ).one_or_none()
    if row is None:
        return NoSession("unknown")
    staff_session, staff = row
    if staff_session.revoked_at is not None or staff.disabled_at is not None:
        return NoSession("unknown")
    if now >= staff_session.expires_at or now - staff_session.last_seen_at >= policy.idle:
        await session.execute(
            update(StaffSession)
            .where(StaffSession.id == staff_session.id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        return NoSession("expired")
    await session.execute(
        update(StaffSession)
        .where(StaffSession.id == staff_session.id)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return Principal(
        staff_id=staff.id,
        username=staff.username,
        display_name=staff.display_name,
        role=Role(staff.role),
        session_id=staff_session.id,
        csrf_token=staff_session.csrf_token,
    )


async def sign_out(
    session: AsyncSession,
    *,
    principal: Principal,
    now: datetime,
    everywhere: bool = False,
    ip: str | None = None,
) -> int:
    """End this session, or every session of the account; returns how many were ended."""
    if everywhere:
        ended = await _revoke_all(session, staff_id=principal.staff_id, now=now)
    else:
        result = await session.execute(
            update(StaffSession)
            .where(StaffSession.id == principal.session_id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        ended = int(result.rowcount)  # type: ignore[attr-defined]
    await _audit(
        session,
        at=now,
        actor=principal.actor,
        action="staff.signout_all" if everywhere else "staff.signout",
        record_type="staff",
        record_id=principal.staff_id,
        ip=ip,
        detail={"sessions": ended},
    )
    return ended


async def _revoke_all(session: AsyncSession, *, staff_id: int, now: datetime) -> int:
    result = await session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    if not given:
        return False
    return secrets.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
