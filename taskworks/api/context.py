"""What every request handler needs: the Taskworks app, a Redis client, the token and
the ``api`` settings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import redis
from fastapi import Depends, Request

if TYPE_CHECKING:
    from taskworks.app import Taskworks
    from taskworks.settings import ApiSettings

#: how many ids of tasks submitted through this API are remembered (see ``submitted``)
REMEMBERED_IDS = 10_000


@dataclass
class ApiContext:
    tw: Taskworks
    #: None: no authentication (the server then only binds loopback)
    token: str | None
    client: redis.Redis
    #: session lifetime, login rate limit, trusted origins
    settings: ApiSettings
    #: ids this process submitted: Celery cannot tell a queued task from an unknown id,
    #: so these are known (PENDING) before any worker has seen them
    _submitted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, task_id: str) -> None:
        with self._lock:
            self._submitted[task_id] = None
            while len(self._submitted) > REMEMBERED_IDS:
                self._submitted.popitem(last=False)

    def submitted(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._submitted


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Ctx = Annotated[ApiContext, Depends(get_context)]
