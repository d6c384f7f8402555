"""Every error taskworks raises on purpose derives from one root.

    TaskworksError
    ├── ConfigError          a setting has a value taskworks cannot use
    ├── BrokerError          the embedded broker could not start or be reached
    │   └── PortInUse        the configured port belongs to another program
    ├── StoreError           the SQL store could not be opened or migrated
    │   └── StoreNotMigrated its schema is missing or older than this release's (url)
    ├── BreakerOpen          a circuit breaker refused a call (carries name, retry_after)
    ├── Deferred             why a task was put off without spending a retry (journaled)
    │   ├── RateLimited      its cluster-wide rate limit had no token (name, retry_after)
    │   └── DuplicateRunning the same idempotent call is running (task_id)
    ├── OutcomeNotRecorded   the store or broker refused a task's outcome: its message
    │                        goes back to the queue and the task runs again
    ├── AddressRefused       http_call's host resolves to an address it may not reach
    ├── HttpCallError        an HTTP call (taskworks.http_call) got no usable answer
    │   ├── HttpUnavailable  connection error, timeout, 5xx or 429: worth retrying
    │   └── HttpRejected     any other 4xx: the request itself is wrong, never retried
    ├── TaskMemoryError      a task raised MemoryError; its pool child is recycled after it
    ├── RedeliveryLimitExceeded  a message killed its worker more often than its policy allows
    ├── AllPartitionsFailed  a map-reduce job reducing partial results has none to reduce
    ├── WaitTimeout          ``Run.wait`` gave up before the run ended (also a TimeoutError)
    ├── NotificationError    a channel (email, webhook) could not deliver a failure notice
    ├── WorkersFailing       ``taskworks worker``'s processes keep failing at start (status)
    └── InvalidInput         a caller passed a value outside what an API accepts
        ├── WorkflowInvalid  a workflow definition: every problem, with its location
        ├── RowRefused       a dataset row over a limit (line, field): nothing imported
        ├── BadRows          a dataset import's bad rows (the first ones, and how many)
        └── NotSubmittable   a task ``api.submittable_tasks`` keeps from remote clients

Each message names the field, the value and what was expected, so a CLI can print it
as is and exit 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["AddressRefused", "AllPartitionsFailed", "BadRows", "BreakerOpen", "BrokerError",
           "ConfigError", "Deferred", "DuplicateRunning", "HttpCallError", "HttpRejected",
           "HttpUnavailable", "InvalidInput", "NotSubmittable", "NotificationError",
           "OutcomeNotRecorded", "PortInUse", "RateLimited", "RedeliveryLimitExceeded",
           "RowProblem", "RowRefused", "StoreError", "StoreNotMigrated", "TaskMemoryError",
           "TaskworksError", "WaitTimeout", "WorkersFailing", "WorkflowInvalid"]


class TaskworksError(Exception):
    """Root of every taskworks error."""


class ConfigError(TaskworksError):
    """A setting has a value taskworks cannot use."""


class BrokerError(TaskworksError):
    """The embedded broker could not be started or reached."""


class PortInUse(BrokerError):
    """The configured port is taken by another program."""


class StoreError(TaskworksError):
    """The SQL store could not be opened or migrated."""


class StoreNotMigrated(StoreError):
    """The store's schema is missing or older than this release's newest revision:
    ``taskworks db upgrade`` is what is missing. ``url`` is printed as given: the raiser
    (``taskworks.store.schema_check``) passes it with the password hidden."""

    def __init__(self, url: str, current: str | None, head: str | None) -> None:
        self.url = url
        self.current = current
        self.head = head
        super().__init__(url, current, head)

    def __str__(self) -> str:
        found = "has no schema yet" if self.current is None else \
            f"is at schema revision {self.current}"
        return (f"database_url: the store at {self.url} {found} (this release needs revision "
                f"{self.head}); run `taskworks db upgrade`")


class InvalidInput(TaskworksError):
    """A caller passed a value outside what an API accepts."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        # the constructor's arguments as ``args``: Celery rebuilds an exception from its
        # args (JSON), so the caller of a failed task gets an InvalidInput back
        super().__init__(field, value, expected)

    def __str__(self) -> str:
        return f"{self.field}: got {self.value!r}, expected {self.expected}"


class BreakerOpen(TaskworksError):
    """A circuit breaker refused a call: the downstream was not touched.

    ``retry_after`` is how many seconds until the breaker may admit a probe. The
    arguments are kept as ``args`` so the exception survives Celery's JSON round trip.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(name, retry_after)

    def __str__(self) -> str:
        return f"circuit breaker {self.name!r} is open; retry in {self.retry_after:.1f}s"


class HttpCallError(TaskworksError):
    """An HTTP call got no usable answer: ``status`` is None when no response came.

    ``detail`` is the reason or an excerpt of the response body; ``retry_after`` the
    server's Retry-After in seconds, if it sent one. Arguments stay in ``args`` so the
    error survives Celery's JSON round trip.
    """

    def __init__(self, method: str, url: str, status: int | None, detail: str,
                 retry_after: float | None = None) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(method, url, status, detail, retry_after)

    def __str__(self) -> str:
        answer = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"{self.method} {self.url}: {answer}: {self.detail}"


class HttpUnavailable(HttpCallError):
    """Connection error, timeout, 5xx or 429: the server may answer later."""


class HttpRejected(HttpCallError):
    """A 4xx other than 429: sending the same request again cannot help."""


class TaskMemoryError(TaskworksError):
    """A task raised MemoryError. Celery treats a MemoryError from a task as fatal to the
    whole worker (it re-raises it in the main process, and every task in flight is
    redelivered); taskworks reports this error instead, after the MemoryError callbacks
    ran (garbage collection, the prefork child recycled once the task is done)."""


class WorkflowInvalid(InvalidInput):
    """A workflow definition with problems: ``errors`` lists every one, each with its
    location (``steps[2] (clean).depends_on: unknown step 'x'``)."""

    def __init__(self, workflow: str, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("workflow", workflow, "a valid definition; found "
                         f"{len(errors)} problem(s):\n  " + "\n  ".join(errors))
        self.args = (workflow, self.errors)  # what the constructor takes (see InvalidInput)


class Deferred(TaskworksError):
    """Why a middleware put a task off without spending a retry: shown by the journal's
    "deferred" rows and the RETRY state. The arguments are kept as ``args`` so that the
    exception survives Celery's JSON round trip."""


