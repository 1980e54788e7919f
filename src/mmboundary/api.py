"""Using a trained model from Python: load a run or a checkpoint, ask about an image, get the chain
as typed steps with the confidence the model states and the one its internal signals give.

    from mmboundary.api import load

    model = load("runs/default")                  # the run's newest trained model
    answer = model.ask("cat.png", "How many circles are there?", choices=["1", "2", "3"])
    for step in answer.steps:
        print(step.text, step.statement, step.expressed_level, step.internal_level)
    print(answer.answer)
    answer = model.ask("cat.png", "How many circles are there?", correct=True)   # self-correction

`load(path)` takes
- a run directory (it has `config.yaml`): the newest model `evaluate` judges
  (`artifacts.evaluated_models`: `rl/model` once the rl stage is complete, else `sft/model`, else
  the vanilla model `artifacts.resolve_vlm_path` names), or the one `stage=` names;
- a checkpoint folder (it has `config.json`): `<run>/<base|sft|rl>/model` is recognised as a
  model of that run; any other folder is a plain checkpoint.

Per step (`Step`):
- `expressed_level`: the level the step's statement maps back to (`statements.chain_format.
  parse_chains` with the run's statement mapper, `artifacts.make_statement_mapper`); None when the
  model writes no statements (the vanilla model) or the statement maps to no level;
- `internal_level`: the level of the step's fused internal signals on the loaded model, computed
  as the PPO stage computes it (`artifacts.scoring_context` + `confidence.scorer.internal_levels`: the
  run's saved normaliser, fusion and levels); None when there is no run whose estimate stage is
  complete (a plain checkpoint without `run=`), or when a signal could not be computed;
- `correct`: the step's truth when an `Example` with ground truth is given (`ask_example`; exact
  on the built-in benchmark, whose examples carry their scene), else None.

A plain checkpoint is assumed to write statements (its steps are parsed; a step without a comma
simply has none) unless `statements=False`, and has internal levels only with `run=` naming a run
whose normaliser and levels to use.

Images are a file path or a PIL image; a path goes through `data.images.load_image` (missing,
unreadable, corrupt or over-sized files are a `DataError` naming the file).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table
from rich.text import Text

from mmboundary.artifacts import model_device, pick_model, reading_parts
from mmboundary.config import GenerationConfig, JudgeConfig, RunConfig, load_config
from mmboundary.correction import (
    Correction,
    CorrectionConfig,
    CorrectionResult,
    CorrectionRun,
    ExtraCompute,
    InternalScorer,
    SelfCorrector,
    VLMBackend,
)
from mmboundary.data.images import MAX_IMAGE_PIXELS, load_image
from mmboundary.errors import DataError, RunError
from mmboundary.judging import judge_chains, make_step_judge
from mmboundary.models.factory import load_vlm
from mmboundary.records import Example
from mmboundary.runs import Run

__all__ = ["Answer", "LEVEL_STYLES", "LoadedModel", "Step", "answer_table", "level_style", "load"]

#: Stages whose `model/` folder holds a model of a run, and the name `evaluate` gives it.
_STAGE_MODELS = {"base": "vanilla", "sft": "sft", "rl": "rl"}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Step(_Record):
    """One step of an answer: its text without the statement, the statement (None: the sentence
    has no comma), the expressed and internal levels (1 = least confident .. 5; None: unknown),
    its truth when known, and whether self-correction replaced it."""

    index: int = Field(ge=0)
    text: str
    statement: str | None = None
    expressed_level: int | None = Field(None, ge=1, le=5)
    internal_level: int | None = Field(None, ge=1, le=5)
    correct: bool | None = None
    match_degree: float | None = Field(None, ge=0, le=1,
                                       description="The step judge's matching degree (with ground truth).")
    replaced: bool = False


class Answer(_Record):
    """A model's answer to one question: the raw chain text, its steps, the final answer (the X of
    "So the answer is X", normalised; None if the chain states none) and, with ground truth,
    whether it is right. `corrections` and `compute` are set when self-correction ran."""

    question: str
    choices: tuple[str, ...] | None = None
    model: str
    text: str
    steps: tuple[Step, ...]
    answer: str | None
    answer_correct: bool | None = None
    statements: bool = Field(description="Whether the model writes confidence statements.")
    internal_available: bool = Field(description="Whether internal levels could be computed.")
    corrections: tuple[Correction, ...] = ()
    compute: ExtraCompute | None = None


# --- loading ------------------------------------------------------------------------------------

def _open_run(root: Path):
    """A run directory, read only (no log file is opened, nothing is written)."""
    return Run(root, load_config(root / "config.yaml", relative_to_file=False))


@dataclasses.dataclass
class LoadedModel:
    """A loaded model with what it takes to type its chains (see the module docstring).

    `name`: "vanilla", "sft", "rl" for a model of a run, else the checkpoint folder's name;
    `context`: the run's `confidence.scorer.ScoringContext` (None: no internal levels); `mapper`: the
    statement mapper (None: the model writes no statements); `generation`: the run's generation
    settings (greedy, `max_new_tokens`, batch size); `correction`: the self-correction settings
    `ask(..., correct=True)` uses."""

    vlm: Any
    name: str
    path: str
    mapper: Any = None
    context: Any = None
    generation: Any = None
    correction: CorrectionConfig = dataclasses.field(default_factory=CorrectionConfig)
    run_root: Path | None = None

    def __post_init__(self):
        if self.generation is None:
            self.generation = GenerationConfig()

    @property
    def statements(self) -> bool:
        return self.mapper is not None

    @property
    def internal_available(self) -> bool:
        return self.context is not None

    # -- self-correction -----------------------------------------------------------------------

    def corrector(self, config: CorrectionConfig | None = None) -> SelfCorrector:
        """A `SelfCorrector` of this model (`config` default: `self.correction`; budget 0 = plain
        greedy decoding, which needs no internal context)."""
        scorer = InternalScorer(self.vlm, self.context) if self.context is not None else None
        return SelfCorrector(VLMBackend(self.vlm, batch_size=self.generation.batch_size), scorer, self.mapper,
                             config or self.correction, max_new_tokens=self.generation.max_new_tokens)

    def correct_examples(self, examples: Sequence[Example], config: CorrectionConfig | None = None,
                         description: str = "self-correction") -> CorrectionRun:
        """Self-correction over `examples` (a split): the `CorrectionRun` whose `chains` are what
        `evaluate` scores (expressed levels in their steps), with `internal_levels`,
        `expressed_levels` and `compute_summary()`. `config.budget = 0` gives the plain greedy
        chains of `evaluate`."""
        return self.corrector(config).run(examples, description=description)

    # -- asking --------------------------------------------------------------------------------

    def ask(self, image, question: str, choices: Sequence[str] | None = None, *, correct: bool = False,
            correction: CorrectionConfig | None = None) -> Answer:
        """Answer `question` about `image` (a file path or a PIL image) with the greedy chain, or
        with self-correction when `correct` (settings: `correction`, else `self.correction`;
        giving `correction` implies `correct`). No ground truth: steps' `correct` and
        `answer_correct` are None."""
        question, choices = _check_question(question, choices)
        with tempfile.TemporaryDirectory(prefix="mmboundary-ask-") as tmp:
            path = _image_file(image, Path(tmp))
            example = Example.model_construct(id="ask", image=path, question=question, choices=choices,
                                              answers=(), chain=(), split=None, scene=None)
            return self._answer(example, correct, correction, ground_truth=False)

    def ask_example(self, example: Example, *, correct: bool = False,
                    correction: CorrectionConfig | None = None) -> Answer:
        """Answer an `Example` and judge the chain against its ground truth: each step's truth by
        the run's step judge (`judging`: exact on the built-in benchmark, matched to the reference
        chain elsewhere) and the answer's."""
        if not isinstance(example, Example):
            raise TypeError(f"ask_example: expected an Example, got {type(example).__name__}")
        load_image(example.image)  # a DataError naming the file when it cannot be used
        return self._answer(example, correct, correction, ground_truth=True)

    def _answer(self, example: Example, correct: bool, correction: CorrectionConfig | None,
                ground_truth: bool) -> Answer:
        config = correction if correction is not None else (self.correction if correct else None)
        run = self.correct_examples([example], config or CorrectionConfig(budget=0), description="ask")
        result = run.results[0]
        if ground_truth:
            judge = getattr(self.context, "judge", None) or make_step_judge(JudgeConfig())
            result = result.model_copy(update={"chain": judge_chains([result.chain], [example], judge)[0]})
        return _to_answer(example, result, self, ground_truth, with_correction=config is not None)


