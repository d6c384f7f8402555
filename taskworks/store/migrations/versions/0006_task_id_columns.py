"""task id columns wide enough for a workflow step's id

A step with a ``timeout`` runs under the id ``<32 hex token>.<step name>``, up to 161
characters; journal and dead-letter rows of such steps did not fit varchar(64).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WIDTH = 255
#: table: (column, width before, nullable)
COLUMNS = {
    "journal": [("task_id", 64, False)],
    "dead_letters": [("task_id", 64, False), ("replay_task_id", 64, True)],
    "workflow_steps": [("task_id", 200, True)],
}


def upgrade() -> None:
    # PostgreSQL widens a varchar in place (no rewrite); SQLite copies the table (batch)
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, before, nullable in columns:
                batch.alter_column(column, existing_type=sa.String(before),
                                   type_=sa.String(WIDTH), existing_nullable=nullable)


def downgrade() -> None:
    # PostgreSQL refuses to narrow a column holding a longer id: nothing is truncated
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, before, nullable in columns:
                batch.alter_column(column, existing_type=sa.String(WIDTH),
                                   type_=sa.String(before), existing_nullable=nullable)
