"""Reading and writing a run folder's contents, as typed records.

The stages write these files (docs/architecture.md, "Stages"); everything that reads a finished
run (later stages, `compare`, the API, the inspector, the baselines, `benchmarks/`) reads them
through the functions here, so the layout of a run folder is known in one place:

    data/<split>.jsonl                  examples (`load_split`, `split_names`)
    base/model/                         the vanilla model (`resolve_vlm_path`, `base_model_dir`)
    estimate/chains_<split>.jsonl       the vanilla model's chains (`read_chains`)
    estimate/steps_<split>.jsonl        each step's internal level (`read_step_levels`)
    estimate/normalizer.json, levels.json  the fitted internal-confidence model (`scoring_context`)
    sft/model/, rl/model/               the trained models (`evaluated_models`)
    evaluate/chains_<model>_<split>.jsonl, evaluate/metrics.json  (`read_metrics`)
    evaluate/scores_<row>_<split>.jsonl  per-question scores of a model or reference row (`read_scores`)

and the run's statement mapping (`make_statement_mapper`), the one object that turns a
statement back into a level for every reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from mmboundary.confidence.fusion import Levels, Normalizer
from mmboundary.confidence.scorer import ScoringContext
from mmboundary.confidence.similarity import SentenceSimilarity
from mmboundary.config import RunConfig
from mmboundary.data.jsonl import read_examples
from mmboundary.errors import RunError
from mmboundary.evaluation.bootstrap import Interval, QuestionScores
from mmboundary.evaluation.expressed import ConfidenceReport
from mmboundary.evaluation.matching import match_chains, mean_f1
from mmboundary.evaluation.references import ConstantReference, KindPriorReference
from mmboundary.io import atomic_write_text
from mmboundary.judging import make_step_judge, reusable_similarity
from mmboundary.models.clip import load_clip
from mmboundary.records import Example, GeneratedChain
from mmboundary.runs import Run
from mmboundary.statements.mapping import make_mapper

__all__ = [
    "EvaluatedModel",
    "base_model_dir",
    "chains_f1",
    "evaluated_models",
    "load_split",
    "make_statement_mapper",
    "model_device",
    "pick_model",
    "reading_parts",
    "read_chains",
    "ModelMetrics",
    "SplitMetrics",
    "SplitReferences",
    "read_metrics",
    "read_scores",
    "read_step_levels",
    "resolve_vlm_path",
    "reuse_estimate_chains",
    "scoring_context",
    "split_names",
    "write_jsonl",
]

SPLITS = ("train", "test", "ood")


# --- data ---------------------------------------------------------------------------------------

def split_names(run: Run) -> list[str]:
    """The splits the data stage wrote, in the order train, test, ood."""
    return [s for s in SPLITS if (run.stage_dir("data") / f"{s}.jsonl").exists()]


def load_split(run: Run, split: str, limit: int | None = None) -> list[Example]:
    """The examples of one split (the first `limit` when set)."""
    path = run.require("data") / f"{split}.jsonl"
    if not path.exists():
        raise RunError(f"{run.root}: the data stage wrote no {split!r} split")
    examples = read_examples(path, check_images=False)  # checked when the data stage ran
    return examples[:limit] if limit else examples


# --- models -------------------------------------------------------------------------------------

def base_model_dir(run: Run) -> Path | None:
    """The base stage's vanilla model folder, once that stage has completed."""
    d = run.stage_dir("base") / "model"
    return d if run.is_complete("base") and (d / "config.json").exists() else None


def resolve_vlm_path(run: Run) -> str:
    """The vanilla model of a run: the base stage's, else the configured checkpoint."""
    d = base_model_dir(run)
    if d is not None:
        return str(d)
    if run.config.model.path is not None:
        return run.config.model.path
    raise RunError(f"{run.root}: no vanilla model: run the base stage or set model.path")


class EvaluatedModel(NamedTuple):
    """A model `evaluate` judges: its name, its checkpoint and whether it writes statements."""

    name: str
    path: str
    expressed: bool


