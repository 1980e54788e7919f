"""Export reference chains in the MMBoundary authors' annotated format (method.md section 6).

The file is a JSON list of records like the authors' A-OKVQA file:

    {"question_id": "test-000007", "image_id": "test-000007", "split": "test",
     "image": "images/test/test-000007.png", "question": "How many red objects are there?",
     "direct_answers": ["2"],
     "keys": {"Image_level": ["There are 2 red objects"],
              "Reasoning_level": ["So the answer is 2"]},
     "keys_filtered": {... the same ...}}

**[choice]** Mapping. `question_id` and `image_id` are the example id (the benchmark draws one
image per question, named after the example); `image` (an extra field, like the authors' extra
`split` and `rationales`) is the image path relative to the JSON file's folder, so the file can
be read back with its images. `choices` and `correct_choice_idx` are written only for
multiple-choice examples (the benchmark has none). `direct_answers` are the accepted answers.
Perception steps go to `Image_level`, reasoning steps to `Reasoning_level`; `keys` equals
`keys_filtered` (no step was filtered out). Step texts lose their final period, as in the
authors' files (`strip_periods=False` keeps them). Written atomically, UTF-8, indented.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from mmboundary.records import Example, StepKind


def _step_text(text: str, strip_periods: bool) -> str:
    return text.rstrip().rstrip(".").rstrip() if strip_periods else text


def to_annotated(example: Example, root: str | Path | None = None,
                 strip_periods: bool = True) -> dict:
    """The annotated-format record of one example; `image` relative to `root` when given."""
    keys = {
        "Image_level": [_step_text(s.text, strip_periods) for s in example.chain
                        if s.kind == StepKind.perception],
        "Reasoning_level": [_step_text(s.text, strip_periods) for s in example.chain
                            if s.kind == StepKind.reasoning],
    }
    image = Path(example.image)
    if root is not None:
        try:
            image = Path(os.path.relpath(image, Path(root)))
        except ValueError:  # another drive on Windows
            pass
    record: dict = {
        "question_id": example.id,
        "image_id": example.id,
        "split": example.split,
        "image": image.as_posix(),
        "question": example.question,
    }
    if example.choices is not None:
        record["choices"] = list(example.choices)
        answers = set(example.answers)
        record["correct_choice_idx"] = next(
            (i for i, c in enumerate(example.choices) if c in answers), None)
    record["direct_answers"] = list(example.answers)
    record["keys"] = keys
    record["keys_filtered"] = {k: list(v) for k, v in keys.items()}
    if record["split"] is None:
        del record["split"]
    return record


def export_annotated(examples: Iterable[Example], path: str | Path,
                     strip_periods: bool = True) -> int:
    """Write examples' reference chains as the authors' annotated JSON list. Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    records = [to_annotated(ex, root, strip_periods) for ex in examples]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return len(records)
