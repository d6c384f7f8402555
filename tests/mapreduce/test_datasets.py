"""Datasets: CSV and JSONL imports (streamed, all or nothing), SQL tables and queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from taskworks.errors import BadRows, InvalidInput
from taskworks.mapreduce.datasets import MAX_REPORTED_BAD_ROWS, Datasets
from taskworks.store.engine import Store
from taskworks.store.tables import Dataset, DatasetItem, MapReduceJob, WorkflowRun


def items_of(store: Store, name: str) -> list[tuple[int, object]]:
    info = Datasets(store).get(name)
    with store.session() as session:
        return [tuple(row) for row in session.execute(
            select(DatasetItem.item_index, DatasetItem.data)
            .where(DatasetItem.dataset_id == info.id).order_by(DatasetItem.item_index))]


def stored_rows(store: Store) -> tuple[int, int]:
    with store.session() as session:
        return (session.scalar(select(func.count()).select_from(Dataset)) or 0,
                session.scalar(select(func.count()).select_from(DatasetItem)) or 0)


def test_csv_import_streams_in_chunks(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    lines = ["id,name,score,zip,note"] + [f"{i},name {i},{i / 2},0{i},\"a, b\"" for i in
                                          range(25)]
    path.write_text("\n".join(lines) + "\n")
    seen: list[int] = []
    info = Datasets(store).import_file(path, "people", chunk_size=4, progress=seen.append)
    assert (info.row_count, info.source, info.columns) == (
        25, "csv", ["id", "name", "score", "zip", "note"])
    rows = items_of(store, "people")
    assert [index for index, _ in rows] == list(range(25))  # dense, in file order
    assert rows[3] == (3, {"id": 3, "name": "name 3", "score": 1.5, "zip": "03",
                           "note": "a, b"})  # numbers inferred, leading zeros kept as text
    assert len(seen) >= 25 // 4  # one progress report per chunk, bytes read growing
    assert seen == sorted(seen)
    assert seen[-1] == path.stat().st_size


def test_csv_without_inference_and_empty_cells(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,\n\n2,x\n")  # a blank line is skipped
    datasets = Datasets(store)
    datasets.import_file(path, "typed")
    datasets.import_file(path, "text", infer_types=False)
    assert items_of(store, "typed") == [(0, {"a": 1, "b": None}), (1, {"a": 2, "b": "x"})]
    assert items_of(store, "text") == [(0, {"a": "1", "b": ""}), (1, {"a": "2", "b": "x"})]


def test_jsonl_import(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"a": 1, "b": [1, 2]}\n\n{"c": {"d": null}}\n')
    info = Datasets(store).import_file(path, "events")
    assert (info.row_count, info.columns, info.source) == (2, ["a", "b", "c"], "jsonl")
    assert items_of(store, "events") == [(0, {"a": 1, "b": [1, 2]}), (1, {"c": {"d": None}})]


def test_csv_bad_rows_report_lines_and_store_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    good = [f"{i},x" for i in range(30)]  # more than a chunk goes in before the bad row
    path.write_text("\n".join(["id,name", *good, "31", '"multi\nline",x', "1,2,3", "4,y"])
                    + "\n")
    with pytest.raises(BadRows) as caught:
        Datasets(store).import_file(path, "bad", chunk_size=5)
    assert [str(bad) for bad in caught.value.bad_rows] == [
        "line 32: 1 fields, expected 2", "line 35: 3 fields, expected 2"]
    assert caught.value.total == 2
    assert "line 32: 1 fields" in str(caught.value)
    assert "nothing was imported" in str(caught.value)
    assert stored_rows(store) == (0, 0)  # all or nothing
    # the name is still free: a corrected file imports
    path.write_text("id,name\n1,x\n")
    assert Datasets(store).import_file(path, "bad").row_count == 1


def test_jsonl_bad_rows(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n{"a": \n\n"text"\n{"a": 2}\n')
    with pytest.raises(BadRows) as caught:
        Datasets(store).import_file(path, "bad")
    assert [(b.line, b.message) for b in caught.value.bad_rows] == [
        (2, "a JSON list, expected an object"),
        (3, "not JSON (Expecting value at column 7)"),
        (5, "a JSON str, expected an object")]
    assert stored_rows(store) == (0, 0)


def test_many_bad_rows_are_capped_but_counted(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n" * 50)
    with pytest.raises(BadRows) as caught:
        Datasets(store).import_file(path, "bad")
    assert caught.value.total == 50
    assert len(caught.value.bad_rows) == MAX_REPORTED_BAD_ROWS
    assert "and 30 more" in str(caught.value)


def test_csv_bad_header_and_bad_encoding(store: Store, tmp_path: Path) -> None:
    datasets = Datasets(store)
    dup = tmp_path / "dup.csv"
    dup.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(BadRows, match=r"line 1: header has duplicate columns \['a'\]"):
        datasets.import_file(dup, "dup")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a\n" + b"x\n" * 3 + "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(BadRows, match="not UTF-8"):
        datasets.import_file(latin, "latin")
    assert stored_rows(store) == (0, 0)


def test_import_input_errors(store: Store, tmp_path: Path) -> None:
    datasets = Datasets(store)
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    datasets.import_file(path, "taken")
    with pytest.raises(InvalidInput, match="a name no dataset has yet") as caught:
        datasets.import_file(path, "taken")
    assert caught.value.field == "name"
    with pytest.raises(InvalidInput) as caught:
        datasets.import_file(tmp_path / "a.txt", "x")
    assert caught.value.field == "format"
    with pytest.raises(InvalidInput, match="a readable file") as caught:
        datasets.import_file(tmp_path / "missing.csv", "x")
    assert caught.value.field == "file"
    with pytest.raises(InvalidInput) as caught:
        datasets.import_file(path, " ")
    assert caught.value.field == "name"
    for name in ("tab\there", "nul\x00", "x" * 256):  # the API's rule, now the library's
        with pytest.raises(InvalidInput, match="no control characters") as caught:
            datasets.import_file(path, name)
        assert caught.value.field == "name"
    assert [d.name for d in datasets.all()] == ["taken"]


def test_list_show_delete(store: Store, tmp_path: Path) -> None:
    datasets = Datasets(store)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(12)))
    datasets.import_file(path, "b")
    datasets.import_file(path, "a")
    assert [d.name for d in datasets.all()] == ["a", "b"]
    assert datasets.head("a", 2) == [{"item_index": 0, "data": {"i": 0}},
                                     {"item_index": 1, "data": {"i": 1}}]
    assert datasets.delete("a") == 12
    assert [d.name for d in datasets.all()] == ["b"]
    assert stored_rows(store) == (1, 12)
    with pytest.raises(InvalidInput, match="the name of a dataset"):
        datasets.delete("a")


def add_job(store: Store, job_id: str, dataset_id: int, output_id: int | None = None,
            state: str = "RUNNING") -> None:
    """A job's rows as ``Jobs.start`` leaves them: its workflow run and its job row."""
    with store.session() as session:
        session.add(WorkflowRun(id=job_id, workflow=f"mapreduce.{job_id}", version=1,
                                input={"job_id": job_id}, state=state, remaining=1))
        session.add(MapReduceJob(id=job_id, dataset_id=dataset_id, dataset="-",
                                 function="transformation", partition_size=10,
                                 partitions=1, items=3,
                                 params={} if output_id is None
                                 else {"output_dataset_id": output_id}))


