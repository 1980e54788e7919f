"""The confidence-statement pool (method.md section 3): a data file of this project."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml

LEVELS = (1, 2, 3, 4, 5)


@lru_cache(maxsize=1)
def default_pool() -> dict[int, tuple[str, ...]]:
    """Level -> statements, read from the packaged `pool.yaml`."""
    text = resources.files("mmboundary.statements").joinpath("pool.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    pool = {int(k): tuple(str(s) for s in v) for k, v in raw.items()}
    if sorted(pool) != list(LEVELS):
        raise ValueError(f"statement pool must define levels {LEVELS}, got {sorted(pool)}")
    return pool


def all_statements() -> list[str]:
    """Every statement of the pool, level by level."""
    return [s for level in LEVELS for s in default_pool()[level]]
