"""Stores for the map-reduce tests: a fresh one per test over SQLite and PostgreSQL, and
one SQLite store per module for the property tests (hypothesis runs many examples)."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskworks.mapreduce.datasets import DatasetInfo, Datasets
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    upgrade(store)
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="tw-mr-") as directory:
        store = Store(f"sqlite:///{directory}/store.db")
        upgrade(store)
        yield store
        store.dispose()


def load(store: Store, items: list[dict[str, Any]], name: str | None = None,
         chunk_size: int = 7) -> DatasetInfo:
    """Import ITEMS as a JSONL file (the real import path) under a fresh name."""
    with tempfile.TemporaryDirectory(prefix="tw-mr-file-") as directory:
        path = Path(directory) / "items.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
        return Datasets(store).import_file(path, name or f"ds-{uuid.uuid4().hex[:10]}",
                                           chunk_size=chunk_size)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A migrated SQLite store of the test's own, by URL (for CLI subprocesses)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store(url)
    upgrade(store)
    store.dispose()
    return url
