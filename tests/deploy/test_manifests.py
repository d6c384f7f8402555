"""The Kubernetes manifests parse and agree with the settings they depend on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from taskworks import load_settings

KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def _documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBE.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_worker_group_has_a_deployment_and_a_scaled_object() -> None:
    docs = _documents()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs
              if d["kind"] == "ScaledObject"}
    for group in load_settings().worker_groups:
        name = f"taskworks-worker-{group}"
        assert name in deployments
        trigger = scaled[name]["spec"]["triggers"][0]
        assert trigger["metadata"]["valueLocation"] == f"{group}.desired"
        assert trigger["metadata"]["url"].endswith("/api/autoscale/replicas")


def test_scaled_object_bounds_are_the_groups_bounds() -> None:
    # the API clamps desired replicas to min_workers..max_workers: other KEDA bounds
    # would promise a scale (to zero, or beyond max) that never happens
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in _documents()
              if d["kind"] == "ScaledObject"}
    for name, group in load_settings().worker_groups.items():
        spec = scaled[f"taskworks-worker-{name}"]
        assert spec["minReplicaCount"] == group.min_workers, name
        assert spec["maxReplicaCount"] == group.max_workers, name


def test_draining_workers_outlive_the_longest_task() -> None:
    time_limit = load_settings().worker.time_limit
    workers = [d for d in _documents() if d["kind"] == "Deployment"
               and d["metadata"]["name"].startswith("taskworks-worker-")]
    assert workers
    for deployment in workers:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > time_limit
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert "kill -TERM 1" in pre_stop[-1]
