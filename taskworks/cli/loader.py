"""Find the Taskworks instance a command works on: ``--app module:attribute`` or the default."""

from __future__ import annotations

import importlib
import os

from taskworks.app import Taskworks
from taskworks.errors import InvalidInput

APP_ENV = "TASKWORKS_APP"


def load(spec: str | None = None) -> Taskworks:
    spec = spec or os.environ.get(APP_ENV)
    if not spec:
        return Taskworks()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidInput("--app", spec, "module:attribute, e.g. myproject.tasks:tw")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput("--app", spec, f"an importable module ({exc})") from exc
    tw = getattr(module, attribute, None)
    if not isinstance(tw, Taskworks):
        raise InvalidInput("--app", spec, "the name of a Taskworks instance in that module")
    return tw
