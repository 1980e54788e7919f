"""One entry point for reading a dataset file in either supported format."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from mmboundary.data.annotated import read_annotated
from mmboundary.data.jsonl import read_examples
from mmboundary.errors import ConfigError
from mmboundary.records import Example

Format = Literal["jsonl", "annotated"]


def load_dataset_file(path: str | Path, *, fmt: Format = "jsonl",
                      image_dir: str | Path | None = None, check_images: bool = True,
                      split: str | None = None, **kw: Any) -> list[Example]:
    """Read the examples of a dataset file.

    - fmt="jsonl": the project's format (`read_examples`); image paths are relative to the
      JSONL file's folder, so `image_dir` must not be given;
    - fmt="annotated": the authors' format (`read_annotated`); `image_dir` is the image folder
      (None: the annotation file's folder). Extra keywords (`dataset`, `image_pattern`,
      `on_duplicate`, `include_direct_answers`) go to `read_annotated`.

    `max_pixels` is accepted by both. Bad data raises `DataError` (file, line/record, field); a
    bad argument raises `ConfigError` naming it.
    """
    if fmt == "jsonl":
        if image_dir is not None:
            raise ConfigError("image_dir: only used with fmt='annotated'; in a JSONL file the "
                              "image paths are relative to the file's folder")
        unknown = set(kw) - {"max_pixels"}
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: not an option of the JSONL format")
        return read_examples(path, check_images=check_images, split=split, **kw)
    if fmt == "annotated":
        allowed = {"dataset", "image_pattern", "on_duplicate", "include_direct_answers",
                   "max_pixels"}
        unknown = set(kw) - allowed
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: not an option of the annotated format "
                              f"(options: {sorted(allowed)})")
        return read_annotated(path, image_dir, check_images=check_images, split=split, **kw)
    raise ConfigError(f"fmt: unknown dataset format {fmt!r}; expected 'jsonl' or 'annotated'")
