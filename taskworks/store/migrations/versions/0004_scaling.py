"""autoscaler decisions

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scaling_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("group", sa.String(128), nullable=False),
        sa.Column("previous", sa.Integer, nullable=False),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("backlog", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cpu_percent", sa.Float, nullable=False),
        sa.Column("memory_percent", sa.Float, nullable=False),
        sa.Column("observations", sa.JSON, nullable=False),
    )
    op.create_index("ix_scaling_decisions_decided_at", "scaling_decisions", ["decided_at"])
    op.create_index("ix_scaling_decisions_group", "scaling_decisions", ["group"])


def downgrade() -> None:
    op.drop_table("scaling_decisions")
