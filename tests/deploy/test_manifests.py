"""The Kubernetes manifests parse and agree with the settings, the CLI and the docs.

No cluster here. The manifests are checked against the real settings (every pod's
environment, assembled from the ConfigMap and the documented Secrets as Kubernetes would,
loads through ``load_settings``), the real CLI (each command's ``--help``, run for real)
and the docs (the ``kubectl create secret generic`` commands of deploy/kubernetes/README.md,
run with the real kubectl in ``--dry-run=client`` mode, create exactly the Secrets and keys
the manifests reference). The directory ships no credential at all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskworks import load_settings
from taskworks.api.server import MIN_TOKEN_LENGTH, check_bind
from taskworks.redaction import SECRET_WORDS
from tests.deploy.test_compose import NOT_SETTINGS, split_command
from tests.support.cli_help import help_text
from tests.support.workers import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
#: the docs that tell the operator how to create the Secrets
SECRET_DOCS = [KUBE / "README.md", ROOT / "docs" / "deploy.md"]
#: what the operator types at the documented ``read`` prompts
PASSWORDS = {"VALKEY_PASSWORD": "valkey-pw-0123", "POSTGRES_PASSWORD": "pg-pw-0123"}
#: settings whose value is, or may carry, a credential: never in a ConfigMap
CREDENTIAL_SETTINGS = {"TASKWORKS_BROKER_URL", "TASKWORKS_RESULT_BACKEND",
                       "TASKWORKS_DATABASE_URL", "TASKWORKS_DATABASES", "TASKWORKS_API_TOKEN",
                       "TASKWORKS_API__TOKEN"}


def _documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBE.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload: Deployments and Jobs."""
    for doc in _documents():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def config_maps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in _documents() if d["kind"] == "ConfigMap"}


def secret_commands(doc: Path) -> list[str]:
    """The ``kubectl create secret generic`` lines of DOC's shell blocks, continuations joined."""
    blocks = re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines
            if line.strip().startswith("kubectl create secret generic")]


def documented_secrets(doc: Path | None = None) -> dict[str, dict[str, str]]:
    """{Secret name: {key: the value as written}} from DOC's commands (nothing expanded);
    DOC is deploy/kubernetes/README.md unless given."""
    found: dict[str, dict[str, str]] = {}
    for line in secret_commands(doc or SECRET_DOCS[0]):
        argv = shlex.split(line)
        name = argv[4]
        for arg in argv[5:]:
            assert arg.startswith("--from-literal="), (doc, arg)
            key, _, value = arg.removeprefix("--from-literal=").partition("=")
            found.setdefault(name, {})[key] = value
    return found


def secret_value(written: str) -> str:
    """A documented value as the shell would make it: the typed passwords, a fresh token."""
    value = re.sub(r"\$\{(\w+):\?\}", lambda m: PASSWORDS[m.group(1)], written)
    return re.sub(r"\$\(openssl rand -hex (\d+)\)",
                  lambda m: secrets.token_hex(int(m.group(1))), value)


