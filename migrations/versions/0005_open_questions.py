"""Several open questions at once: `questions` (a JSON array, in the order asked) replaces `question`.

A worker may ask several things together (a form, a sample of the client's model, the client's roots); each is
answered on its own, and the workflow stays `input_required` until the last is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("questions", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")))
    # Only an open question moves over: the old column could hold JSON null (not SQL NULL), and ended workflows
    # kept their last question.
    op.execute(
        "UPDATE workflows SET questions = jsonb_build_array(question) "
        "WHERE status = 'input_required' AND jsonb_typeof(question) = 'object'"
    )
    op.drop_column("workflows", "question")


def downgrade() -> None:
    op.add_column("workflows", sa.Column("question", JSONB))
    op.execute("UPDATE workflows SET question = questions -> 0 WHERE jsonb_array_length(questions) > 0")
    op.drop_column("workflows", "questions")
