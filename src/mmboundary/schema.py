"""The base class of every config section: unknown keys are errors, assignments are validated,
and a section given in part keeps the defaults of the rest.

Some sections default to a customised instance (`base.clip`, `sft.train`: a `TrainConfig` with
their own lr, batch size, warm-up); a config that sets one of their keys (`sft.train.max_steps=3`)
keeps the other customised defaults, not the class's plain ones."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    """A config section (`RunConfig` and each of its parts)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_sections_keep_their_defaults(cls, data: Any) -> Any:
        """A mapping given for a field whose default is a customised section is laid over that
        default's own settings (the keys the mapping does not set come from the default)."""
        if not isinstance(data, dict):
            return data
        out = data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if not isinstance(value, dict) or field.default_factory is None:
                continue
            default = field.default_factory()
            if not isinstance(default, BaseModel):
                continue
            missing = {k: v for k, v in default.model_dump(exclude_unset=True).items() if k not in value}
            if missing:
                out = dict(out) if out is data else out
                out[name] = {**missing, **value}
        return out