class RateLimited(Deferred):
    """The task's cluster-wide rate limit had no token: it runs in ``retry_after`` s."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(name, retry_after)

    def __str__(self) -> str:
        return f"rate limit {self.name!r} reached; runs in {self.retry_after:.3f}s"


class DuplicateRunning(Deferred):
    """The same idempotent call is running as ``task_id``: this one waits for its result."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(task_id)

    def __str__(self) -> str:
        return f"the same idempotent call is running as {self.task_id}; waiting for its result"


class OutcomeNotRecorded(TaskworksError):
    """A task's outcome (its dead letter, its journal row, its retry message) could not be
    recorded because the store or the broker failed: the message is requeued instead of
    acknowledged, so the task runs again and its outcome is recorded once."""


class NotSubmittable(InvalidInput):
    """The task exists (or may) but the setting ``setting`` (``api.submittable_tasks``)
    does not let a remote client send it (taskworks/submission.py). An InvalidInput, so an
    adapter that does not map it still answers 4xx (the API maps it to 403)."""

    def __init__(self, task: str, patterns: list[str], field: str = "task",
                 setting: str = "api.submittable_tasks",
                 env: str = "TASKWORKS_API__SUBMITTABLE_TASKS") -> None:
        self.patterns = list(patterns)
        self.setting = setting
        super().__init__(
            field, task,
            f"a task {setting} allows (now {self.patterns!r}; 'taskworks.*' and 'celery.*' "
            f"tasks only through a glob with that prefix): add {task!r} to {setting} "
            f"(env {env}) to allow it")
        self.args = (task, self.patterns, field, setting, env)  # see InvalidInput


class RedeliveryLimitExceeded(TaskworksError):
    """A message was redelivered (its worker died) more often than its policy allows."""


class AllPartitionsFailed(TaskworksError):
    """A ``reduce`` job whose every partition failed has nothing to reduce."""


class WaitTimeout(TaskworksError, TimeoutError):
    """``Run.wait`` gave up before the run ended (the run goes on)."""


class AddressRefused(TaskworksError):
    """The host resolves to an address the call may not reach; raised before any
    connection is attempted (``http_request`` turns it into HttpRejected)."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        self.host = host
        self.address = address
        self.kind = kind
        super().__init__(host, address, kind)

    def __str__(self) -> str:
        what = f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} address"
        if self.host == self.address:
            return f"host {self.host} is {what}"
        return f"host {self.host!r} resolves to {self.address}, {what}"


class NotificationError(TaskworksError):
    """A channel could not deliver a failure notice. Its text is safe to log and store:
    never the SMTP password, the webhook headers or the webhook URL's path."""


class RowRefused(InvalidInput):
    """A row over one of the limits above: the import stops there and stores nothing.
    ``line`` is its line number, ``column`` the field (a CSV column, a JSON path such as
    ``a.b[2]``) or None when the whole line is refused."""

    def __init__(self, line: int, column: str | None, value: str, expected: str) -> None:
        self.line = line
        self.column = column
        where = f"line {line}" if column is None else f"line {line}, field {column!r}"
        super().__init__(where, value, expected)
        self.args = (line, column, value, expected)  # what the constructor takes

    def __str__(self) -> str:
        return f"{super().__str__()}; nothing was imported"


class RowProblem(Protocol):
    """One bad row of an import (taskworks.mapreduce.readers.BadRow)."""

    @property
    def line(self) -> int: ...

    @property
    def message(self) -> str: ...


class BadRows(InvalidInput):
    """An import found bad rows; nothing was stored. ``bad_rows`` holds the first ones
    (up to MAX_REPORTED_BAD_ROWS), ``total`` counts them all."""

    def __init__(self, path: str, bad_rows: Sequence[RowProblem], total: int) -> None:
        self.bad_rows = list(bad_rows)
        self.total = total
        more = f"\n  ... and {total - len(bad_rows)} more" if total > len(bad_rows) else ""
        super().__init__("file", path, f"only well-formed rows; {total} bad row(s), nothing "
                         "was imported:\n  " + "\n  ".join(map(str, bad_rows)) + more)


class WorkersFailing(TaskworksError):
    """The worker processes of ``taskworks worker``'s set keep failing at start (an app that
    does not import there, a bad option): ``status`` is the exit status to end with."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)
