"""SQLAlchemy engines, one per process.

A forked worker child must not reuse its parent's connections, so the engine is created
on ``worker_process_init`` (or lazily, for solo/threads pools) and disposed on shutdown.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "Store", "make_engine", "normalise_url"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> URL:
    """postgresql:// means psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def make_engine(url: str, busy_timeout_ms: int | None = None) -> Engine:
    """An engine whose errors never carry bound parameters (``hide_parameters``): their
    text goes to the journal, dead letters, notifications and logs (redaction.py)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        busy = SQLITE_BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
        engine = create_engine(parsed, hide_parameters=True,
                               connect_args={"timeout": busy / 1000})
        event.listen(engine, "connect", _sqlite_pragmas(busy))
        return engine
    return create_engine(parsed, hide_parameters=True, pool_pre_ping=True, pool_size=5,
                         max_overflow=5)


class Store:
    """The store of one database URL; safe to share across threads, re-created after fork."""

    def __init__(self, url: str, busy_timeout_ms: int | None = None) -> None:
        self.url = url
        #: SQLite only: how long a write waits for another process's lock
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._pid = 0
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                if self._engine is not None:
                    # inherited from the parent: drop its pool without closing its sockets
                    self._engine.dispose(close=False)
                self._engine = make_engine(self.url, self.busy_timeout_ms)
                self._pid = os.getpid()
                self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        self.engine  # noqa: B018  (creates the sessionmaker for this process)
        assert self._sessions is not None
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                # in a forked child, leave the parent's sockets open for the parent
                self._engine.dispose(close=self._pid == os.getpid())
            self._engine = None
            self._sessions = None
