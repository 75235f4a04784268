"""Imported history: lineage of threads, messages and ratings taken from Larry's Chainlit
database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

- `imported`: one row per thread, message and rating imported from a source ("chainlit"),
  keyed by (source, kind, source_id), with the larrylab thread and message it became and the
  bot and PWS category of its thread; a rerun of the import skips what is here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imported",
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("source_id", sa.String(length=300), nullable=False),
        sa.Column("thread_id", sa.String(length=256), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("bot", sa.String(length=200), nullable=True),
        sa.Column("category", sa.String(length=40), nullable=True),
        sa.Column("imported_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "kind", "source_id", name="pk_imported"),
    )
    with op.batch_alter_table("imported", schema=None) as batch_op:
        batch_op.create_index("ix_imported_thread_id", ["thread_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("imported", schema=None) as batch_op:
        batch_op.drop_index("ix_imported_thread_id")
    op.drop_table("imported")
