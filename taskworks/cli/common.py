"""What every command shares: consoles, settings with logging, the --app option."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from taskworks import logs
from taskworks.errors import InvalidInput
from taskworks.settings import Settings, load_settings

# piped output (scripts, logs) is not cut at 80 columns: ids must stay whole
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True)

AppOption = Annotated[str | None, typer.Option(
    "--app", help="module:attribute of your Taskworks instance (env TASKWORKS_APP)")]


def settings() -> Settings:
    loaded = load_settings()
    logs.configure(loaded.log_format, loaded.log_level)
    return loaded


def json_arg(name: str, raw: str, kind: type) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(name, raw, f"JSON ({exc.msg})") from None
    if not isinstance(value, kind):
        raise InvalidInput(name, raw, f"a JSON {'array' if kind is list else 'object'}")
    return value


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def row_dict(row: Any) -> dict[str, Any]:
    """A stored row as a plain dict, for JSON output."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


@contextmanager
def as_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """Library errors name parameters (``since``); a command's errors name its flags
    (``--since``): ``flags`` maps one to the other. A field not in it is left as is."""
    try:
        yield
    except InvalidInput as exc:
        flag = flags.get(exc.field)
        if flag is None:
            raise
        raise InvalidInput(flag, exc.value, exc.expected) from None
