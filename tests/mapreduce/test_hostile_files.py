"""Hostile dataset files (taskworks/mapreduce/readers.py): a huge number, deep nesting, a
line too long. Each is refused before it costs anything, as an InvalidInput naming the
line and the field: through the library (SQLite and PostgreSQL), the API (a real uvicorn
server: a 422, never a 500) and the CLI (one line, exit 2); nothing is stored."""

from __future__ import annotations

import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskworks.mapreduce.datasets import Datasets
from taskworks.mapreduce.readers import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_LINE_CHARS,
    RowRefused,
)
from taskworks.store.engine import Store
from tests.api.server import TOKEN, ApiServer
from tests.mapreduce.test_cli import run as cli


class Hostile:
    def __init__(self, name: str, content: str, line: int, column: str | None,
                 expected: str) -> None:
        self.name, self.content, self.line = name, content, line
        self.column, self.expected = column, expected
        self.fmt = name.rsplit(".", 1)[1]


DIGITS = f"an integer of at most {MAX_INT_DIGITS:,} digits"
HOSTILE = [
    Hostile("digits.csv", "id,amount\n1,2\n2," + "9" * 5000 + "\n", 3, "amount", DIGITS),
    Hostile("digits.jsonl", '{"a": 1}\n{"a": 2, "n": {"v": [1, -' + "9" * 5000 + "]}}\n",
            2, "n.v[1]", DIGITS),
    Hostile("deep.jsonl", '{"a": 1}\n{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            2, "deep", f"JSON nested at most {MAX_JSON_DEPTH} levels deep"),
    Hostile("long.jsonl", '{"a": 1}\n{"a": 2}\n{"blob": "' + "x" * MAX_LINE_CHARS + '"}\n',
            3, None, f"lines of at most {MAX_LINE_CHARS:,} characters"),
    Hostile("huge.csv", "id,x\n1,2.5\n2,1e999\n", 3, "x", "a number a float can hold"),
    Hostile("nan.jsonl", '{"x": 1}\n{"x": [NaN]}\n', 2, "x[0]", "a finite number"),
]
IDS = [h.name for h in HOSTILE]


def _new_name() -> str:
    return f"hostile-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_the_library_refuses_naming_line_and_field(store: Store, tmp_path: Path,
                                                   hostile: Hostile) -> None:
    path = tmp_path / hostile.name
    path.write_text(hostile.content)
    name = _new_name()
    with pytest.raises(RowRefused) as refused:
        Datasets(store).import_file(path, name)
    assert (refused.value.line, refused.value.column) == (hostile.line, hostile.column)
    assert hostile.expected in str(refused.value)
    assert str(refused.value).startswith(f"line {hostile.line}")
    assert "\n" not in str(refused.value)
    assert not Datasets(store).exists(name)
    assert Datasets(store).all() == []


def test_the_limits_are_where_they_say(store: Store, tmp_path: Path) -> None:
    """At each limit a file imports (and reads back); one past it is refused."""
    at_limit = {
        "digits": "9" * MAX_INT_DIGITS,
        "depth": "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1),
        "float": "1.7e308",
    }
    line = "{" + ", ".join(f'"{key}": {value}' for key, value in at_limit.items()) + "}"
    padded = line[:-1] + ', "pad": "' + "p" * (MAX_LINE_CHARS - len(line) - 11) + '"}'
    assert len(padded) == MAX_LINE_CHARS
    path = tmp_path / "edge.jsonl"
    path.write_text(padded + "\n")
    datasets = Datasets(store)
    info = datasets.import_file(path, _new_name())
    item = datasets.head(info.name, 1)[0]["data"]
    assert item["digits"] == int(at_limit["digits"])
    assert item["float"] == 1.7e308
    past = {"digits": "9" * (MAX_INT_DIGITS + 1),
            "depth": "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH,
            "float": "1.8e308"}
    for key, value in past.items():
        path.write_text(f'{{"{key}": {value}}}\n')
        with pytest.raises(RowRefused) as refused:
            datasets.import_file(path, _new_name())
        assert (refused.value.line, refused.value.column) == (1, key)
    path.write_text(padded[:-2] + 'p"}\n')
    with pytest.raises(RowRefused):
        datasets.import_file(path, _new_name())
    assert [d.name for d in datasets.all()] == [info.name]


def test_a_huge_line_is_never_held_whole(sqlite_store: Store, tmp_path: Path) -> None:
    """The file is a pipe fed lazily with a 128 MiB line: the import refuses it having
    read about a mebibyte, and never holds more than a few."""
    fifo = tmp_path / "huge.jsonl"
    os.mkfifo(fifo)
    total = 128 << 20
    sent = 0

    def feed() -> None:
        nonlocal sent
        try:
            with fifo.open("wb") as out:
                out.write(b'{"a": 1}\n{"blob": "')
                chunk = b"x" * 65536
                while sent < total:
                    out.write(chunk)
                    sent += len(chunk)
        except BrokenPipeError:  # the reader stopped: what it was meant to do
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    name = _new_name()
    tracemalloc.start()
    try:
        with pytest.raises(RowRefused) as refused:
            Datasets(sqlite_store).import_file(fifo, name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        writer.join(10)
    assert (refused.value.line, refused.value.column) == (2, None)
    assert peak < 16 << 20, f"peak {peak:,} bytes"
    assert sent < 16 << 20, f"{sent:,} bytes of the line were read"
    assert not Datasets(sqlite_store).exists(name)


@pytest.fixture
def api(tw: Any) -> Iterator[httpx.Client]:
    server = ApiServer(tw, token=TOKEN).start()
    with server.client() as client:
        yield client
    server.stop()


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_the_api_answers_422_naming_line_and_field(api: httpx.Client,
                                                   hostile: Hostile) -> None:
    name = _new_name()
    response = api.post("/api/datasets", params={"name": name},
                        files={"file": (hostile.name, hostile.content.encode())})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert (detail["type"], detail["field"], detail["file"]) == ("row_refused", "file",
                                                                 hostile.name)
    assert (detail["line"], detail["column"]) == (hostile.line, hostile.column)
    assert detail["msg"].startswith(f"line {hostile.line}")
    assert hostile.expected in detail["expected"]
    assert api.get(f"/api/datasets/{name}").status_code == 404


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, db: str,
                                             hostile: Hostile) -> None:
    (tmp_path / hostile.name).write_text(hostile.content)
    done = cli(tmp_path, db, "import", hostile.name, "--name", "hostile")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    where = f"line {hostile.line}" + (f", field {hostile.column!r}" if hostile.column else "")
    assert lines[0].startswith(f"error: {where}: got "), lines[0]
    assert hostile.expected in lines[0]
    assert lines[0].endswith("nothing was imported")
    listed = cli(tmp_path, db, "list", "--json")
    assert (listed.returncode, listed.stdout) == (0, "")
