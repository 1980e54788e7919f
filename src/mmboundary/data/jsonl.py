"""The project's JSONL dataset format (documented in docs/data-format.md).

One JSON object per line, the fields of `mmboundary.records.Example`; `image` is relative to
the folder of the JSONL file (or absolute).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from mmboundary.records import Example


def example_to_json(example: Example, root: Path) -> dict:
    """The JSON object of one example, its image path made relative to `root` where possible."""
    data = example.model_dump(mode="json", exclude_none=True)
    try:
        data["image"] = Path(os.path.relpath(example.image, root)).as_posix()
    except ValueError:  # another drive on Windows
        data["image"] = str(example.image)
    if not data.get("chain"):
        data.pop("chain", None)
    return data


def write_examples(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples as JSONL, atomically (to a temporary name, then renamed). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(example_to_json(ex, path.parent), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
