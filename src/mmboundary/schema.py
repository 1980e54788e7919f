"""The base class of every config section: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section (`RunConfig` and each of its parts)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
