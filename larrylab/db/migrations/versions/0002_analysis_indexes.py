"""indexes for per-arm analysis

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_index("ix_request_experiment_arm")
        batch_op.create_index("ix_request_exp_arm_thread", ["experiment", "arm", "thread_id"], unique=False)
        batch_op.create_index(
            "ix_request_exp_arm_status_latency", ["experiment", "arm", "status", "latency_ms"], unique=False
        )
        batch_op.create_index("ix_request_exp_arm_status_ttft", ["experiment", "arm", "status", "ttft_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_index("ix_request_exp_arm_status_ttft")
        batch_op.drop_index("ix_request_exp_arm_status_latency")
        batch_op.drop_index("ix_request_exp_arm_thread")
        batch_op.create_index("ix_request_experiment_arm", ["experiment", "arm"], unique=False)
