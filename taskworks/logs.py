"""Structured logging with structlog, for taskworks' own lines and the stdlib's alike.

Inside a task every line carries ``task_id`` and ``task_name``: the signal handlers bind
them to structlog's context variables, which both structlog and stdlib records pick up.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from taskworks.redaction import redact_text

__all__ = ["configure", "get_logger"]

_configured: tuple[str, str] | None = None


def configure(fmt: str = "console", level: str = "INFO") -> None:
    """Route structlog and stdlib logging through one renderer (idempotent)."""
    global _configured
    if _configured == (fmt, level):
        return
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter first: a line under the level costs one check, not the whole chain
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # a plain traceback in both formats: the console renderer's rich one prints
            # every frame's locals, passwords included, and could not be redacted
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("taskworks")
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "taskworks"]
    root.addHandler(handler)
    root.setLevel(level)
    _configured = (fmt, level)


def _redact(_logger: Any, _name: str, event: Any) -> Any:
    """Failure lines (Celery's "Task ... raised", a SQLAlchemy error as error=) quote
    exception messages and tracebacks: they lose the values in them (redaction.py). Field
    names are not judged: taskworks' own fields hold no secret (beat's lease token=)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact_text(value)
    return event


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
