"""Workflow YAML is loaded without anchors or aliases, and within a size cap.

``yaml.safe_load`` expands aliases: ten aliases of ten aliases, five levels deep, is a
million-item definition from a body of a few hundred bytes (stored as megabytes of JSON).
The loader refuses the first anchor while composing, before any object is built, with a
one-line error: InvalidInput from the library, exit 2 from the CLI, 422 from the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskworks.errors import InvalidInput
from taskworks.workflows import load_file
from taskworks.workflows.model import MAX_DEFINITION_BYTES, load_yaml
from tests.api.server import TOKEN, ApiServer
from tests.workflows.test_cli import cli

_LEVELS = "\n".join(f"      {name}: &{name} [{','.join(['*' + below] * 10)}]"
                    for below, name in zip("abcd", "bcde", strict=True))
BOMB = f"""name: bomb
steps:
  - name: s
    task: wf.add
    params:
      a: &a [x,x,x,x,x,x,x,x,x,x]
{_LEVELS}
      f: [{','.join(['*e'] * 10)}]
"""
REFUSED = "anchors and aliases (&a, *a) are not allowed, line 6 column 10"


def test_the_alias_bomb_is_refused_before_it_expands() -> None:
    assert len(BOMB.encode()) <= 415
    assert len(json.dumps(yaml.safe_load(BOMB))) > 4_000_000  # what safe_load made of it
    with pytest.raises(yaml.YAMLError) as caught:
        load_yaml(BOMB)
    assert str(caught.value) == f"{REFUSED}: write the value out"  # one line


def test_load_file_refuses_it_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(InvalidInput) as caught:
        load_file(path)
    assert caught.value.field == "FILE"
    assert REFUSED in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", [
    "name: &n wf\nsteps: [{name: a, task: wf.add}]\n",                     # an anchor alone
    "name: wf\nsteps:\n  - &s {name: a, task: wf.add}\n  - *s\n",           # an alias
    "name: wf\nbase: &b {task: wf.add}\nsteps:\n  - {<<: *b, name: a}\n",   # a merge key
])
def test_every_anchor_and_alias_is_refused(text: str) -> None:
    with pytest.raises(yaml.YAMLError, match="anchors and aliases"):
        load_yaml(text)


def test_plain_yaml_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text('name: wf\ndescription: "R&D *draft* & more"\nsteps:\n'
                    '  - {name: a, task: wf.add, params: {glob: "a*b", amp: "&x"}}\n')
    wf = load_file(path)
    assert wf.description == "R&D *draft* & more"
    assert wf.steps[0].params == {"glob": "a*b", "amp": "&x"}


def test_a_definition_over_the_size_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * (MAX_DEFINITION_BYTES // 10 + 1))
    with pytest.raises(InvalidInput) as caught:
        load_file(path)
    assert f"at most {MAX_DEFINITION_BYTES:,} bytes" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        load_yaml("#" * (MAX_DEFINITION_BYTES + 1))
    assert caught.value.field == "YAML"


def test_the_cli_exits_2(tmp_path: Path, tw: Any) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    done = cli("register", str(path))
    assert done.returncode == 2
    assert REFUSED in done.stderr
    assert "Traceback" not in done.stderr


def test_the_api_answers_422(tw: Any) -> None:
    server = ApiServer(tw, token=TOKEN).start()
    try:
        with server.client() as api:
            response = api.post("/api/workflows", content=BOMB,
                                headers={"Content-Type": "application/yaml"})
    finally:
        server.stop()
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["field"] == "body"
    assert REFUSED in detail["expected"]
