"""Gemini's native protocol, eligibility and Larry's ratings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

- `experiment.unsupported`: what a candidate does with a request using a feature it cannot
  serve: "control" (default) or "strip".
- `request.protocol` ("openai" or "gemini"), `request.ineligible` (the features a candidate
  could not serve, comma-separated) and `request.stripped` (they were dropped for it).
- `feedback.thumb` (1 up, 0 down) and `feedback.categories` (JSON); `feedback.score` may be
  null (a thumb alone).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unsupported", sa.String(length=10), server_default="control", nullable=False)
        )
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("protocol", sa.String(length=10), server_default="openai", nullable=False)
        )
        batch_op.add_column(sa.Column("ineligible", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("stripped", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thumb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("categories", sa.Text(), server_default="{}", nullable=False))
        batch_op.alter_column("score", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM feedback WHERE score IS NULL")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.alter_column("score", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("categories")
        batch_op.drop_column("thumb")
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_column("stripped")
        batch_op.drop_column("ineligible")
        batch_op.drop_column("protocol")
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_column("unsupported")
