"""per-arm running totals (arm_stat, arm_thread), backfilled from existing rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "arm_stat",
        sa.Column("experiment", sa.String(length=200), nullable=False),
        sa.Column("arm", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("sum_squares", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("experiment", "arm", "metric"),
    )
    op.create_table(
        "arm_thread",
        sa.Column("experiment", sa.String(length=200), nullable=False),
        sa.Column("arm", sa.String(length=200), nullable=False),
        sa.Column("thread_id", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("experiment", "arm", "thread_id"),
    )
    from larrylab.rollups import rebuild_rollups_on

    rebuild_rollups_on(op.get_bind(), buckets=False)


def downgrade() -> None:
    op.drop_table("arm_thread")
    op.drop_table("arm_stat")
