"""request log: latency buckets instead of latency indexes; fewer indexes per logged request

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

- `arm_latency` counts successful requests per arm and latency bucket (`rollups._sketch`),
  backfilled from the rows; percentiles and histograms read it, so the two indexes ordered by
  latency and time to first token go. Each took a write at a random place per logged request.
- `ix_request_exp_arm_thread` goes: distinct threads per arm come from `arm_thread` (0003).
- `message` is keyed by (thread_id, id) instead of by id with an index on thread_id: one index
  fewer per stored message, and a thread's messages sit together (they are read by thread).
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

_LATENCY_INDEXES = {
    "ix_request_exp_arm_status_latency": ["experiment", "arm", "status", "latency_ms"],
    "ix_request_exp_arm_status_ttft": ["experiment", "arm", "status", "ttft_ms"],
}

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "arm_latency",
        sa.Column("experiment", sa.String(length=200), nullable=False),
        sa.Column("arm", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("experiment", "arm", "metric", "bucket"),
    )
    from larrylab.rollups import rebuild_buckets_on

    rebuild_buckets_on(op.get_bind())
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_index("ix_request_exp_arm_thread")
        for name in _LATENCY_INDEXES:
            batch_op.drop_index(name)
    _rekey_message(["thread_id", "id"], thread_index=False)


def downgrade() -> None:
    _rekey_message(["id"], thread_index=True)
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.create_index(
            "ix_request_exp_arm_thread", ["experiment", "arm", "thread_id"], unique=False
        )
        for name, columns in _LATENCY_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    op.drop_table("arm_latency")


def _rekey_message(key: list[str], *, thread_index: bool) -> None:
    """Give `message` the primary key `key`, with or without its own thread_id index."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE message DROP CONSTRAINT IF EXISTS message_pkey")
        op.execute("ALTER TABLE message DROP CONSTRAINT IF EXISTS pk_message")
        op.create_primary_key("pk_message", "message", key)
        if thread_index:
            op.create_index("ix_message_thread_id", "message", ["thread_id"], unique=False)
        else:
            op.drop_index("ix_message_thread_id", table_name="message")
        return
    # SQLite rebuilds the table; SQLAlchemy warns that the copied columns' old key is replaced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*primary_key=True, not matching")
        with op.batch_alter_table("message", recreate="always") as batch_op:
            if thread_index:
                batch_op.create_index("ix_message_thread_id", ["thread_id"], unique=False)
            else:
                batch_op.drop_index("ix_message_thread_id")
            batch_op.create_primary_key("pk_message", key)
