"""Dead letters: messages the gateway could not take (an event or command that cannot be decoded, breaks the
contract's checks, or cannot be stored), kept where an admin sees them, with the subject, the reason and the
first bytes of the body.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("head", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("delivered", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("dead_letters_at", "dead_letters", ["at"])
    op.create_index("dead_letters_workflow", "dead_letters", ["workflow_id"])


def downgrade() -> None:
    op.drop_table("dead_letters")
