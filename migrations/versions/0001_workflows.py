"""Workflows, their append-only event history, the outbox, and the admin views.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = (
    "'pending', 'dispatched', 'running', 'input_required', 'completed', 'failed', 'cancelled', 'timed_out', "
    "'dead_lettered'"
)
_OPEN = "status NOT IN ('completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered')"


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("tool_version", sa.Text, nullable=False),
        sa.Column("arguments", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("last_seq", sa.Integer, nullable=False, server_default=sa.text("-1")),
        sa.Column("progress", sa.Double),
        sa.Column("progress_total", sa.Double),
        sa.Column("progress_message", sa.Text),
        sa.Column("result", JSONB),
        sa.Column("error", JSONB),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("trace_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="workflows_status_known"),
    )
    op.create_index("workflows_created_at", "workflows", ["created_at"])
    op.create_index("workflows_caller_created_at", "workflows", ["caller", "created_at"])
    op.create_index("workflows_open_deadline", "workflows", ["deadline"], postgresql_where=sa.text(_OPEN))

    op.create_table(
        "workflow_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.Text, sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_key", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text),
        sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("note", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("workflow_id", "event_key", name="workflow_events_key"),
    )
    op.create_index("workflow_events_workflow", "workflow_events", ["workflow_id", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("outbox_created_at", "outbox", ["created_at"])

    # Admin views: what is open right now, and a one-line summary per workflow.
    op.execute(
        """
        CREATE VIEW workflow_summary AS
        SELECT w.id, w.tool, w.tool_version, w.status, w.caller, w.progress, w.progress_total,
               w.progress_message, w.created_at, w.updated_at, w.deadline,
               w.updated_at - w.created_at AS elapsed,
               (SELECT count(*) FROM workflow_events e WHERE e.workflow_id = w.id) AS event_count,
               w.error ->> 'code' AS error_code
        FROM workflows w
        """
    )
    op.execute(f"CREATE VIEW open_workflows AS SELECT * FROM workflow_summary WHERE {_OPEN}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS open_workflows")
    op.execute("DROP VIEW IF EXISTS workflow_summary")
    op.drop_table("outbox")
    op.drop_table("workflow_events")
    op.drop_table("workflows")
