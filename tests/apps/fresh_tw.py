"""A fresh taskworks app (not adopted), as a user's ``myproject/tasks.py`` would hold it,
for Celery's own tools and Flower: ``celery -A tests.apps.fresh_tw inspect ping``."""

from __future__ import annotations

from taskworks import Taskworks

tw = Taskworks()
#: the documented line: Celery's app loader looks for a module attribute ``app`` (or
#: ``celery``, or any Celery instance); a Taskworks object is none of those
app = tw.app


@tw.task(name="fresh.add")
def add(x: int, y: int) -> int:
    return x + y
