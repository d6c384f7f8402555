"""``taskworks <subcommand> --help``, run for real once per subcommand per test process:
the deployment tests check many units and pods that run the same few subcommands."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from tests.support.workers import ROOT


@functools.cache
def _help(path: tuple[str, ...]) -> str:
    done = subprocess.run([sys.executable, "-m", "taskworks", *path, "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    assert done.returncode == 0, (path, done.stdout, done.stderr)
    return done.stdout


def help_text(subcommand: list[str]) -> str:
    """The help of ``taskworks <subcommand>``; fails unless the subcommand exists."""
    return _help(tuple(subcommand))
