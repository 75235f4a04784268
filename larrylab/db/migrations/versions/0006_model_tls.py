"""model: per-model TLS settings (`ca_file`, `verify`)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

- `ca_file`: a PEM bundle of the CAs to trust for the model's https upstream (None: the
  system's).
- `verify`: whether the upstream's certificate is verified (default true).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ca_file", sa.String(length=2000), nullable=True))
        batch_op.add_column(
            sa.Column("verify", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_column("verify")
        batch_op.drop_column("ca_file")
