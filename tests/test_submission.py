"""The rule of ``api.submittable_tasks`` (taskworks/submission.py); the API applying it is
tests/api/test_submittable.py."""

from __future__ import annotations

import pytest

from taskworks.errors import InvalidInput
from taskworks.settings import DEFAULT_SUBMITTABLE_TASKS, ApiSettings
from taskworks.submission import NotSubmittable, check_submittable, submittable


@pytest.mark.parametrize(("patterns", "name", "allowed"), [
    (DEFAULT_SUBMITTABLE_TASKS, "tests.echo", True),
    (DEFAULT_SUBMITTABLE_TASKS, "proj.tasks.sync", True),
    (DEFAULT_SUBMITTABLE_TASKS, "taskworks.monitoring.health_check", True),
    (DEFAULT_SUBMITTABLE_TASKS, "taskworks.db_operation", False),
    (DEFAULT_SUBMITTABLE_TASKS, "taskworks.http_call", False),
    (DEFAULT_SUBMITTABLE_TASKS, "taskworks.notify.failure", False),
    (DEFAULT_SUBMITTABLE_TASKS, "taskworks.workflow_step", False),
    (DEFAULT_SUBMITTABLE_TASKS, "celery.chain", False),
    (["*", "taskworks.http_call"], "taskworks.http_call", True),
    (["*", "taskworks.http_call"], "taskworks.db_operation", False),
    (["*.http_call", "*call"], "taskworks.http_call", False),  # not by a glob elsewhere
    (["taskworks.*"], "taskworks.db_operation", True),  # the namespace, on purpose
    (["taskworks.*"], "celery.group", False),
    (["taskworks.*"], "tests.echo", False),
    (["reports.*"], "reports.daily", True),
    (["reports.*"], "tests.echo", False),
    ([], "tests.echo", False),
])
def test_which_names_a_glob_list_admits(patterns: list[str], name: str,
                                        allowed: bool) -> None:
    assert submittable(patterns, name) is allowed


def test_a_refusal_names_the_task_and_the_setting() -> None:
    with pytest.raises(NotSubmittable) as refused:
        check_submittable(ApiSettings(), "taskworks.db_operation")
    error = refused.value
    assert isinstance(error, InvalidInput)  # an adapter that does not map it says 4xx
    assert (error.field, error.value, error.setting) == (
        "task", "taskworks.db_operation", "api.submittable_tasks")
    assert "add 'taskworks.db_operation' to api.submittable_tasks" in str(error)
    assert "TASKWORKS_API__SUBMITTABLE_TASKS" in str(error)
    assert str(type(error)(*error.args)) == str(error)  # rebuilt from args, as Celery does
    with pytest.raises(NotSubmittable, match=r"^steps\[0\] \(load\)\.task: "):
        check_submittable(ApiSettings(), "celery.chain", field="steps[0] (load).task")
