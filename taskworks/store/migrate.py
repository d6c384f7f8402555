"""Bring a database to the newest schema with Alembic (``taskworks db upgrade``), and wait
for another process to have done it (``taskworks db wait``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from taskworks.errors import StoreError
from taskworks.redaction import redact_url
from taskworks.store.engine import Store

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "current_revision", "head_revision", "known_revision",
           "schema_behind", "upgrade", "wait_for_head"]

MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock key ("taskwork" in ASCII): concurrent upgrades (several API
#: pods' init containers) take turns instead of racing to create the same tables
MIGRATION_LOCK = 0x7461736B776F726B


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(store: Store, revision: str = "head") -> None:
    try:
        with store.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # held until this transaction ends; the next one then finds the schema at head
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATION_LOCK})
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"database_url: migration failed on {store.engine.url!r}: {exc}") from exc


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revision(revision: str) -> bool:
    """Whether this release has a migration ``revision`` (else a newer release made it)."""
    scripts = ScriptDirectory.from_config(_config())
    return revision in {script.revision for script in scripts.walk_revisions()}


def schema_behind(store: Store) -> str | None:
    """None when the store's schema is at this release's newest revision, else why not.

    An unreachable database counts as behind (it may still be starting). A revision this
    release does not know raises StoreError: waiting cannot fix that.
    """
    head = head_revision()
    try:
        current = current_revision(store)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"cannot reach the database {redact_url(store.url)}: {cause}"
    if current == head:
        return None
    if current is None:
        return "no schema yet"
    if not known_revision(current):
        raise StoreError(
            f"database_url: the schema is at revision {current!r}, which this release of "
            f"taskworks does not know (its newest is {head!r}): a newer release migrated "
            f"it; run that release, or downgrade the schema with it"
        )
    return f"at revision {current}"


def wait_for_head(store: Store, timeout: float, interval: float,
                  on_wait: Callable[[str], None] = lambda reason: None) -> str | None:
    """Poll until the schema is at head: None then, or the last reason after ``timeout``
    seconds. ``on_wait`` hears each new reason for waiting (not every poll)."""
    deadline = time.monotonic() + timeout
    told = None
    # Alembic logs two INFO lines each time it reads the revision: once is enough
    alembic_log = logging.getLogger("alembic.runtime.migration")
    level = alembic_log.level
    try:
        while (reason := schema_behind(store)) is not None:
            alembic_log.setLevel(logging.WARNING)
            if reason != told:
                on_wait(reason)
                told = reason
            left = deadline - time.monotonic()
            if left <= 0:
                return reason
            time.sleep(min(interval, left))
        return None
    finally:
        alembic_log.setLevel(level)
