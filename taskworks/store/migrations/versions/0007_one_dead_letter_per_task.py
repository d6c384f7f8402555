"""one dead letter per task id

Two copies of one task (a worker killed between publishing a retry and acknowledging
the attempt leaves two) could each exhaust their retries and each write a dead letter.
A task ends once: the second letter of a task id is now refused by a unique index, and
the copy that tries it records nothing (runtime/dlq.py). Letters written twice before
this revision are merged into the first one. A workflow step's dead letter is replayed
by resuming its run, found by the step's task id: indexed now.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_dead_letters_task_id"
STEP_INDEX = "ix_workflow_steps_task_id"


def upgrade() -> None:
    op.execute("DELETE FROM dead_letters WHERE id NOT IN "
               "(SELECT MIN(id) FROM dead_letters GROUP BY task_id)")
    op.drop_index(INDEX, table_name="dead_letters")
    op.create_index(INDEX, "dead_letters", ["task_id"], unique=True)
    op.create_index(STEP_INDEX, "workflow_steps", ["task_id"])


def downgrade() -> None:
    op.drop_index(STEP_INDEX, table_name="workflow_steps")
    op.drop_index(INDEX, table_name="dead_letters")
    op.create_index(INDEX, "dead_letters", ["task_id"], unique=False)
