"""The stored workflow definitions (``workflow_definitions``): one row per version.

A version is immutable once stored, so a run always finds the definition it started
with, and each process keeps the parsed ones it reads (bounded by entries and bytes:
every map-reduce job stores a definition of its own).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from taskworks.errors import InvalidInput
from taskworks.store.engine import Store
from taskworks.store.tables import WorkflowDefinition
from taskworks.workflows.cache import DEFINITIONS_MAX_BYTES, SizedLRU, json_size
from taskworks.workflows.model import Workflow, workflow_from_dict

__all__ = ["DEFINITIONS_BOUND", "DefinitionStore"]

#: parsed definitions kept per process, at most DEFINITIONS_MAX_BYTES of them
DEFINITIONS_BOUND = 1000


class DefinitionStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._definitions: SizedLRU[tuple[str, int], Workflow] = SizedLRU(
            DEFINITIONS_BOUND, DEFINITIONS_MAX_BYTES)

    def save(self, wf: Workflow) -> bool:
        """Store a version; True if new. The same version with another body is refused."""
        body = wf.to_dict()
        for _ in range(2):
            existing = self._stored(wf.name, wf.version)
            if existing is not None:
                if existing != body:
                    raise InvalidInput(
                        "version", wf.version, f"a new version for workflow {wf.name!r}: "
                        "this version is registered with another definition")
                return False
            try:
                with self.store.session() as session:
                    session.add(WorkflowDefinition(name=wf.name, version=wf.version,
                                                   definition=body))
                return True
            except IntegrityError:
                continue  # registered concurrently: compare with that one
        return False

    def _stored(self, name: str, version: int) -> Any:
        with self.store.session() as session:
            return session.scalar(select(WorkflowDefinition.definition).where(
                WorkflowDefinition.name == name, WorkflowDefinition.version == version))

    def latest_version(self, name: str) -> int | None:
        with self.store.session() as session:
            return session.scalar(select(func.max(WorkflowDefinition.version)).where(
                WorkflowDefinition.name == name))

    def definition(self, name: str, version: int) -> Workflow:
        """A stored version (immutable, so cached)."""
        key = (name, version)
        found = self._definitions.get(key)
        if found is None:
            body = self._stored(name, version)
            if body is None:
                raise InvalidInput("workflow", f"{name} v{version}", "a registered workflow")
            found = self._definitions.put(key, workflow_from_dict(body), json_size(body))
        return found

    def versions(self) -> list[tuple[str, int, datetime]]:
        """Every stored (name, version, registered at), by name then version."""
        with self.store.session() as session:
            rows = session.execute(select(
                WorkflowDefinition.name, WorkflowDefinition.version,
                WorkflowDefinition.created_at,
            ).order_by(WorkflowDefinition.name, WorkflowDefinition.version)).all()
        return [(r[0], r[1], r[2]) for r in rows]
