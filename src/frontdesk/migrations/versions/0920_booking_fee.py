"""booking_fee: the registration fee paid when booking (hold, payment, fee state)

Revision ID: 0920_booking_fee
Revises: 0600_booking
Create Date: 2026-11-27 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import frontdesk.core.models

revision: str = "0920_booking_fee"
down_revision: str | None = "0600_booking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "booking",
        sa.Column(
            "hold_expires_at", frontdesk.core.models.UTCDateTime(timezone=True), nullable=True
        ),
    )
    op.add_column(
        "booking",
        sa.Column(
            "fee_payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
    )
    op.add_column("booking", sa.Column("fee_state", sa.String(length=16), nullable=True))
    op.create_index(op.f("ix_booking_fee_payment_id"), "booking", ["fee_payment_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_booking_fee_payment_id"), table_name="booking")
    op.drop_column("booking", "fee_state")
    op.drop_column("booking", "fee_payment_id")
    op.drop_column("booking", "hold_expires_at")
