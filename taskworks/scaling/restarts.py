"""When to start a worker process again after it exited unasked: the rule the autoscaler's
supervisor and ``taskworks worker``'s set of solo processes share.

- Exit status 0 is a **recycle**: the process passed ``worker.solo_max_tasks`` or
  ``max_memory_per_child`` and shut itself down warm (runtime/recycling.py). A new one
  starts at once, and the crash streak ends.
- Anything else (a crash, SIGKILL, an OOM kill, a hard time limit's exit 70) is a
  **crash**: a new process starts after ``autoscale.restart_backoff`` seconds, doubling
  with each crash in a row up to ``restart_backoff_max``. A process that stayed up
  ``STEADY_AFTER`` seconds ends the streak.
"""

from __future__ import annotations

from taskworks.settings import AutoscaleSettings

__all__ = ["RECYCLED", "STEADY_AFTER", "crash_backoff"]

#: the exit status of a worker process that recycled itself (Celery's warm shutdown)
RECYCLED = 0
#: seconds a worker process must stay up for its crash streak to end
STEADY_AFTER = 60.0


def crash_backoff(settings: AutoscaleSettings, crashes_in_a_row: int) -> float:
    """Seconds to wait before starting a process that crashed ``crashes_in_a_row``
    times in a row (1 or more)."""
    return min(settings.restart_backoff_max,
               settings.restart_backoff * 2.0 ** (max(1, crashes_in_a_row) - 1))
