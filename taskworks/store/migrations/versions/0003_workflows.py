"""workflows: definitions, runs, step runs

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workflow", sa.String(255), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("failed_step", sa.String(128)),
        sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("deadline", TS, index=True),
    )
    op.create_table(
        "workflow_steps",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("waiting", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("token", sa.String(36)),
        sa.Column("task_id", sa.String(200)),
        sa.Column("dispatched", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("skip_reason", sa.String(32)),
        sa.Column("queued_at", TS),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("workflow_steps")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_definitions")