def test_a_dataset_a_running_job_uses_is_not_deleted(store: Store, tmp_path: Path) -> None:
    datasets = Datasets(store)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(3)))
    source = datasets.import_file(path, "in")
    output = datasets.create_output("out", "job j1", ["i"])
    done_with = datasets.import_file(path, "done-with")
    add_job(store, "j1", source.id, output.id)
    add_job(store, "j0", done_with.id, state="SUCCEEDED")
    for name in ("in", "out"):  # read, and written
        with pytest.raises(InvalidInput, match=r"no running job uses \(job j1 does: "
                           "cancel it first") as caught:
            datasets.delete(name)
        assert caught.value.field == "name"
    assert datasets.delete("done-with") == 3  # its job ended
    assert stored_rows(store) == (2, 3)  # the refusals deleted nothing
    with store.session() as session:
        session.execute(update(WorkflowRun).where(WorkflowRun.id == "j1")
                        .values(state="CANCELLED"))
    assert (datasets.delete("in"), datasets.delete("out")) == (3, 0)
    assert stored_rows(store) == (0, 0)


def test_register_table_and_query(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, "
                          "amount NUMERIC(10, 2), placed DATE)"))
        conn.execute(text("INSERT INTO orders VALUES (3, 'c', 7.50, '2026-01-03'), "
                          "(1, 'a', 10, '2026-01-01'), (2, 'b', 2.25, '2026-01-02')"))
        conn.execute(text("CREATE TABLE nokey (x INTEGER)"))
    datasets = Datasets(store)
    seen: list[int] = []
    info = datasets.register_sql("orders", table="orders", chunk_size=2, progress=seen.append)
    assert (info.source, info.row_count, info.columns) == (
        "table", 3, ["id", "customer", "amount", "placed"])
    # primary-key order, JSON values (decimals as numbers, dates as ISO text)
    assert items_of(store, "orders") == [
        (0, {"id": 1, "customer": "a", "amount": 10, "placed": "2026-01-01"}),
        (1, {"id": 2, "customer": "b", "amount": 2.25, "placed": "2026-01-02"}),
        (2, {"id": 3, "customer": "c", "amount": 7.5, "placed": "2026-01-03"})]
    assert seen[-1] == 3
    datasets.register_sql("big", query="SELECT customer, amount FROM orders WHERE amount > 5 "
                          "ORDER BY amount DESC")
    assert items_of(store, "big") == [(0, {"customer": "a", "amount": 10}),
                                      (1, {"customer": "c", "amount": 7.5})]
    with pytest.raises(InvalidInput, match="a table with a primary key") as caught:
        datasets.register_sql("x", table="nokey")
    assert caught.value.field == "table"
    with pytest.raises(InvalidInput, match="an existing table"):
        datasets.register_sql("x", table="missing")
    with pytest.raises(InvalidInput, match="a table name"):
        datasets.register_sql("x", table="orders; DROP TABLE orders")
    with pytest.raises(InvalidInput, match="a SELECT") as caught:
        datasets.register_sql("x", query="DELETE FROM orders")
    assert caught.value.field == "query"
    with pytest.raises(InvalidInput, match="a query the source database runs"):
        datasets.register_sql("x", query="SELECT nothing FROM orders")
    with pytest.raises(InvalidInput, match="exactly one") as caught:
        datasets.register_sql("x")
    assert caught.value.field == "table/query"
    assert [d.name for d in datasets.all()] == ["big", "orders"]  # failures stored nothing