def _to_answer(example: Example, result: CorrectionResult, model: LoadedModel, ground_truth: bool,
               with_correction: bool) -> Answer:
    chain = result.chain
    replaced = {c.step_index for c in result.corrections if c.replaced}
    steps = tuple(Step(index=i, text=s.text, statement=s.statement, expressed_level=result.expressed_levels[i],
                       internal_level=result.internal_levels[i], correct=s.correct,
                       match_degree=s.match_degree if ground_truth else None, replaced=i in replaced)
                  for i, s in enumerate(chain.steps))
    return Answer(question=example.question, choices=example.choices, model=model.name, text=chain.text,
                  steps=steps, answer=chain.answer, answer_correct=chain.answer_correct if ground_truth else None,
                  statements=model.statements, internal_available=model.internal_available,
                  corrections=result.corrections, compute=result.compute if with_correction else None)


def _check_question(question: str, choices: Sequence[str] | None) -> tuple[str, tuple[str, ...] | None]:
    if not isinstance(question, str) or not question.strip():
        raise DataError("the question is empty", field="question")
    if choices is None:
        return question.strip(), None
    if isinstance(choices, str):
        raise DataError("choices must be a list of options, not one string", field="choices")
    out = tuple(choices)
    bad = [c for c in out if not isinstance(c, str) or not c.strip()]
    if bad:
        raise DataError(f"every choice must be a non-empty string, got {bad[0]!r}", field="choices")
    return question.strip(), (tuple(c.strip() for c in out) or None)


