"""Celery's Redis result backend, with one round trip and two commands per result.

Celery stores a result with a GET (so that a late copy of a task never overwrites the
SUCCESS another copy stored) and then SET and PUBLISH inside MULTI/EXEC: five commands
and two round trips for every task. Here the read is kept only where another copy can
have ended first, which the runtime already tells apart (the outcome guard's rule): a
redelivered message, a retry, or a worker whose reserved messages may outlive the
visibility timeout. A task's first run on a first delivery has no earlier outcome to
protect, so its result is written at once. SET and PUBLISH go in one pipeline without
MULTI: a client waiting for the result subscribes before it reads the key, so it sees
one or the other whichever order they land in.

On that first run the result's meta is built here, with the same keys as Celery's (its
``_get_result_meta`` looked the ``result_extended`` setting up and converted the time
zone twice per task: a quarter of the result's CPU); with ``result_extended`` on, Celery
builds it.

In a solo worker a success's result waits for the journal's group commit of its row
(broker/deferral.py): ``store_result`` parks the write, which then runs in the
journal's thread with the other results of the group, in one round trip
(``_set_many``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ResponseError

from taskworks.broker import deferral
from taskworks.broker.transport import SCHEMES
from taskworks.logs import get_logger
from taskworks.runtime.journal.guard import OutcomeGuard

__all__ = ["ResultBackend", "use_for"]

log = get_logger("taskworks.results")
_lines = logging.getLogger("taskworks.results")


class ResultBackend(RedisBackend):  # type: ignore[misc]
    #: every result through Celery's own path: its GET guard is needed on every task, or
    #: its extended meta (``result_extended``) is asked for
    _celerys_always: bool | None = None
    #: a result stored while its task's journal row waits for a group commit is written
    #: after the row (deferral.py): the journal's barrier asks before deferring
    waits_for_journal = True

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> Any:
        def write() -> Any:
            return super(ResultBackend, self).store_result(task_id, result, state,
                                                           traceback, request, **kwargs)

        return result if deferral.park(write) else write()

    def _first_run(self, request: Any) -> bool:
        if request is None:
            return False
        if self._celerys_always is None:
            conf = self.app.conf
            self._celerys_always = (OutcomeGuard.reserved_may_outlive_visibility(conf)
                                    or bool(conf.find_value_for_key("extended", "result")))
        info = getattr(request, "delivery_info", None) or {}
        return not (self._celerys_always or info.get("redelivered") or
                    getattr(request, "retries", 0))

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        if not self._first_run(request):
            return super()._store_result(task_id, result, state, traceback, request,
                                         **kwargs)
        meta = {"status": state, "result": result, "traceback": traceback,
                "children": [r.as_tuple() for r in getattr(request, "children", None) or ()],
                "date_done": datetime.now(self.app.timezone).isoformat()
                if state in states.READY_STATES else None}
        if group := getattr(request, "group", None):
            meta["group_id"] = group
        if parent := getattr(request, "parent_id", None):
            meta["parent_id"] = parent
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:  # as Celery's: which task, in which state
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result

    def set(self, key: str, value: Any, expires: int | None = None, **retry_policy: Any
            ) -> None:
        """Celery wraps every write in kombu's retry loop (a tenth of a no-op task's CPU
        in the worker's profile); here the first attempt is made directly and only a
        write that failed for the connection goes through that loop."""
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend")
        if deferral.write_later(self._set_many, (key, value, expires)):
            return  # a group commit's results: sent together (deferral.batched)
        try:
            self._set(key, value, expires)
        except self.connection_errors:
            super().set(key, value, expires, **retry_policy)

    def _set_many(self, items: list[tuple[str, Any, int | None]]) -> None:
        """The results of one group commit in one round trip; if it fails for the
        connection, each is written through kombu's retry loop, as ``set`` does."""
        try:
            self._send([self._commands(*item) for item in items])
        except self.connection_errors:
            for key, value, expires in items:
                super().set(key, value, expires)
        if _lines.isEnabledFor(logging.DEBUG):
            log.debug("results written together", results=len(items))

    def _set(self, key: str, value: Any, expires: int | None = None) -> None:
        """SET (or SETEX) and PUBLISH sent together on one connection and both replies
        read: a pipeline's bookkeeping, for two fixed commands, cost more CPU than
        sending them."""
        self._send([self._commands(key, value, expires)])

    def _commands(self, key: str, value: Any, expires: int | None) -> list[tuple[Any, ...]]:
        expires = self.expires if expires is None else expires
        store = ("SETEX", key, expires, value) if expires else ("SET", key, value)
        return [store, ("PUBLISH", key, value)]

    def _send(self, writes: list[list[tuple[Any, ...]]]) -> None:
        """Send every command of ``writes`` on one connection, then read every reply; the
        first error is raised once all are read. A connection left with a reply unread
        is closed, never reused."""
        commands = [command for write in writes for command in write]
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            failed: BaseException | None = None
            for _ in commands:
                try:
                    conn.read_response()
                except ResponseError as exc:  # refused (a full server): the others land
                    failed = failed or exc
            if failed is not None:
                raise failed
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def use_for(app: Celery) -> None:
    """Results of ``app`` on a redis:// or rediss:// backend go through ResultBackend
    (the URL and every setting stay as they are: only the class changes)."""
    target = f"{__name__}:ResultBackend"
    app.loader.override_backends = {**app.loader.override_backends,
                                    **{scheme: target for scheme in SCHEMES}}
