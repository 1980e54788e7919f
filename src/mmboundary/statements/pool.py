"""The confidence-statement pool (method.md section 3): a data file of this project.

`pool.yaml` maps each level 1..5 (1 = uncertain, 5 = fully confident) to the statements of that
level. Every statement is a clause written after a step, `"{step without period}, {statement}."`,
so it must not contain a comma (the parser splits a sentence at its last comma) nor end with
sentence-final punctuation; statements are distinct across the whole pool. `load_pool` checks this.

Data of the backward mapping only (`statements/mapping.py`; never written by the forward mapping):
- `data/backward_pool.yaml`, `backward_pool()`: more reference statements per level, in the same
  format (checked likewise, and none may repeat a `pool.yaml` statement);
- `data/dev_tails.yaml`, `sentence_tails(part)`: tails of ordinary sentences, "train" (the negative
  class of the statement detector) and "dev" (its threshold was chosen on them);
- `data/dev_statements.yaml`, `dev_statements()`: development statements (level -> statements) the
  settings were chosen on; never references.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from mmboundary.levels import LEVELS
from mmboundary.steps import require_text

_FINAL_PUNCT = re.compile(r"[.!?;:]\s*$")


def normalise(statement: str) -> str:
    """Key under which statements are compared exactly: lower case, single spaces, no final punctuation."""
    text = " ".join(require_text(statement, "statement", "normalise").split()).lower()
    return text.rstrip(".!?;: ").strip()


def validate_pool(pool: dict[int, tuple[str, ...]]) -> None:
    """Raise ValueError unless `pool` defines every level with distinct, comma-free statements."""
    if sorted(pool) != list(LEVELS):
        raise ValueError(f"statement pool must define levels {LEVELS}, got {sorted(pool)}")
    seen: dict[str, int] = {}
    for level, statements in pool.items():
        if not statements:
            raise ValueError(f"statement pool: level {level} has no statements")
        for s in statements:
            if not s.strip():
                raise ValueError(f"statement pool: empty statement at level {level}")
            if "," in s:
                raise ValueError(f"statement pool: {s!r} (level {level}) contains a comma")
            if _FINAL_PUNCT.search(s):
                raise ValueError(f"statement pool: {s!r} (level {level}) ends with punctuation")
            key = normalise(s)
            if key in seen:
                raise ValueError(f"statement pool: {s!r} appears at levels {seen[key]} and {level}")
            seen[key] = level


def load_pool(path: str | Path | None = None) -> dict[int, tuple[str, ...]]:
    """Level -> statements from a YAML file (default: the packaged `pool.yaml`), validated."""
    if path is None:
        text = resources.files("mmboundary.statements").joinpath("pool.yaml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError("statement pool: the YAML must map levels to lists of statements")
    pool = {int(k): tuple(str(s).strip() for s in v) for k, v in raw.items()}
    validate_pool(pool)
    return dict(sorted(pool.items()))


@lru_cache(maxsize=1)
def default_pool() -> dict[int, tuple[str, ...]]:
    """Level -> statements, read from the packaged `pool.yaml` (cached)."""
    return load_pool()


def all_statements() -> list[str]:
    """Every statement of the pool, level by level."""
    return [s for level in LEVELS for s in default_pool()[level]]


def _data_yaml(name: str):
    return yaml.safe_load(resources.files("mmboundary.statements").joinpath("data", name).read_text("utf-8"))


@lru_cache(maxsize=1)
def backward_pool() -> dict[int, tuple[str, ...]]:
    """Level -> the extra reference statements of the backward mapping (`data/backward_pool.yaml`),
    validated like the pool; none repeats a statement of `default_pool()`."""
    pool = {int(k): tuple(str(s).strip() for s in v) for k, v in _data_yaml("backward_pool.yaml").items()}
    validate_pool(pool)
    forward = {normalise(s) for s in all_statements()}
    repeated = [s for v in pool.values() for s in v if normalise(s) in forward]
    if repeated:
        raise ValueError(f"backward pool repeats statements of pool.yaml: {repeated}")
    return dict(sorted(pool.items()))


@lru_cache(maxsize=2)
def sentence_tails(part: str = "train") -> tuple[str, ...]:
    """Tails of ordinary sentences (`data/dev_tails.yaml`), `part` "train" or "dev"."""
    if part not in ("train", "dev"):
        raise ValueError(f"sentence_tails: part must be 'train' or 'dev', not {part!r}")
    return tuple(str(s).strip() for s in _data_yaml("dev_tails.yaml")[part])


def dev_statements() -> dict[int, tuple[str, ...]]:
    """Level -> the development statements of the backward mapping (`data/dev_statements.yaml`)."""
    return {int(k): tuple(str(s).strip() for s in v) for k, v in sorted(_data_yaml("dev_statements.yaml").items())}
