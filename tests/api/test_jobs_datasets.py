"""/api/datasets and /api/jobs against the real stack: uploads (raw body and multipart)
imported all or nothing, a validation job on a real cpu_intensive worker followed to its
result, cancel and retry, bad input 422 naming the field, unknown names and ids 404."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from taskworks.mapreduce.local import run_local
from tests.support.wait import wait_for

PEOPLE_CSV = ("id,name,email,age\n"
              "1,Ann,ann@example.com,31\n"
              "2,Bob,bob-at-example,45\n"
              "3,,carl@example.com,\n"
              "4,Dee,dee@example.com,200\n"
              "5,Eve,eve@example.com,27\n"
              "6,Fay,fay@example.com,38\n"
              "7,Gus,gus@example,52\n")
VALIDATION = {"required_fields": ["id", "name", "email"],
              "type_validations": {"id": "int", "name": "str", "email": "str"},
              "patterns": {"email": "[^@]+@[^@]+\\.[a-z]+"},
              "ranges": {"age": {"min": 0, "max": 150}}}


def _name(prefix: str = "ds") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _jsonl(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def _upload_csv(api: httpx.Client, name: str, text: str = PEOPLE_CSV) -> httpx.Response:
    return api.post("/api/datasets", params={"name": name}, content=text.encode(),
                    headers={"Content-Type": "text/csv"})


def _job_until(api: httpx.Client, job_id: str, state: str, timeout: float = 60
               ) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] == state else None
    return wait_for(reached, timeout=timeout, interval=0.1, what=f"job {job_id} {state}")


def _detail(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail: dict[str, Any] = response.json()["detail"][0]
    return detail


# -- datasets ---------------------------------------------------------------------------
def test_import_csv_and_jsonl_list_show_delete(api: httpx.Client) -> None:
    csv_name = _name("people")
    created = _upload_csv(api, csv_name)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["source"], body["row_count"], body["state"]) == ("csv", 7, "ready")
    assert body["columns"] == ["id", "name", "email", "age"]
    assert body["head"][0] == {"item_index": 0, "data": {"id": 1, "name": "Ann",
                                                         "email": "ann@example.com", "age": 31}}
    assert len(body["head"]) == 5

    jsonl_name = _name("events")
    items = [{"k": i, "tag": f"t{i % 3}"} for i in range(12)]
    multipart = api.post("/api/datasets", files={"file": ("events.jsonl", _jsonl(items))},
                         data={"name": jsonl_name})
    assert multipart.status_code == 201, multipart.text
    assert (multipart.json()["source"], multipart.json()["row_count"]) == ("jsonl", 12)
    assert multipart.json()["origin"] == "upload: events.jsonl"
    assert body["origin"] == "upload: the request body"

    listed = {d["name"]: d for d in api.get("/api/datasets").json()}
    assert listed[csv_name]["row_count"] == 7
    assert listed[jsonl_name]["columns"] == ["k", "tag"]
    shown = api.get(f"/api/datasets/{jsonl_name}", params={"head": 20}).json()
    assert [i["data"] for i in shown["head"]] == items
    assert api.get(f"/api/datasets/{jsonl_name}", params={"head": 0}).json()["head"] == []

    deleted = api.delete(f"/api/datasets/{jsonl_name}")
    assert deleted.json() == {"name": jsonl_name, "deleted_items": 12}
    assert api.get(f"/api/datasets/{jsonl_name}").status_code == 404
    assert api.delete(f"/api/datasets/{jsonl_name}").status_code == 404
    assert jsonl_name not in {d["name"] for d in api.get("/api/datasets").json()}


def test_bad_rows_are_listed_by_line_and_nothing_is_stored(api: httpx.Client) -> None:
    name = _name("bad")
    text = "a,b\n1,2\n3\n4,5\n6,7,8\n"
    detail = _detail(_upload_csv(api, name, text))
    assert detail["field"] == "file"
    assert detail["bad_rows"] == [{"line": 3, "message": "1 fields, expected 2"},
                                  {"line": 5, "message": "3 fields, expected 2"}]
    assert detail["bad_rows_total"] == 2
    assert api.get(f"/api/datasets/{name}").status_code == 404

    lines = b'{"a": 1}\nnot json\n[1, 2]\n{"a": 2}\n'
    detail = _detail(api.post("/api/datasets", params={"name": name, "format": "jsonl"},
                              content=lines))
    assert [r["line"] for r in detail["bad_rows"]] == [2, 3]
    assert api.get(f"/api/datasets/{name}").status_code == 404
    # the same name is free: nothing of the failed imports was kept
    assert _upload_csv(api, name, "a\n1\n").status_code == 201


@pytest.mark.parametrize(("request_kwargs", "field"), [
    ({"content": b"a\n1\n", "headers": {"Content-Type": "text/csv"}}, "name"),
    ({"params": {"name": "x"}, "content": b"a\n1\n",
      "headers": {"Content-Type": "application/octet-stream"}}, "format"),
    ({"params": {"name": "x", "format": "xml"}, "content": b"a\n1\n"}, "format"),
    ({"params": {"name": "bad\x01name", "format": "csv"}, "content": b"a\n1\n"}, "name"),
    ({"params": {"name": "x" * 256, "format": "csv"}, "content": b"a\n1\n"}, "name"),
    ({"params": {"name": "x"}, "files": {"other": ("a.csv", b"a\n1\n")}}, "file"),
    ({"params": {"name": "x"}, "content": b"--zz\r\nnonsense",
      "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}, "file"),
    ({"params": {"name": "x"}, "content": b"garbage",
      "headers": {"Content-Type": "multipart/form-data"}}, "body"),  # no boundary
    ({"params": {"name": "x", "format": "csv"}, "content": b"\xff\xfe\x00a,b\n"}, "file"),
])
def test_bad_upload_input_is_422_naming_the_field(api: httpx.Client,
                                                  request_kwargs: dict[str, Any],
                                                  field: str) -> None:
    assert _detail(api.post("/api/datasets", **request_kwargs))["field"] == field


def test_an_existing_name_is_refused(api: httpx.Client) -> None:
    name = _name("twice")
    assert _upload_csv(api, name).status_code == 201
    assert _detail(_upload_csv(api, name))["field"] == "name"
    assert api.get(f"/api/datasets/{name}").json()["row_count"] == 7


# -- jobs -------------------------------------------------------------------------------
def test_validation_job_through_the_api(api: httpx.Client, tw: Any,
                                        start_worker: Callable[..., Any]) -> None:
    start_worker(["cpu_intensive"], pool="threads", concurrency=2)
    name = _name("people")
    assert _upload_csv(api, name).status_code == 201
    started = api.post("/api/jobs", json={"dataset": name, "function": "validation",
                                          "params": VALIDATION, "partition_size": 3})
    assert started.status_code == 201, started.text
    job = started.json()
    assert (job["dataset"], job["function"], job["partitions_total"]) == (name, "validation", 3)
    assert [(p["start"], p["end"]) for p in job["partitions"]] == [(0, 3), (3, 6), (6, 7)]

    done = _job_until(api, job["id"], "completed")
    assert (done["partitions_done"], done["percent"], done["reduce"]) == (3, 100.0,
                                                                        "SUCCEEDED")
    assert all(p["state"] == "SUCCEEDED" and p["percent"] == 100 for p in done["partitions"])
    assert done["partition_states"] == {"SUCCEEDED": 3}
    result = api.get(f"/api/jobs/{job['id']}/result").json()
    assert result["ready"] is True
    assert result["result"] == run_local(tw.store, name, "validation", VALIDATION, 3).result
    assert (result["result"]["valid"], result["result"]["invalid"]) == (3, 4)

    listed = {j["id"]: j for j in api.get("/api/jobs", params={"limit": 500}).json()}
    assert listed[job["id"]]["state"] == "completed"
    assert listed[job["id"]]["percent"] == 100.0
    completed = api.get("/api/jobs", params={"state": "completed", "limit": 500}).json()
    assert job["id"] in {j["id"] for j in completed}
    assert all(j["state"] == "completed" for j in completed)
    assert api.post(f"/api/jobs/{job['id']}/retry").status_code == 422  # nothing to redo


@pytest.mark.parametrize(("change", "field"), [
    ({"function": "no-such-function"}, "function"),
    ({"dataset": "no-such-dataset"}, "dataset"),
    ({"partition_size": 0}, "partition_size"),
    ({"partition_size": "many"}, "partition_size"),
    ({"params": {"type_validations": {"id": "number"}}}, "params.type_validations.id"),
    ({"function": "transformation", "params": {"calculated_fields": {
        "x": "__import__('os')"}}}, "params.calculated_fields.x"),
    ({"params": "not an object"}, "params"),
    ({"surprise": 1}, "surprise"),
    ({"on_partition_failure": "ignore"}, "on_partition_failure"),
    ({"function": "transformation", "params": {}, "on_partition_failure": "reduce"},
     "on_partition_failure"),
])
def test_bad_job_input_is_422_and_starts_nothing(api: httpx.Client, change: dict[str, Any],
                                                 field: str) -> None:
    name = _name("people")
    _upload_csv(api, name)
    before = len(api.get("/api/jobs", params={"limit": 500}).json())
    body = {"dataset": name, "function": "validation", "params": VALIDATION,
            "partition_size": 2, **change}
    assert _detail(api.post("/api/jobs", json=body))["field"] == field
    assert len(api.get("/api/jobs", params={"limit": 500}).json()) == before


def test_unknown_ids_and_names_are_404(api: httpx.Client) -> None:
    assert api.get("/api/datasets/no-such-dataset").status_code == 404
    assert api.delete("/api/datasets/no-such-dataset").status_code == 404
    for path in ("", "/result"):
        assert api.get(f"/api/jobs/no-such-job{path}").status_code == 404
    for action in ("cancel", "retry"):
        assert api.post(f"/api/jobs/no-such-job/{action}").status_code == 404
    assert api.get("/api/jobs/bad id!").status_code == 422
    assert _detail(api.get("/api/jobs", params={"state": "sleeping"}))["field"] == "state"


def test_cancel_then_retry_through_the_api(api: httpx.Client, redis_client: redis.Redis,
                                           start_worker: Callable[..., Any]) -> None:
    start_worker(["cpu_intensive"], pool="solo")
    name = _name("numbers")
    api.post("/api/datasets", params={"name": name, "format": "jsonl"},
             content=_jsonl([{"v": i} for i in range(50)]))
    key = f"api-cancel-{uuid.uuid4().hex[:6]}"
    job = api.post("/api/jobs", json={"dataset": name, "function": "tests.slow_sum",
                                      "params": {"key": key, "sleep": 0.3},
                                      "partition_size": 10}).json()
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}").json()["partitions_done"] >= 1,
             timeout=30, what="a partition done")
    result = api.get(f"/api/jobs/{job['id']}/result").json()
    assert (result["ready"], result["result"]) == (False, None)
    # the dataset is in use: deleting it would break the job
    assert _detail(api.delete(f"/api/datasets/{name}"))["field"] == "name"

    cancelled = api.post(f"/api/jobs/{job['id']}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    states = {p["state"] for p in cancelled.json()["partitions"]}
    assert "CANCELLED" in states
    assert states <= {"SUCCEEDED", "CANCELLED"}

    retried = api.post(f"/api/jobs/{job['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "running"
    _job_until(api, job["id"], "completed")
    assert api.get(f"/api/jobs/{job['id']}/result").json()["result"] == {
        "sum": sum(range(50)), "count": 50}
    assert api.delete(f"/api/datasets/{name}").status_code == 200  # no longer in use


def test_partial_job_through_the_api(api: httpx.Client, redis_client: redis.Redis,
                                     start_worker: Callable[..., Any]) -> None:
    start_worker(["cpu_intensive"], pool="solo")
    name = _name("numbers")
    api.post("/api/datasets", params={"name": name, "format": "jsonl"},
             content=_jsonl([{"v": i} for i in range(30)]))
    key = f"api-partial-{uuid.uuid4().hex[:6]}"
    redis_client.set(f"{key}:fail:10", 1)
    job = api.post("/api/jobs", json={"dataset": name, "function": "tests.slow_sum",
                                      "params": {"key": key}, "partition_size": 10,
                                      "on_partition_failure": "reduce"}).json()
    assert job["on_partition_failure"] == "reduce"
    detail = _job_until(api, job["id"], "partial")
    assert detail["failed_partitions"] == [1]
    assert detail["reduce"] == "SUCCEEDED"
    result = api.get(f"/api/jobs/{job['id']}/result").json()
    assert (result["ready"], result["result"]) == (True, {"sum": 45 + 245, "count": 20})
    listed = api.get("/api/jobs", params={"state": "partial", "limit": 500}).json()
    assert job["id"] in {j["id"] for j in listed}
    failed = api.get("/api/jobs", params={"state": "failed", "limit": 500}).json()
    assert job["id"] not in {j["id"] for j in failed}

    redis_client.delete(f"{key}:fail:10")
    assert api.post(f"/api/jobs/{job['id']}/retry").json()["state"] == "running"
    _job_until(api, job["id"], "completed")
    assert api.get(f"/api/jobs/{job['id']}/result").json()["result"] == {
        "sum": sum(range(30)), "count": 30}
