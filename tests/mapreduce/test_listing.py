"""Listing recent jobs (``tw.jobs.recent``): the filters are checked by the library, so
the API and any other caller refuse the same values."""

from __future__ import annotations

import pytest

from taskworks.errors import InvalidInput
from taskworks.mapreduce.listing import recent_jobs
from taskworks.store.engine import Store


@pytest.mark.parametrize(("state", "limit", "field"), [
    ("done", 10, "state"), (None, 0, "limit"), (None, 501, "limit"), (None, True, "limit"),
])
def test_bad_filters_name_the_field(sqlite_store: Store, state: str | None, limit: int,
                                    field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        recent_jobs(sqlite_store, state, limit)
    assert caught.value.field == field


def test_an_empty_store_lists_nothing(sqlite_store: Store) -> None:
    assert recent_jobs(sqlite_store, "partial", 5) == []
