"""A solo worker's results and acknowledgements that wait for its journal's group commit.

With ``journal.durable`` a task's journal row is in the store before its result is stored
and before its message is acknowledged (docs/runtime.md). Committing one row per task
took a quarter of a solo worker's CPU; a group commit shares one commit among the tasks
that ended within a few milliseconds. A solo worker runs each task inside the delivery of
its message, in the consumer's thread: the transport marks that span (``delivering``),
the journal's barrier turns it into a ``Deferred`` its row completes (``defer``), the
result write made later in the span is ``park``ed on it, and so is the acknowledgement
of that message (``park_ack``: Celery sends it a turn of the event loop later, outside
the span). They run, in that order, once the row is written. Outside such a span (a
prefork child, a threads pool) nothing is parked and the barrier waits for its row as
before.

Before the consumer waits for messages (every queue was empty) or closes its channel, it
calls ``before_wait``: the journal writes what is pending at once, so an idle worker
holds nothing back and a task's result comes as soon as without the group commit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from taskworks.logs import get_logger

__all__ = ["Deferred", "batched", "before_wait", "defer", "delivering", "later", "on_wait",
           "park", "park_ack", "write_later"]

log = get_logger("taskworks.journal")


class Deferred:
    """Actions waiting for one journal row, run in the order they were parked."""

    __slots__ = ("_actions", "_done", "_lock", "tag")

    def __init__(self, tag: str) -> None:
        self._lock = threading.Lock()
        self._actions: list[Callable[[], object]] = []
        self._done = False
        #: the delivery tag of the message whose acknowledgement waits too
        self.tag = tag

    def then(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the row is written (now, if it is)."""
        with self._lock:
            if not self._done:
                self._actions.append(action)
                return
        action()

    def complete(self) -> None:
        """The row is written (or refused for its values and dropped, as a synchronous
        write would have gone on too): run what waited, each once."""
        with self._lock:
            self._done = True
            actions, self._actions = self._actions, []
        with _acks_lock:  # an acknowledgement that comes later need not wait
            if _acks.get(self.tag) is self:
                del _acks[self.tag]
        for action in actions:
            try:
                action()
            except Exception:  # a result write the broker refused after its retries; an
                # acknowledgement that failed waits for the channel's next take already
                log.exception("an action waiting for its journal row failed")


class _Span(threading.local):
    tag: str | None = None
    deferred: Deferred | None = None


_span = _Span()
#: by delivery tag: the Deferred a message's acknowledgement waits for
_acks: dict[str, Deferred] = {}
_acks_lock = threading.Lock()


def _forget_in_child() -> None:
    """A prefork child forked during a delivery must not park what its parent acks."""
    global _acks_lock
    _span.tag, _span.deferred = None, None
    _acks.clear()
    _acks_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def delivering(tag: str, group: bool = True) -> Iterator[None]:
    """The delivery of the message ``tag`` in this thread (a solo worker runs its task
    here). ``group`` False: the worker is not busy (it waited for this message), so its
    task waits for its own row as without a group commit, and its result goes at once."""
    _span.tag, _span.deferred = (tag if group else None), None
    try:
        yield
    finally:
        _span.tag, _span.deferred = None, None


def defer() -> Deferred | None:
    """Within a delivery: what the rest of it, and its message's acknowledgement, wait
    for (made on the first call). None outside one: whoever asks must then wait for its
    row itself."""
    tag = _span.tag
    if tag is None:
        return None
    if _span.deferred is None:
        deferred = _span.deferred = Deferred(tag)
        with _acks_lock:
            _acks[tag] = deferred
    return _span.deferred


def park(action: Callable[[], object]) -> bool:
    """Park ``action`` on the current delivery's Deferred, if it has one: True then."""
    deferred = _span.deferred
    if deferred is None:
        return False
    deferred.then(action)
    return True


def park_ack(tag: str, acknowledge: Callable[[str], object], member: str) -> bool:
    """Park the acknowledgement of message ``tag`` (``acknowledge(member)``) if it waits
    for a row: True then (it runs once the row is written). Called for every
    acknowledgement: nothing is built unless it waits."""
    if not _acks:
        return False
    with _acks_lock:
        deferred = _acks.pop(tag, None)
    if deferred is None:
        return False
    deferred.then(lambda: acknowledge(member))
    return True


class _Batch(threading.local):
    #: sender -> the writes collected for it; None outside ``batched``
    writes: dict[Callable[[list[Any]], object], list[Any]] | None = None
    after: list[Callable[[], object]] | None = None


_batch = _Batch()


@contextlib.contextmanager
def batched() -> Iterator[None]:
    """Within it (the journal's thread completing what waited for a group commit), the
    result writes of the group are sent together, one round trip, and the
    acknowledgements, which must follow their results, after them."""
    _batch.writes, _batch.after = {}, []
    try:
        yield
    finally:
        writes, after = _batch.writes, _batch.after
        _batch.writes = _batch.after = None
        for send, items in writes.items():
            try:
                send(items)
            except Exception:  # each sender retries what it can; what is left is lost
                log.exception("results waiting for their journal rows not written")
        for action in after:
            try:
                action()
            except Exception:
                log.exception("an acknowledgement waiting for its result failed")


def write_later(send: Callable[[list[Any]], object], item: Any) -> bool:
    """Within ``batched``: collect ``item`` for ``send`` (which gets them all at its end)
    and return True; False outside it."""
    writes = _batch.writes
    if writes is None:
        return False
    writes.setdefault(send, []).append(item)
    return True


def later(action: Callable[[], object]) -> bool:
    """Within ``batched``: run ``action`` after the collected writes (True); False
    outside it."""
    after = _batch.after
    if after is None:
        return False
    after.append(action)
    return True


_waiters: list[weakref.WeakMethod[Callable[[], object]]] = []
_waiters_lock = threading.Lock()


def on_wait(method: Callable[[], object]) -> None:
    """Have ``before_wait`` call the bound ``method`` (held weakly: it goes with its
    object)."""
    with _waiters_lock:
        _waiters.append(weakref.WeakMethod(method))


def before_wait() -> None:
    """The consumer is about to wait for messages or to close: write what is pending."""
    with _waiters_lock:
        _waiters[:] = [ref for ref in _waiters if ref() is not None]
        methods = [ref() for ref in _waiters]
    for method in methods:
        if method is not None:
            method()
