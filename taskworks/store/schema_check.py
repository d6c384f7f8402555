"""Tell "``taskworks db upgrade`` has not run" apart from other store errors, after the fact.

Nothing is checked up front (that would cost a query per command): the adapters (CLI,
API) hand this module the SQLAlchemy error a command raised. Only when the database said
a table or column is missing is the Alembic revision read, once, to decide whether the
schema is behind this release's newest revision. A schema at the newest revision (a
table dropped by hand) or at one this release does not know keeps its original error.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from taskworks.errors import StoreNotMigrated
from taskworks.redaction import redact_url
from taskworks.store.engine import Store
from taskworks.store.migrate import current_revision, head_revision, known_revision

__all__ = ["missing_schema", "not_migrated"]

#: PostgreSQL's SQLSTATEs for undefined_table and undefined_column
_PG_MISSING = {"42P01", "42703"}
#: SQLite says it only in words
_SQLITE_MISSING = re.compile(r"^no such (table|column)\b|\bhas no column named\b")


def missing_schema(exc: BaseException) -> bool:
    """Whether the database refused a statement because a table or column does not exist."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_MISSING:  # psycopg 3
        return True
    return type(orig).__module__ == "sqlite3" and bool(_SQLITE_MISSING.search(str(orig)))


def not_migrated(store: Store, exc: BaseException) -> StoreNotMigrated | None:
    """The error to report instead of ``exc`` when ``exc`` comes from a schema that is
    missing or older than this release's newest revision; None to keep ``exc``."""
    if not missing_schema(exc):
        return None
    # MigrationContext logs two INFO lines per read: the one-line error must stay alone
    alembic_log = logging.getLogger("alembic.runtime.migration")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        current = current_revision(store)  # never creates alembic_version: nothing changes
    except SQLAlchemyError:
        return None  # the database went away meanwhile: its own error says more
    finally:
        alembic_log.setLevel(level)
    head = head_revision()
    if current == head:
        return None
    if current is not None and not known_revision(current):
        return None  # migrated by a newer release: upgrading with this one cannot help
    return StoreNotMigrated(redact_url(store.url), current, head)
