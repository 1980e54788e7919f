"""Typed records shared by every stage.

Data flows one way through the pipeline (see docs/architecture.md):

    Example -> generate -> GeneratedChain -> estimate -> ... -> evaluate

Records that are read from or written to files are pydantic models, so a bad field is caught
where it is read and named in the error. They are frozen: a stage never edits another stage's
record, it makes a new one.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepKind(str, Enum):
    """The two kinds of reference step of the authors' annotations (Image_level, Reasoning_level)."""

    perception = "perception"
    reasoning = "reasoning"


class ReferenceStep(_Record):
    """One step of a reference chain.

    `truth` is known exactly on the built-in benchmark (every reference step is true there; it
    is kept so that datasets with planted false steps can be represented) and unknown (None) on
    human-annotated data.
    """

    text: str = Field(min_length=1)
    kind: StepKind
    truth: bool | None = None


# --- The built-in benchmark's scene (the ground truth its checker reads) -----------------------

Shape = Literal["circle", "square", "triangle"]
Size = Literal["small", "large"]
Column = Literal["left", "middle", "right"]
Row = Literal["top", "center", "bottom"]


class SceneObject(_Record):
    shape: Shape
    color: str
    size: Size
    column: Column
    row: Row


class Difficulty(_Record):
    """How hard a built-in benchmark image is to see (benchmark v2, `BenchmarkSpec.visibility`).

    - `level`: the index of the visibility level the scene was drawn at (0 = clearest);
    - `contrast`: each object's colour is background + contrast x (colour - background);
    - `noise`: standard deviation of the Gaussian noise added to every pixel channel (0-255);
    - `noise_seed`: the seed of that noise, so that the image is a function of the record;
    - `blur`: radius of the Gaussian blur applied before the noise (pixels; 0: none).
    The scene's other difficulty factors are its object count and object sizes.
    """

    level: int = Field(ge=0)
    contrast: float = Field(1.0, gt=0, le=1)
    noise: float = Field(0.0, ge=0)
    noise_seed: int = Field(0, ge=0)
    blur: float = Field(0.0, ge=0)


class Scene(_Record):
    """A procedurally drawn image: objects on a 3x3 grid of cells over a background colour,
    drawn at a visibility level (`difficulty`; None on benchmark v1: clear images)."""

    objects: tuple[SceneObject, ...]
    background: str = "white"
    difficulty: Difficulty | None = None


# --- Examples -----------------------------------------------------------------------------------

class Example(_Record):
    """One visual question with its reference chain.

    - `image`: absolute path of the image file (loaders resolve relative paths).
    - `choices`: the options of a multiple-choice question, else None.
    - `answers`: accepted answers (the correct choice for multiple choice; every accepted
      open answer otherwise). Never empty.
    - `chain`: the reference chain, perception steps first then reasoning steps, the last one
      stating the answer ("So the answer is X.").
    - `scene`: the ground truth of a built-in benchmark example, from which the checker
      decides exactly whether a generated step is true; None for external datasets.
    """

    id: str = Field(min_length=1)
    image: Path
    question: str = Field(min_length=1)
    choices: tuple[str, ...] | None = None
    answers: tuple[str, ...] = Field(min_length=1)
    chain: tuple[ReferenceStep, ...] = ()
    split: str | None = None
    scene: Scene | None = None


# --- Generation ---------------------------------------------------------------------------------

class GeneratedStep(_Record):
    """One step of a generated chain: its sentence and its character span in the chain text.

    `correct` is the step's truth when it can be decided (exactly via the benchmark's checker,
    or by matching to the reference chain), else None.

    For a model that writes confidence statements (method.md section 1), `text` is the step
    with its statement removed (`start`/`end` span the step's own words in the chain text),
    `statement` the clause after its last comma, and `level` the level that clause maps back to
    (None: no statement, or one that maps to no level: a format failure, never filled in).

    `kind`: on the built-in benchmark, the type of claim the step makes (`claim_type`: "count",
    "attribute", "spatial", "arithmetic", "comparison", "final"), by which results are split;
    None for a sentence of no type and on external datasets.

    `reference`, `match_degree`: set when a step judge (`evaluation.judges`, `judging`) matched
    the step to a reference step: that step's index in `Example.chain`, and the matching degree
    m_t in [0, 1] (the pair's similarity when the step is judged right, 0 when it contradicts
    the step it matched; R_KA = 2 m_t - 1 in the rl stage). Both None otherwise (unmatched, exact
    truth, or no judge): there the degree is `correct` itself.
    """

    text: str
    start: int
    end: int
    correct: bool | None = None
    statement: str | None = None
    level: int | None = Field(None, ge=1, le=5)
    kind: str | None = None
    match_degree: float | None = Field(None, ge=0, le=1)
    reference: int | None = Field(None, ge=0)


class GeneratedChain(_Record):
    """A model's answer to one example: the raw text, its steps, and the final answer."""

    example_id: str
    text: str
    steps: tuple[GeneratedStep, ...]
    answer: str | None  # the X of "So the answer is X", None if the chain states no answer
    answer_correct: bool


# --- Internal confidence (method.md section 2) --------------------------------------------------

class StepSignals(_Record):
    """The four raw uncertainty signals of one step, from one teacher-forced forward pass.

    `token_start`/`token_end` index the step's tokens in the response (end exclusive).
    U_LNLP (perplexity) , U_MTE (mean entropy) and U_TokenSAR are uncertainties (high = unsure);
    U_CLIPScore is a similarity (high = grounded). Any signal may be None when not computed.
    """

    example_id: str
    step_index: int = Field(ge=0)
    text: str
    token_start: int = Field(ge=0)
    token_end: int = Field(ge=0)
    lnlp: float | None = None
    mte: float | None = None
    token_sar: float | None = None
    clip_score: float | None = None
    correct: bool | None = None


class StepConfidence(_Record):
    """A step's normalised per-signal confidences (in [0, 1], high = confident), the fused
    confidence and its level (1 = least confident .. 5 = most)."""

    example_id: str
    step_index: int = Field(ge=0)
    confidences: dict[str, float]
    fused: float = Field(ge=0, le=1)
    level: int = Field(ge=1, le=5)
    correct: bool | None = None
