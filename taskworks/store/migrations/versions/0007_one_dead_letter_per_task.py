"""one end per task id: one dead letter, one success or failure row in the journal

Two copies of one task (a worker killed between publishing a retry and acknowledging
the attempt leaves two; so does a publish the broker took but never confirmed) could
each end it: two dead letters, or two success rows. A task ends once: a unique index
refuses the second letter of a task id (the copy that tries it records nothing:
runtime/dlq.py), and a partial unique index the second success or failure row (the
journal writer drops it). Ends recorded twice before this revision keep the first.
A workflow step's dead letter is replayed by resuming its run, found by the step's
task id: indexed now.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_dead_letters_task_id"
JOURNAL_ONE_END = "uq_journal_one_end"
ENDS = "state IN ('success', 'failure')"
STEP_INDEX = "ix_workflow_steps_task_id"


def upgrade() -> None:
    op.execute("DELETE FROM dead_letters WHERE id NOT IN "
               "(SELECT MIN(id) FROM dead_letters GROUP BY task_id)")
    op.drop_index(INDEX, table_name="dead_letters")
    op.create_index(INDEX, "dead_letters", ["task_id"], unique=True)
    op.create_index(STEP_INDEX, "workflow_steps", ["task_id"])
    op.execute("DELETE FROM journal WHERE state IN ('success', 'failure') AND id NOT IN "
               "(SELECT MIN(id) FROM journal WHERE state IN ('success', 'failure') "
               "GROUP BY task_id)")
    op.create_index(JOURNAL_ONE_END, "journal", ["task_id"], unique=True,
                    sqlite_where=sa.text(ENDS), postgresql_where=sa.text(ENDS))


def downgrade() -> None:
    op.drop_index(JOURNAL_ONE_END, table_name="journal")
    op.drop_index(STEP_INDEX, table_name="workflow_steps")
    op.drop_index(INDEX, table_name="dead_letters")
    op.create_index(INDEX, "dead_letters", ["task_id"], unique=False)
