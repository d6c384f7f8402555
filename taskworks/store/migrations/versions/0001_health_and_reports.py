"""health checks and reports

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "health_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("checked_at", TS, nullable=False),
        sa.Column("healthy", sa.Boolean, nullable=False),
        sa.Column("broker_ok", sa.Boolean, nullable=False),
        sa.Column("database_ok", sa.Boolean, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_health_checks_checked_at", "health_checks", ["checked_at"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_reports_kind", "reports", ["kind"])
    op.create_index("ix_reports_created_at", "reports", ["created_at"])


def downgrade() -> None:
    op.drop_table("reports")
    op.drop_table("health_checks")
