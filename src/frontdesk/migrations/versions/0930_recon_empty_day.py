"""recon_run.empty_day: a day WeChat has no bill for and our ledger has no WeChat movement

Revision ID: 0930_recon_empty_day
Revises: 0910_reconciliation
Create Date: 2026-11-28 00:20:00

WeChat answers NO_STATEMENT_EXIST both before the bill is published and for a day without
any transaction. Such a day is reconciled against an empty bill once the bill is certainly
published; the run says so instead of showing a bill hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0930_recon_empty_day"
down_revision: str | None = "0910_reconciliation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "recon_run",
        sa.Column("empty_day", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("recon_run") as batch_op:
        batch_op.drop_column("empty_day")
