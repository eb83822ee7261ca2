"""catalog_suspension_reason: the HIS's reason of a clinic suspension, kept on the schedule

Revision ID: 0930_catalog_suspension_reason
Revises: 0610_booking_suspension
Create Date: 2026-11-28 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0930_catalog_suspension_reason"
down_revision: str | None = "0610_booking_suspension"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "catalog_schedule", sa.Column("suspension_reason", sa.String(length=200), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("catalog_schedule", "suspension_reason")
