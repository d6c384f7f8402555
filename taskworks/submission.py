"""Which tasks a remote client may submit by name: the ``api.submittable_tasks`` globs.

Whoever submits a task chooses its arguments, and some built-ins turn arguments into
power over the deployment: ``taskworks.db_operation`` runs any SQL on the store and on
every configured database, ``taskworks.http_call`` makes a worker fetch any address and
hands back the answer, ``taskworks.notify.failure`` sends notices in taskworks' name,
``taskworks.workflow_step`` and the map-reduce tasks move engine state, and Celery's own
``celery.chain``, ``celery.group``, ``celery.chord``... run whatever signatures they are
given (any task, past this rule). So a name in those namespaces matches only a glob
that itself starts with the namespace: ``*`` admits every task of yours and no
built-in, ``taskworks.http_call`` or ``taskworks.*`` admit built-ins on purpose.

The REST API calls ``check_submittable`` before ``tw.submit``. The CLI (``taskworks
submit``) and Python callers do not: they run with the operator's own settings and
credentials, which already reach the store and the broker directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from taskworks.errors import NotSubmittable
from taskworks.settings import ApiSettings

__all__ = ["ENV", "RESERVED_PREFIXES", "SETTING", "check_submittable", "submittable"]

#: namespaces whose tasks a glob must name explicitly (see the module docstring)
RESERVED_PREFIXES = ("taskworks.", "celery.")
SETTING = "api.submittable_tasks"
ENV = "TASKWORKS_API__SUBMITTABLE_TASKS"


def submittable(patterns: Sequence[str], name: str) -> bool:
    """True when a glob admits ``name``; a reserved name needs a glob with its prefix."""
    reserved = next((p for p in RESERVED_PREFIXES if name.startswith(p)), None)
    return any(fnmatchcase(name, glob) for glob in patterns
               if reserved is None or glob.startswith(reserved))


def check_submittable(api: ApiSettings, name: str, *, field: str = "task") -> None:
    """Raise NotSubmittable unless a client may submit the task ``name``; ``field`` says
    where the name came from (a workflow definition's ``steps[2] (load).task``)."""
    if not submittable(api.submittable_tasks, name):
        raise NotSubmittable(name, list(api.submittable_tasks), field, SETTING, ENV)
