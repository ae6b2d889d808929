"""Client-visible idempotency: a call may carry a key; the same caller, tool and key within the window give the
same workflow. `idempotency_key` is released (set to NULL) once it is older than the window.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("idempotency_key", sa.Text, nullable=True))
    op.add_column("workflows", sa.Column("arguments_hash", sa.Text, nullable=True))
    op.create_index(
        "workflows_idempotency",
        "workflows",
        ["caller", "tool", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("workflows_idempotency", table_name="workflows")
    op.drop_column("workflows", "arguments_hash")
    op.drop_column("workflows", "idempotency_key")