def _image_file(image, tmp: Path) -> Path:
    """The path of a usable image file: a checked path, or a PIL image written to `tmp`."""
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        load_image(path)  # DataError naming the file: not found, unreadable, not an image, too large
        return path.resolve()
    if isinstance(image, Image.Image):
        width, height = image.size
        if width < 1 or height < 1:
            raise DataError(f"empty image ({width}x{height})", field="image")
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"image too large: {width}x{height} = {width * height:,} pixels, over the limit "
                            f"of {MAX_IMAGE_PIXELS:,}", field="image")
        path = tmp / "image.png"
        rgb = image
        if image.mode not in ("RGB", "L"):
            rgba = image.convert("RGBA")  # transparency onto white, as data.images.load_image does
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        rgb.save(path, format="PNG")
        return path
    raise TypeError(f"image must be a file path or a PIL image, got {type(image).__name__}")


def load(path: str | Path, *, stage: str | None = None, run: str | Path | None = None,
         statements: bool | None = None, device: str | None = None,
         correction: CorrectionConfig | None = None) -> LoadedModel:
    """Load a run's model or a checkpoint (see the module docstring).

    - `stage`: for a run directory, which model: "vanilla", "sft" or "rl" (default: the newest);
    - `run`: for a plain checkpoint, a run directory whose statement mapping, normaliser and
      levels to use (its estimate stage complete);
    - `statements`: whether the model writes confidence statements (default: sft / rl models of
      a run and plain checkpoints do, the vanilla model does not);
    - `device`: "cpu", "cuda", ... (default: the run's `device`, else a GPU when there is one);
    - `correction`: the self-correction settings of `ask(..., correct=True)`.
    Raises `RunError` for a path that is neither a run directory nor a checkpoint, or a stage the
    run has not completed."""
    root = Path(path).expanduser()
    if not root.exists():
        raise RunError(f"{root}: no such run directory or checkpoint")
    the_run = None
    if (root / "config.yaml").is_file():
        the_run = _open_run(root)
        name, ckpt, writes = pick_model(the_run, stage)
    elif (root / "config.json").is_file():
        if stage is not None:
            raise RunError(f"{root}: a checkpoint folder, not a run directory: `stage` names a model of a run")
        ckpt = str(root)
        parent = root.parent
        if root.name == "model" and parent.name in _STAGE_MODELS and (parent.parent / "config.yaml").is_file():
            the_run = _open_run(parent.parent)
            name, writes = _STAGE_MODELS[parent.name], parent.name != "base"
        else:
            name, writes = root.name, True
            if run is not None:
                run_root = Path(run).expanduser()
                if not (run_root / "config.yaml").is_file():
                    raise RunError(f"{run_root}: not a run directory (no config.yaml)")
                the_run = _open_run(run_root)
    else:
        raise RunError(f"{root}: neither a run directory (config.yaml) nor a model checkpoint (config.json)")
    if statements is not None:
        writes = statements
    cfg = the_run.config if the_run is not None else RunConfig()
    context, mapper = reading_parts(the_run, writes)
    vlm = load_vlm(ckpt, cfg.model)
    vlm.model.to(model_device(device or cfg.device))
    return LoadedModel(vlm=vlm, name=name, path=ckpt, mapper=mapper, context=context, generation=cfg.generation,
                       correction=correction or CorrectionConfig(),
                       run_root=the_run.root if the_run is not None else None)


# --- display ------------------------------------------------------------------------------------

#: The colour of each confidence level in `mmboundary ask` (1 = least confident).
LEVEL_STYLES = {1: "bold red", 2: "dark_orange", 3: "yellow", 4: "chartreuse3", 5: "bold green"}


def level_style(level: int | None) -> str:
    """The rich style of a level (dim when unknown)."""
    return LEVEL_STYLES.get(level, "dim") if level is not None else "dim"


def answer_table(answer: Answer):
    """A rich table of an answer's steps: each step coloured by its confidence (the expressed
    level when the model states one, else the internal level), the statement, both levels, and
    the step's truth when known."""
    table = Table(title=Text(f"{answer.model}: {answer.question}"), show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("statement")
    table.add_column("expressed", justify="center")
    table.add_column("internal", justify="center")
    known = any(s.correct is not None for s in answer.steps)
    if known:
        table.add_column("true", justify="center")
    for s in answer.steps:
        shown = s.expressed_level if s.expressed_level is not None else s.internal_level
        row = [str(s.index + 1) + ("*" if s.replaced else ""), Text(s.text, style=level_style(shown)),
               Text(s.statement or "-", style="italic" if s.statement else "dim"),
               Text(str(s.expressed_level) if s.expressed_level is not None else "-",
                    style=level_style(s.expressed_level)),
               Text(str(s.internal_level) if s.internal_level is not None else "-",
                    style=level_style(s.internal_level))]
        if known:
            row.append("-" if s.correct is None else ("yes" if s.correct else "no"))
        table.add_row(*row)
    return table
