"""booking_suspension: clinic suspensions entered by the scheduling office

Revision ID: 0610_booking_suspension
Revises: 0600_booking
Create Date: 2026-11-27 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import frontdesk.core.models

revision: str = "0610_booking_suspension"
down_revision: str | None = "0600_booking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schedule_suspension",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("request_ref", sa.String(length=32), nullable=False),
        sa.Column("schedule_id", _ID, nullable=False),
        sa.Column("his_schedule_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", frontdesk.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("booked_at_request", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("refusal_code", sa.String(length=64), nullable=True),
        sa.Column("finished_at", frontdesk.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pending_key", sa.String(length=48), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_suspension")),
        sa.UniqueConstraint("pending_key", name=op.f("uq_schedule_suspension_pending_key")),
        sa.UniqueConstraint("request_ref", name=op.f("uq_schedule_suspension_request_ref")),
    )
    with op.batch_alter_table("schedule_suspension", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_schedule_suspension_schedule_id"), ["schedule_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("schedule_suspension", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedule_suspension_schedule_id"))
    op.drop_table("schedule_suspension")
