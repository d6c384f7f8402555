"""task runtime: journal, dead letters, notifications

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False, index=True),
        sa.Column("queue", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("args", sa.JSON),
        sa.Column("kwargs", sa.JSON),
        sa.Column("result", sa.Text),
        sa.Column("exc_type", sa.String(255)),
        sa.Column("exc_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("severity", sa.String(16), index=True),
        sa.Column("hostname", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS, nullable=False, index=True),
        sa.Column("duration_ms", sa.Float),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False, index=True),
        sa.Column("queue", sa.String(128)),
        sa.Column("args", sa.JSON),
        sa.Column("kwargs", sa.JSON),
        sa.Column("exc_type", sa.String(255), index=True),
        sa.Column("exc_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("severity", sa.String(16)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("failed_at", TS, nullable=False, index=True),
        sa.Column("replay_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("replayed_at", TS),
        sa.Column("replay_task_id", sa.String(64)),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False, index=True),
        sa.Column("exc_type", sa.String(255)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False, server_default="1"),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("dead_letters")
    op.drop_table("journal")
