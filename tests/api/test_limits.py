"""Body caps (taskworks/api/limits.py) on a real uvicorn server: a body over its route's
cap is a 413 in the API's error shape, whether its size is declared (refused before a byte
of it is read) or only found while it streams (chunked, raw or multipart), and nothing of
it is stored, queued or spooled past the cap."""

from __future__ import annotations

import json
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.datastructures import UploadFile

from taskworks.api.limits import MAX_BODY_BYTES
from taskworks.api.routes import datasets, workflows
from taskworks.monitoring.queues import queue_depths
from tests.api.server import TOKEN, ApiServer

#: the upload cap these tests set: small, so that going past it costs nothing
CAP = 64 * 1024
BOUNDARY = "tw-limits-boundary"


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    # the middleware reads the route's constant per request; the server is a thread here
    monkeypatch.setattr(datasets, "MAX_UPLOAD_BYTES", CAP)
    return CAP


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Bytes written into each file the multipart parser spools, by file."""
    written: dict[int, int] = defaultdict(int)
    write = UploadFile.write

    async def counting(self: UploadFile, data: bytes) -> None:
        written[id(self)] += len(data)
        await write(self, data)

    monkeypatch.setattr(UploadFile, "write", counting)
    return written


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _multipart(name: str, rows: int) -> Iterator[bytes]:
    """A multipart form with a CSV file field, generated piece by piece (so httpx sends
    it chunked, with no Content-Length)."""
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\nid,text\r\n").encode()
    for start in range(0, rows, 100):
        yield "".join(f"{i},{'x' * 70}\r\n" for i in range(start, min(start + 100, rows))
                      ).encode()
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _chunked(api: httpx.Client, url: str, body: Iterator[bytes], **kwargs: Any
             ) -> httpx.Response:
    request = api.build_request("POST", url, content=body, **kwargs)
    assert request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in request.headers
    return api.send(request)


def _too_large(response: httpx.Response, limit: int) -> dict[str, Any]:
    assert response.status_code == 413, response.text
    detail: dict[str, Any] = response.json()["detail"][0]
    assert (detail["type"], detail["field"], detail["limit"]) == ("body_too_large", "body",
                                                                  limit)
    assert f"at most {limit:,} bytes" in detail["msg"]
    return detail


def test_a_chunked_multipart_upload_past_the_cap_is_413_and_stores_nothing(
        api: httpx.Client, small_cap: int, spooled: dict[int, int]) -> None:
    form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    small = _name("chunked-ok")
    created = _chunked(api, "/api/datasets", _multipart(small, 10), headers=form)
    assert created.status_code == 201, created.text  # the same path, under the cap
    assert created.json()["row_count"] == 10

    big = _name("chunked-big")
    rows = 20 * small_cap // 70  # about 20 times the cap
    detail = _too_large(_chunked(api, "/api/datasets", _multipart(big, rows), headers=form),
                        small_cap)
    assert detail["value"] == f"more than {small_cap:,} bytes"
    assert api.get(f"/api/datasets/{big}").status_code == 404
    assert big not in {d["name"] for d in api.get("/api/datasets").json()}
    # the form parser stopped where the body passed the cap: no spooled file grew past it
    assert spooled
    assert max(spooled.values()) <= small_cap


def test_a_chunked_raw_upload_past_the_cap_is_413(api: httpx.Client, small_cap: int) -> None:
    name = _name("raw-big")

    def body() -> Iterator[bytes]:
        yield b"id,text\n"
        for i in range(4 * small_cap // 1024):
            yield f"{i},{'y' * 1000}\n".encode()

    _too_large(_chunked(api, "/api/datasets", body(), params={"name": name, "format": "csv"}),
               small_cap)
    assert api.get(f"/api/datasets/{name}").status_code == 404


def _raw_request(server: ApiServer, head: str) -> tuple[int, dict[str, Any]]:
    """Sends only ``head`` (request line and headers, no body) and reads the answer: a
    server that waited for the declared body would time out here."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        header, _, body = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += sock.recv(65536)
    return int(header.split()[1]), json.loads(body)


def test_a_declared_length_past_the_cap_is_413_before_reading(api_server: ApiServer,
                                                              small_cap: int) -> None:
    name = _name("declared")
    common = (f"Host: 127.0.0.1:{api_server.port}\nAuthorization: Bearer {TOKEN}\n"
              "X-Taskworks: 1\n")
    status, body = _raw_request(api_server, (
        f"POST /api/datasets?name={name}&format=csv HTTP/1.1\n{common}"
        f"Content-Type: text/csv\nContent-Length: {10 * 2**30}\n"))
    assert status == 413
    detail = body["detail"][0]
    assert (detail["field"], detail["limit"]) == ("body", small_cap)
    assert detail["value"] == f"{10 * 2**30:,} bytes (Content-Length)"
    # any other route: the small JSON cap
    status, body = _raw_request(api_server, (
        f"POST /api/tasks HTTP/1.1\n{common}Content-Type: application/json\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\n"))
    assert (status, body["detail"][0]["limit"]) == (413, MAX_BODY_BYTES)
    with api_server.client() as api:
        assert api.get(f"/api/datasets/{name}").status_code == 404


def test_a_json_body_past_its_cap_is_413_and_nothing_is_queued(
        api: httpx.Client, tw: Any, redis_client: Any) -> None:
    def backlog() -> int:
        return sum(d.backlog for d in queue_depths(redis_client, tw.queue_names()).values())

    def task(size: int) -> Iterator[bytes]:
        yield b'{"name": "tests.echo", "args": ["'
        for _ in range(size // 65536):
            yield b"z" * 65536
        yield b'"]}'

    json_type = {"Content-Type": "application/json"}
    _too_large(_chunked(api, "/api/tasks", task(2 * MAX_BODY_BYTES), headers=json_type),
               MAX_BODY_BYTES)
    assert backlog() == 0
    submitted = _chunked(api, "/api/tasks", task(MAX_BODY_BYTES // 2), headers=json_type)
    assert submitted.status_code == 201, submitted.text
    assert backlog() == 1


def test_a_definition_past_its_cap_is_413_and_a_deep_one_422(
        api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows, "MAX_DEFINITION_BYTES", 10_000)
    name = _name("wf-big")

    def definition() -> Iterator[bytes]:
        yield f'{{"name": "{name}", "description": "'.encode()
        yield b"d" * 20_000
        yield b'", "steps": [{"name": "a", "task": "wf.record"}]}'

    _too_large(_chunked(api, "/api/workflows", definition(),
                        headers={"Content-Type": "application/json"}), 10_000)
    assert api.get(f"/api/workflows/{name}").status_code == 404
    # under the cap but nested past what the parsers recurse through: bad input, no 500
    for content_type, deep in (("application/json", "[" * 5000),
                               ("application/yaml", "[" * 5000)):
        response = api.post("/api/workflows", content=deep,
                            headers={"Content-Type": content_type})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == "body"
