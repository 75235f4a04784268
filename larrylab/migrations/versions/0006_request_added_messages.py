"""request log: each request holds the messages it added to its thread's transcript

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Until now every new message was a row of `message`, whose unique (thread_id, content hash)
key put each insert on a random leaf page of its thread's range: the pages a log batch dirtied,
and the request log's cost per row, grew with the store. A request row now carries the messages
it added (`added_messages`, a JSON array) and the id of the message they follow
(`added_after_id`); readers hash them again to rebuild the tree
(`larrylab.platform.transcripts.thread_messages`). `message` keeps what was stored before and
is read alongside. Downgrading copies the added messages into `message` first, so no
transcript is lost.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("added_after_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("added_messages", sa.Text(), nullable=True))


def downgrade() -> None:
    _copy_added_messages(op.get_bind())
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_column("added_messages")
        batch_op.drop_column("added_after_id")


def _copy_added_messages(conn: sa.Connection) -> None:
    """Insert the messages requests added into `message` (those it lacks), thread by thread."""
    from larrylab.platform.models import Message
    from larrylab.platform.transcripts import thread_messages

    table = Message.__table__  # type: ignore[attr-defined]
    added = "SELECT DISTINCT thread_id FROM request WHERE added_messages IS NOT NULL"
    now = datetime.now(UTC)
    for thread_id in conn.exec_driver_sql(added).scalars().all():
        stored = set(conn.execute(sa.select(table.c.id).where(table.c.thread_id == thread_id)))
        nodes = thread_messages(conn, thread_id)
        rows = []
        for mid, (parent, body) in nodes.items():
            if (mid,) in stored:
                continue
            depth, cursor = 0, parent
            while cursor is not None and cursor in nodes:
                depth, cursor = depth + 1, nodes[cursor][0]
            role = str(json.loads(body).get("role", ""))
            rows.append(
                {"id": mid, "thread_id": thread_id, "parent_id": parent, "depth": depth}
                | {"role": role, "body": body, "created_at": now}
            )
        if rows:
            conn.execute(table.insert(), rows)
