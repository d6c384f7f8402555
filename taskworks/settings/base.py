"""What every settings section shares: unknown keys refused, values frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """A settings section: a misspelt key is refused by name, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
