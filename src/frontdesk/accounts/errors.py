"""Errors of the accounts domain; words for people are in locale/accounts.*.json."""

from __future__ import annotations

from frontdesk.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound


class ConsentRequired(Forbidden):
    code = "consent_required"


class CardNotVerified(Invalid):
    """The HIS did not confirm card number + name + last digits (which one is not said)."""

    code = "card_not_verified"


class TooManyCards(Conflict):
    code = "too_many_cards"


class AlreadyBound(Conflict):
    code = "card_already_bound"


class CardNotFound(NotFound):
    code = "card_not_found"


class ChallengeInvalid(Invalid):
    """The code is wrong, expired or used up; the patient starts again."""

    code = "code_invalid"


class ChallengeExpired(Invalid):
    code = "code_expired"


class CardUnusable(Conflict):
    code = "card_unusable"


class SmsFailed(DomainError):
    code = "sms_failed"
    status = 503


class NoPhoneOnFile(Conflict):
    """The HIS holds no mobile number for the card, so no code can be sent to its holder."""

    code = "card_no_phone"
