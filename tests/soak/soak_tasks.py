"""The soak's tasks (registered by tests/apps/sample.py, so the tests' workers know them).

Failures are deterministic: attempt ``retries`` of task ``task_id`` fails when the
sha256 of ``"<task_id>:<retries>"`` falls in the lowest ``FAIL_PERCENT`` percent, so the
test can compute, for every task id, how it must end when no kill touched it.
``always_fail`` calls fail on every attempt and must end in the dead-letter store.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING, Any

import redis

from taskworks.runtime.retry import RetryPolicy

if TYPE_CHECKING:
    from taskworks.app import Taskworks

PLAIN = "tests.soak.plain"
IDEMPOTENT = "tests.soak.idempotent"
FAIL_PERCENT = 10
#: quick retries; no jitter: the delays do not matter, only the attempt count does
POLICY = RetryPolicy(max_retries=3, base_delay=0.05, backoff_factor=2.0, jitter=False)


class TransientError(ConnectionError):
    """What a flaky downstream raises: retried by the policy."""


def fails(task_id: str, retries: int, always_fail: bool = False) -> bool:
    """Whether this attempt fails: the same answer in every process, on every run."""
    if always_fail:
        return True
    digest = hashlib.sha256(f"{task_id}:{retries}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < FAIL_PERCENT


def effect_key(key: str) -> str:
    return f"soak:effect:{key}"


def effect_pids_key(key: str) -> str:
    return f"soak:effect-pids:{key}"


def register(tw: Taskworks) -> None:
    clients: dict[int, redis.Redis] = {}
    lock = threading.Lock()

    def client() -> redis.Redis:
        # one client per process: a forked pool child must not share its parent's sockets.
        # Under the lock: two threads making one each would drop one, and a dropped
        # client closes its pool under whoever still uses it (EBADF, seen in the soak)
        pid = os.getpid()
        with lock:
            if pid not in clients:
                clients[pid] = redis.Redis.from_url(tw.settings.effective_broker_url)
            return clients[pid]

    def check(task: Any, always_fail: bool) -> None:
        request = task.request
        if fails(request.id, request.retries or 0, always_fail):
            raise TransientError(f"attempt {request.retries or 0} of {request.id} fails")

    @tw.task(name=PLAIN, bind=True, retry_policy=POLICY)
    def plain(self: Any, index: int, always_fail: bool = False) -> int:
        check(self, always_fail)
        return index

    @tw.task(name=IDEMPOTENT, bind=True, idempotent=True, retry_policy=POLICY)
    def idempotent(self: Any, key: str, always_fail: bool = False) -> dict[str, Any]:
        """The side effect (a counter per key, and the pid that did it) happens only when
        the attempt succeeds; it must happen once per key, whatever is killed."""
        check(self, always_fail)
        pipe = client().pipeline(transaction=True)
        pipe.incr(effect_key(key))
        pipe.rpush(effect_pids_key(key), os.getpid())
        pipe.execute()
        return {"key": key}
