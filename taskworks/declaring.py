"""The one thing a module of built-in tasks is given to declare them: ``tw.task``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TaskDecorator"]

#: ``tw.task``: called with task options, it returns the decorator that declares a task
TaskDecorator = Callable[..., Callable[[Callable[..., Any]], Any]]