def environment(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{variable: (where it comes from, value)} as Kubernetes would assemble it."""
    maps = config_maps()
    documented = documented_secrets()
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            env.update({k: (f"configmap {name}", v) for k, v in maps[name].items()})
        else:
            name = source["secretRef"]["name"]
            env.update({k: (f"secret {name}", secret_value(v))
                        for k, v in documented[name].items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = ("literal", str(var["value"]))
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = (f"secret {ref['name']}",
                                secret_value(documented[ref["name"]][ref["key"]]))
        else:
            env[var["name"]] = ("fieldRef", "pod-0")
    return env


def names_a_setting(var: str) -> bool:
    fields = type(load_settings()).model_fields
    first, *nested = var.removeprefix("TASKWORKS_").lower().split("__")
    if first not in fields:
        return False
    annotation = fields[first].annotation
    for part in nested:  # e.g. WORKER__TIME_LIMIT: a field of the nested model
        if part not in getattr(annotation, "model_fields", {}):
            return False
        annotation = annotation.model_fields[part].annotation  # type: ignore[union-attr]
    return True


# -- workers, KEDA, draining -------------------------------------------------------------


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


# -- commands ----------------------------------------------------------------------------


def test_commands_are_real_cli_subcommands_with_real_options() -> None:
    groups = load_settings().worker_groups
    seen = set()
    for name, pod in pod_specs():
        for container in containers(pod):
            path, options = split_command(container["command"])
            text = help_text(path)  # fails unless the subcommand exists
            for option in options:
                assert option in text, (name, container["name"], option)
            if "--group" in options:
                assert options["--group"] in groups, name
            seen.add(" ".join(path))
    assert {"db upgrade", "db wait", "api", "beat", "worker"} <= seen


def test_migrations_run_before_the_api_and_every_other_pod_waits_for_them() -> None:
    upgraders = []
    for name, pod in pod_specs():
        init = [split_command(c["command"])[0] for c in pod.get("initContainers", [])]
        if ["db", "upgrade"] in init:
            upgraders.append(name)
            continue
        # a worker or beat started before the schema exists fails to write the journal
        waits = [c for c in pod.get("initContainers", [])
                 if split_command(c["command"])[0] == ["db", "wait"]]
        assert len(waits) == 1, name
        wait, main = waits[0], pod["containers"][0]
        # the same image (so the same newest revision) and the same database
        assert wait["image"] == main["image"], name
        assert wait["envFrom"] == main["envFrom"], name
        assert float(split_command(wait["command"])[1]["--timeout"]) > 0, name
    assert upgraders == ["taskworks-api"]
    api = dict(pod_specs())["taskworks-api"]
    assert split_command(api["containers"][0]["command"])[0] == ["api"]


# -- settings and credentials --------------------------------------------------------------


def test_the_directory_ships_no_credential() -> None:
    # kubectl apply -f DIR reads *.yaml, *.yml and *.json: only the manifests are there
    applied = [p for p in KUBE.iterdir() if p.suffix in (".yaml", ".yml", ".json")]
    assert sorted(p.suffix for p in applied) == [".yaml"] * len(applied)
    docs = _documents()
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are the operator's"
    assert config_maps()
    for name, data in config_maps().items():
        for key, value in data.items():
            assert key not in CREDENTIAL_SETTINGS, (name, key)
            assert not any(word in key.lower() for word in SECRET_WORDS), (name, key)
            assert "://" not in value, (name, key)  # a URL may carry a password: a Secret


def test_the_manifests_reference_exactly_the_documented_secrets() -> None:
    documented = documented_secrets()
    assert documented, "README.md documents no `kubectl create secret generic`"
    for doc in SECRET_DOCS[1:]:  # the other docs show the same commands
        assert {n: set(k) for n, k in documented_secrets(doc).items()} == \
            {n: set(k) for n, k in documented.items()}, doc
    used: dict[str, set[str]] = {}
    for _, pod in pod_specs():
        for container in containers(pod):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    name = source["secretRef"]["name"]
                    assert not source["secretRef"].get("optional"), name  # no start without
                    used.setdefault(name, set()).update(documented[name])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in documented[ref["name"]], ref
                    assert not ref.get("optional"), ref
                    used.setdefault(ref["name"], set()).add(ref["key"])
    for doc in _documents():
        if doc["kind"] == "TriggerAuthentication":
            for ref in doc["spec"]["secretTargetRef"]:
                assert ref["key"] in documented[ref["name"]], ref
                used.setdefault(ref["name"], set()).add(ref["key"])
    assert used == {name: set(keys) for name, keys in documented.items()}


def test_every_pod_gets_its_settings_from_the_configmap_and_the_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, pod in pod_specs():
        for container in containers(pod):
            env = environment(container)
            for var, (source, _) in env.items():
                if var.startswith("TASKWORKS_"):
                    assert source.startswith(("configmap ", "secret ")), (name, var, source)
                    assert var in NOT_SETTINGS or names_a_setting(var), (name, var)
                    if var in CREDENTIAL_SETTINGS:
                        assert source.startswith("secret "), (name, var, source)
                else:
                    assert source == "fieldRef", (name, var)  # e.g. POD_NAME
            for var in list(os.environ):
                if var.startswith("TASKWORKS_"):
                    monkeypatch.delenv(var)
            for var, (_, value) in env.items():
                monkeypatch.setenv(var, value)
            loaded = load_settings()  # raises ConfigError naming any invalid value
            # never the embedded broker or a SQLite file inside the pod
            password = PASSWORDS["VALKEY_PASSWORD"]
            assert loaded.broker_url == f"redis://:{password}@valkey:6379/0", name
            assert loaded.database_url is not None, name
            assert loaded.database_url.startswith("postgresql://"), name
            assert PASSWORDS["POSTGRES_PASSWORD"] in loaded.database_url, name
            assert loaded.visibility_timeout > loaded.worker.time_limit, name
            path, options = split_command(container["command"])
            if path == ["api"]:
                token = loaded.api.token.get_secret_value() if loaded.api.token else None
                assert token is not None, name
                assert len(token) >= MIN_TOKEN_LENGTH, name
                check_bind(options["--host"], token)  # what the API checks as it starts
            else:  # only the API (and KEDA) need the token
                assert loaded.api.token is None, (name, container["name"])


@pytest.mark.skipif(not (shutil.which("kubectl") and shutil.which("openssl")),
                    reason="needs kubectl and openssl to run the documented commands")
def test_the_documented_commands_create_the_secrets() -> None:
    for doc in SECRET_DOCS:
        block = next(b for b in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S)
                     if "kubectl create secret generic" in b)
        # the block as written, with kubectl in client-side dry-run and the passwords typed
        # at its prompts; nothing reaches a cluster
        script = ('kubectl() { if [ "$1" = create ]; then command kubectl "$@" '
                  '--dry-run=client -o json; else echo "{\\"skipped\\": \\"$*\\"}"; fi; }\n'
                  + block)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT,
                              input=f"{PASSWORDS['VALKEY_PASSWORD']}\n"
                                    f"{PASSWORDS['POSTGRES_PASSWORD']}\n",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (doc, done.stderr)
        objects, rest = [], done.stdout.strip()
        while rest:
            obj, end = json.JSONDecoder().raw_decode(rest)
            objects.append(obj)
            rest = rest[end:].strip()
        created = {o["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                           for k, v in o["data"].items()}
                   for o in objects if o.get("kind") == "Secret"}
        assert objects[-1] == {"skipped": "apply -f deploy/kubernetes/"}, doc  # Secrets first
        documented = documented_secrets(doc)
        assert {n: set(k) for n, k in created.items()} == \
            {n: set(k) for n, k in documented.items()}, doc
        urls = created["taskworks-urls"]
        assert urls["TASKWORKS_BROKER_URL"] == \
            f"redis://:{PASSWORDS['VALKEY_PASSWORD']}@valkey:6379/0"
        assert f":{PASSWORDS['POSTGRES_PASSWORD']}@" in urls["TASKWORKS_DATABASE_URL"]
        token = created["taskworks-api-token"]["token"]
        assert len(token) >= MIN_TOKEN_LENGTH, doc
        assert re.fullmatch(r"[0-9a-f]+", token), doc
    # a command run without the passwords stops instead of creating URLs without them
    line = secret_commands(SECRET_DOCS[0])[0]
    assert "${VALKEY_PASSWORD:?}" in line
    done = subprocess.run(["bash", "-c", f"kubectl() {{ echo ran; }}; {line}"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"]})
    assert done.returncode != 0, done.stdout + done.stderr
    assert "ran" not in done.stdout
    assert "VALKEY_PASSWORD" in done.stderr  # bash names the variable that is not set
