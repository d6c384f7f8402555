"""An app that loads in ``taskworks worker``'s parent but not in its solo processes (their
command line says ``--pool solo``): every process of the set fails at start, as with an app
whose import fails only where the workers run (tests/scaling/test_workerset.py)."""

from __future__ import annotations

import sys

if "solo" in sys.argv:
    raise RuntimeError("this app does not load in a solo worker process")

from taskworks import Taskworks

tw = Taskworks()
