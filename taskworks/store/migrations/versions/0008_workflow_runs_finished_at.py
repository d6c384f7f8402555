"""index workflow_runs.finished_at

The hourly cleanup deletes the runs that ended before the retention cutoff
(``finished_at < cutoff``); without an index it read every finished run to find them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEX = "ix_workflow_runs_finished_at"


def upgrade() -> None:
    op.create_index(INDEX, "workflow_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="workflow_runs")
