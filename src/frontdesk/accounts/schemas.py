"""What the accounts domain takes in and gives out."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from frontdesk.accounts.errors import CardNotFound


class Relationship(StrEnum):
    self_ = "self"
    parent = "parent"
    child = "child"
    spouse = "spouse"
    other = "other"


def _clean_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError("the name contains control characters")
    if not re.fullmatch(r"[\w·•.\- ]{1,32}", value):
        raise ValueError("not a person's name")
    return value


CardNo = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9A-Za-z]{4,32}$")]
HolderName = Annotated[str, StringConstraints(max_length=32), AfterValidator(_clean_name)]
Last4 = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{3}[0-9Xx]$")]
OtpCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{6}$")]


class BindRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    card_no: CardNo
    holder_name: HolderName
    id_or_phone_last4: Last4
    relationship: Relationship


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: OtpCode


@dataclass(frozen=True)
class BoundCard:
    card_id: int
    card_no: str
    card_type: str
    holder_name_masked: str
    id_number_masked: str
    phone_masked: str
    relationship: str
    status: str
    is_active: bool
    bound_at: datetime

    @property
    def usable(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class PatientScope:
    """The caller and the cards bound to their account: every patient-data read starts here.

    Pages and APIs ask ``card(card_id)`` for a card named in a URL; an id that is not bound
    to this account is "not found", exactly like an id that does not exist.
    """

    openid: str
    cards: tuple[BoundCard, ...]

    @property
    def active(self) -> BoundCard | None:
        return next((c for c in self.cards if c.is_active), None)

    @property
    def card_ids(self) -> frozenset[int]:
        return frozenset(c.card_id for c in self.cards)

    @property
    def card_nos(self) -> frozenset[str]:
        return frozenset(c.card_no for c in self.cards)

    def card(self, card_id: int) -> BoundCard:
        for card in self.cards:
            if card.card_id == card_id:
                return card
        raise CardNotFound

    def require_active(self) -> BoundCard:
        if self.active is None:
            raise CardNotFound
        return self.active


@dataclass(frozen=True)
class BindingStarted:
    """Either a code was sent (``challenge_id``) or, with the SMS step off, the card is bound."""

    challenge_id: str | None
    phone_masked: str
    bound: BoundCard | None = None
