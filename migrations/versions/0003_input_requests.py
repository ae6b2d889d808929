"""Input requests and approvals: the open question and the answers of a workflow; held outbox entries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("question", JSONB))
    op.add_column("workflows", sa.Column("answers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")))
    op.add_column("outbox", sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("outbox", "held")
    op.drop_column("workflows", "answers")
    op.drop_column("workflows", "question")