def evaluated_models(run: Run) -> list[EvaluatedModel]:
    """Every model `evaluate` judges: the vanilla model, and the warm-up (`sft`) and calibrated
    (`rl`) models once their stages have completed."""
    models = [EvaluatedModel(name="vanilla", path=resolve_vlm_path(run), expressed=False)]
    for stage in ("sft", "rl"):
        if run.is_complete(stage):
            models.append(EvaluatedModel(name=stage, path=str(run.stage_dir(stage) / "model"), expressed=True))
    return models


def pick_model(run: Run, name: str | None = None) -> EvaluatedModel:
    """The model of `run` that `name` names ("vanilla", "sft", "rl"), or its newest (None); a
    `RunError` names the models the run has when it has no such one."""
    models = evaluated_models(run)
    names = [m.name for m in models]
    if name is None:
        return models[-1]
    if name not in names:
        raise RunError(f"{run.root}: no {name!r} model (this run has: {', '.join(names)})")
    return models[names.index(name)]


def model_device(name: str | None) -> torch.device:
    """Where a finished run's model is put to answer questions: the named device; "auto" (or
    None) a GPU when there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ReadingParts(NamedTuple):
    """What reads a run's model's outputs: the scoring context of its internal levels (None when
    the estimate stage is incomplete) and the statement mapper (None: no statements to read)."""

    context: ScoringContext | None
    mapper: object | None


def reading_parts(run: Run | None, writes_statements: bool) -> ReadingParts:
    """The run's scoring context (when its estimate stage is complete) and, for a model that
    writes statements, the statement mapper (the context's, else the config's; the default
    config's without a run)."""
    context = scoring_context(run) if run is not None and run.is_complete("estimate") else None
    mapper = None
    if writes_statements:
        mapper = context.mapper if context is not None else \
            make_statement_mapper(run.config if run is not None else RunConfig())
    return ReadingParts(context, mapper)


def make_statement_mapper(cfg: RunConfig, encoder=None):
    """The forward/backward statement mapping the config names (`statements`); `encoder`: an
    already loaded MiniLM `SentenceSimilarity` to share (None: the mapper loads its own)."""
    options = {}
    if encoder is not None and cfg.statements.kind == "statement":
        options["encoder"] = encoder
    if cfg.statements.min_similarity is not None:
        options["min_similarity"] = cfg.statements.min_similarity
    return make_mapper(cfg.statements.kind, **options)


def scoring_context(run: Run) -> ScoringContext:
    """What scores a run's internal confidence on any model (`confidence.scorer`): its statement
    mapper, `estimate/normalizer.json` and `estimate/levels.json`, its fusion config, CLIP
    (`base/clip` or `clip.path`) and TokenSAR's sentence similarity (each loaded only when a
    signal in use needs it)."""
    cfg = run.config
    est = run.require("estimate")
    ecfg = cfg.estimate
    clip = similarity = None
    if "clip_score" in ecfg.signals:
        clip = load_clip(cfg.clip.path or run.require("base") / "clip")
    if "token_sar" in ecfg.signals:
        similarity = SentenceSimilarity(ecfg.similarity_model, kind=ecfg.similarity_kind)
    return ScoringContext(mapper=make_statement_mapper(cfg), normalizer=Normalizer.load(est / "normalizer.json"),
                          levels=Levels.load(est / "levels.json"), fusion=ecfg.fusion, signals=tuple(ecfg.signals),
                          clip=clip, similarity=similarity, estimate_batch_size=ecfg.batch_size,
                          granularity=cfg.statements.granularity,
                          judge=make_step_judge(cfg.judge, reusable_similarity(cfg.judge, similarity)))


# --- chains and levels --------------------------------------------------------------------------

def write_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Records (pydantic models) as JSONL, atomically."""
    atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in records))


def read_chains(path: Path) -> list[GeneratedChain]:
    """The `GeneratedChain` records of a chains JSONL file (estimate or evaluate)."""
    return [GeneratedChain.model_validate_json(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def read_step_levels(path: Path) -> dict[tuple[str, int], int]:
    """(example_id, step_index) -> internal level, from an estimate `steps_<split>.jsonl`."""
    out = {}
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            try:
                out[(rec["example_id"], int(rec["step_index"]))] = int(rec["level"])
            except (KeyError, TypeError, ValueError) as e:
                raise RunError(f"{path}, line {n}: no valid example_id / step_index / level ({e})") from None
    return out


def reuse_estimate_chains(run: Run, split: str) -> Path | None:
    """The estimate stage's vanilla chains of `split` when they are what `evaluate` would
    generate (same examples, greedy either way): no second generation, and the internal levels
    of their steps are known."""
    if not run.is_complete("estimate"):
        return None
    cfg = run.config
    path = run.stage_dir("estimate") / f"chains_{split}.jsonl"
    limit = cfg.estimate.train_examples if split == "train" else cfg.estimate.limit
    return path if path.exists() and limit == cfg.evaluate.limit else None


def chains_f1(chains, examples: list[Example], similarity, threshold: float | None) -> float | None:
    """Mean per-example F1 of the one-to-one step matching against the reference chains
    (method.md section 6), over examples that have a reference chain (None if none has).
    Step texts are matched without their statements."""
    by_id = {ex.id: ex for ex in examples}
    pairs = [(c, by_id[c.example_id]) for c in chains if by_id[c.example_id].chain]
    if not pairs:
        return None
    matches = match_chains([[s.text for s in c.steps] for c, _ in pairs],
                           [[r.text for r in ex.chain] for _, ex in pairs], similarity, threshold)
    return mean_f1(matches)


# --- metrics ------------------------------------------------------------------------------------

class ModelMetrics(BaseModel):
    """One model's row of `evaluate/metrics.json` on one split: the accuracy summary
    (`evaluation.metrics.accuracy_summary`), the confidence report of its expressed (trained
    models) or internal (the vanilla model, when the estimate stage's levels apply) confidence,
    and the F1 of its step matching; `intervals`: metric -> estimate and 95 % bootstrap interval
    of that confidence (`evaluation.bootstrap.metric_intervals`; absent in older files)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    examples: int
    answer_accuracy: float | None
    answered: float | None
    steps: int
    steps_per_chain: float | None
    step_accuracy: float | None
    steps_with_truth: int
    chains_all_steps_correct: float | None
    expressed: ConfidenceReport | None = None
    internal: ConfidenceReport | None = None
    f1: float | None = None
    intervals: dict[str, Interval] | None = None


class SplitReferences(BaseModel):
    """The reference rows of one split (`evaluation.references`), on the vanilla model's chains:
    `constant` and `kind_prior` (None: not computed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constant: ConstantReference | None = None
    kind_prior: KindPriorReference | None = None


class SplitMetrics(BaseModel):
    """`evaluate/metrics.json` on one split: each model's row, and the estimate stage's signal
    table (`signals.json`) when it was there, and the reference rows (`references`) when the
    estimate stage's train chains were there."""

    model_config = ConfigDict(frozen=True)

    models: dict[str, ModelMetrics]
    vanilla_internal_signals: dict | None = None
    references: SplitReferences | None = None


def read_metrics(run: Run) -> dict[str, SplitMetrics]:
    """`evaluate/metrics.json` as typed records: split -> `SplitMetrics`. A file that does not
    hold them is a `RunError` naming it and the field."""
    path = run.require("evaluate") / "metrics.json"
    out = {}
    for split, rows in json.loads(path.read_text("utf-8")).items():
        rows = dict(rows)
        signals = rows.pop("vanilla_internal_signals", None)
        references = rows.pop("references", None)
        try:
            out[split] = SplitMetrics(models=rows, vanilla_internal_signals=signals, references=references)
        except ValidationError as e:
            where = ".".join(str(x) for x in e.errors()[0]["loc"])
            raise RunError(f"{path}: {split}.{where}: {e.errors()[0]['msg']}") from None
    return out


def read_scores(run: Run, row: str, split: str) -> list[QuestionScores]:
    """`evaluate/scores_<row>_<split>.jsonl`: the per-question scores of a model ("vanilla",
    "sft", "rl") or a reference row ("constant", "kind_prior") on a split, which
    `evaluation.bootstrap` resamples and pairs. A `RunError` names a missing file or bad line."""
    path = run.require("evaluate") / f"scores_{row}_{split}.jsonl"
    if not path.exists():
        raise RunError(f"{path}: no per-question scores of {row!r} on {split!r}")
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(QuestionScores.model_validate_json(line))
            except ValidationError as e:
                raise RunError(f"{path}, line {n}: {e.errors()[0]['msg']}") from None
    return out
