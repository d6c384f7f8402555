"""The process caches of workflow definitions are bounded by size, not only by count:
a map-reduce job stores a definition of its own, up to ~1.4 MB."""

from __future__ import annotations

from typing import Any

import pytest

from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.workflows import Step, Workflow
from taskworks.workflows.cache import DEFINITIONS_MAX_BYTES, SizedLRU, json_size
from taskworks.workflows.definitions import DefinitionStore
from tests.workflows.conftest import rec, unique


def test_least_recently_used_go_first_to_stay_under_the_bytes() -> None:
    cache: SizedLRU[str, str] = SizedLRU(max_entries=100, max_bytes=10)
    cache.put("a", "A", 4)
    cache.put("b", "B", 4)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 4)
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    assert (len(cache), cache.nbytes) == (2, 8)
    cache.put("a", "A2", 6)  # replacing counts the new size only
    assert (cache.get("a"), cache.nbytes, "c" in cache) == ("A2", 10, True)
    assert cache.put("huge", "H", 11) == "H"  # served, never kept
    assert ("huge" in cache, cache.nbytes) == (False, 10)


def test_count_bound_still_holds() -> None:
    cache: SizedLRU[int, int] = SizedLRU(max_entries=3, max_bytes=10**9)
    for i in range(10):
        cache.put(i, i, 1)
    assert [i for i in range(10) if i in cache] == [7, 8, 9]
    assert cache.nbytes == 3


def big(name: str, steps: int) -> Workflow:
    return Workflow(name=name, steps=tuple(
        Step(f"p{i}", "wf.noop", params={"partition": [i, i * 100, i * 100 + 100]})
        for i in range(steps)))


@pytest.fixture
def definitions(database_url: str) -> Any:
    store = Store(database_url)
    upgrade(store)
    yield DefinitionStore(store)
    store.dispose()


def test_definitions_read_from_the_store_are_bounded_by_bytes(
        definitions: DefinitionStore) -> None:
    assert definitions._definitions.max_bytes == DEFINITIONS_MAX_BYTES == 64 * 2**20
    one = json_size(big("x", 500).to_dict())
    definitions._definitions.max_bytes = int(2.5 * one)
    names = [f"mapreduce.job{i}" for i in range(6)]
    for name in names:
        definitions.save(big(name, 500))
    for name in names:
        assert len(definitions.definition(name, 1).steps) == 500
        assert len(definitions._definitions) <= 2
        assert definitions._definitions.nbytes <= definitions._definitions.max_bytes
    # a miss reads the store again
    assert definitions.definition(names[0], 1).name == names[0]


def test_registered_definitions_are_bounded_by_bytes(tw: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    engine = tw.workflows.engine
    assert engine.registered.max_bytes == DEFINITIONS_MAX_BYTES
    kept = tw.workflows.register(Workflow(unique("kept"), (rec("a"),)))
    size = json_size(kept.to_dict()) + 1  # "other-" is one letter longer than "kept-"
    monkeypatch.setattr(engine, "registered", SizedLRU(100, 3 * size))
    tw.workflows.register(kept)
    for _ in range(5):  # the one in use stays while others pass through
        other = tw.workflows.register(Workflow(unique("other"), (rec("a"),)))
        assert engine.definition(kept.name, 1) is kept
    assert len(engine.registered) == 3
    assert engine.registered.nbytes <= 3 * size
    assert engine.definition(other.name, 1) is other
