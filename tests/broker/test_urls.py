"""Broker URLs in the one form kombu, Celery's result backend and redis-py read alike."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import redis

from taskworks import Taskworks
from taskworks.broker.transport import TRANSPORT
from taskworks.broker.urls import normalise, redis_client
from taskworks.settings import load_settings
from tests.support.workers import WorkerProcess


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("valkey://:pw@h:6379/1", "redis://:pw@h:6379/1"),
    ("VALKEY://h/2", "redis://h/2"),
    # rediss:// verifies the certificate unless it says otherwise
    ("rediss://:pw@h:6380/0", "rediss://:pw@h:6380/0?ssl_cert_reqs=required"),
    ("valkeys://h:6380/0", "rediss://h:6380/0?ssl_cert_reqs=required"),
    ("rediss://h/0?ssl_ca_certs=/etc/ca.pem",
     "rediss://h/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"),
    ("rediss://h/0?", "rediss://h/0?ssl_cert_reqs=required"),
    ("rediss://h/0?ssl_cert_reqs=none", "rediss://h/0?ssl_cert_reqs=none"),
    ("rediss://h/0?ssl_cert_reqs=optional&ssl_ca_certs=/ca.pem",
     "rediss://h/0?ssl_cert_reqs=optional&ssl_ca_certs=/ca.pem"),
])
def test_normalise(url: str, expected: str) -> None:
    assert normalise(url) == expected
    assert normalise(expected) == expected  # settings may normalise twice: no change


@pytest.mark.parametrize(("url", "expected"), [
    ("unix:///run/valkey.sock", "unix:// sockets are not supported"),
    ("redis+socket:///run/valkey.sock", "schemes: redis, rediss, valkey, valkeys"),
    ("amqp://guest@h//", "expected a Redis/Valkey URL"),
    ("valkey://", "expected a Redis/Valkey URL"),
    ("redis://:pw@h/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
     "expected rediss:// (or valkeys://) with TLS parameters (ssl_cert_reqs, ssl_ca_certs)"),
    ("rediss://h/0?ssl_cert_reqs=CERT_REQUIRED", "one of required, optional, none"),
    ("rediss://h/0?ssl_cert_reqs=", "one of required, optional, none"),
])
def test_refused(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=r"^expected") as info:
        normalise(url)
    assert expected in str(info.value)
    assert "pw" not in str(info.value)  # the URL (and its password) is never repeated


def test_every_client_of_a_valkeys_url_verifies_the_certificate() -> None:
    # no server: what each library made of the URL, before any connection
    tw = Taskworks(settings=load_settings(broker_url="valkeys://:pw@cache.internal:6380/2"))
    with tw.app.connection_for_write() as conn:
        assert conn.transport_cls == TRANSPORT
        assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # kombu: TLS, verified
    backend = tw.app.backend.connparams  # Celery's result backend
    assert issubclass(backend["connection_class"], redis.SSLConnection)
    assert backend["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    pool = redis_client("valkeys://:pw@cache.internal:6380/2").connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"


def test_redis_client_reads_a_valkey_url(broker_url: str) -> None:
    valkey = broker_url.replace("redis://", "valkey://", 1)
    with redis_client(valkey, decode_responses=True) as client:
        assert client.ping() is True


def test_a_worker_runs_tasks_on_a_valkey_url(sample: Any, broker_url: str,
                                              tmp_path: Path) -> None:
    # kombu and Celery have no valkey:// of their own: the settings hand them redis://
    valkey = broker_url.replace("redis://", "valkey://", 1)
    tw = Taskworks(settings=load_settings(broker_url=valkey))
    assert tw.settings.effective_broker_url == broker_url
    worker = WorkerProcess(tw.app, {**os.environ, "TASKWORKS_BROKER_URL": valkey},
                           ["default"], log_dir=tmp_path)
    try:
        worker.wait_ready()
        assert tw.app.send_task("tests.echo", [5]).get(timeout=30) == 5
    finally:
        worker.stop()
