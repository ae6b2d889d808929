"""The event store behind streamable-HTTP resumability (2025-11-25 wire): any gateway process can replay.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_stream_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("message", JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("mcp_stream_events_stream", "mcp_stream_events", ["stream_id", "id"])
    op.create_index("mcp_stream_events_created_at", "mcp_stream_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("mcp_stream_events")
