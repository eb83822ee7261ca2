"""billing_event is append-only, like the audit log

Revision ID: 0920_billing_event_append_only
Revises: 0910_billing_window
Create Date: 2026-11-27 21:40:00

Every payment's and refund's event history is shown to finance as evidence (issue 8): no
role, and no bug, may rewrite or delete it. Triggers on both databases refuse UPDATE and
DELETE (and TRUNCATE on PostgreSQL), as 0001_core does for ``audit_log``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0920_billing_event_append_only"
down_revision: str | None = "0910_billing_window"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION billing_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'billing_event is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER billing_event_no_change BEFORE UPDATE OR DELETE ON billing_event "
            "FOR EACH ROW EXECUTE FUNCTION billing_event_append_only()"
        )
        op.execute(
            "CREATE TRIGGER billing_event_no_truncate BEFORE TRUNCATE ON billing_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION billing_event_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER billing_event_no_update BEFORE UPDATE ON billing_event "
            "BEGIN SELECT RAISE(ABORT, 'billing_event is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER billing_event_no_delete BEFORE DELETE ON billing_event "
            "BEGIN SELECT RAISE(ABORT, 'billing_event is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER billing_event_no_truncate ON billing_event")
        op.execute("DROP TRIGGER billing_event_no_change ON billing_event")
        op.execute("DROP FUNCTION billing_event_append_only()")
    else:
        op.execute("DROP TRIGGER billing_event_no_update")
        op.execute("DROP TRIGGER billing_event_no_delete")
