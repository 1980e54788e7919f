"""`mmboundary compare`: the paper's comparison table (method.md sections 6-7) on one data set,
over seeds, and a report rebuilt from saved results alone.

A comparison is described by a `CompareSpec` (YAML, e.g. `configs/compare/default.yaml`): the base
run config and overrides, which pipeline rows (methods and ablations, `mmboundary.ablations`) and
which baselines (`mmboundary.baselines`) to include, the seeds and the splits.

`run_compare(spec, root_dir)`, for each seed:

1. creates (or reopens) the **full method's run** `runs/seed<s>/full` (the base config, `seed=<s>`,
   the `rl` stage added: `ablations.full_overrides`) and runs its missing stages;
2. for each ablation with its own run, **forks** the full run into `runs/seed<s>/<row>`
   (`runs.fork_run`: every finished stage the overlay leaves valid is hard-linked, so data and base
   are trained once per seed, the SFT model once for all RL ablations) and runs the rest; an
   existing fork is reopened and resumed (its config must be the row's);
3. reads each pipeline row from its run's `evaluate` stage (`evaluate/metrics.json` and the judged
   chains `evaluate/chains_<model>_<split>.jsonl`);
4. runs the baselines on the seed's models (the full run's vanilla model, or its SFT model for
   Multisample), saving each raw `BaselineResult`; the `internal` readouts are computed from the
   estimate stage's saved chains and signals when they cover the split (no model is run);
5. runs the self-correction rows (`CorrectionSpec`: `mmboundary.correction` on the seed's vanilla,
   SFT or RL model), with the same model's greedy numbers from the evaluate stage beside them;
6. saves one `RowResult` JSON per row and seed (`results/<row>/seed<s>.json`).

A row that fails is saved as `status: failed` with the error (traceback in `compare.log`) and
the comparison goes on; it is retried by the next `run_compare`.

Several `run_compare` processes may share one root (e.g. one per GPU, `mmboundary compare -o
<root>` started twice): each row and seed is run by the process that holds its lock
(`locks/seed<s>-<row>.lock`); the others leave it to that process and go on with the next row, or
reuse its saved result when it has finished. The seed's full run is made once: a second process
waits for it (`locks/seed<s>-full-run.lock`). The report is written by each process at its end;
the last one to finish writes the complete one. Rows the config cannot express
(e.g. RL rows without the rl stage, `ablations.row_availability`) are saved as `unavailable` with the reason, and
baselines that do not apply to the model (DPV/DPS on the tiny model) as `not_applicable`.

`build_report(root_dir)` is pure: it reads only the saved JSON (`spec.json`, `results/`,
`last_run.json`) and computes per split and row the mean and sample standard deviation over seeds
of ECE, MECE, Acc, F1, AUROC and Brier, the paper's numbers beside the rows that match
(`PAPER_TABLE`), and findings (which row has the lowest MECE; how each ablation compares with the
full method). `write_report(report, out_dir)` writes `report.md`, `report.json`, a reliability
diagram per row and split (step level, seeds pooled; `evaluation.plots.reliability_diagram`) and
a level histogram per split.

Layout of `root_dir`:

    spec.json                    the spec of the last run_compare (rows, seeds, splits)
    last_run.json                when it ran and how long it took
    compare.log                  progress and the tracebacks of failed rows
    runs/seed<s>/full/           the full method's run (a `runs.Run`)
    runs/seed<s>/<row>/          the run of each ablation with its own run (a fork)
    baselines/<row>/seed<s>_<split>.json   raw BaselineResult of each baseline
    locks/seed<s>-<row>.lock     who runs (row, seed) now (flock; released when its process ends)
    results/<row>/seed<s>.json   RowResult: per split the ConfidenceReport and the (confidence,
                                 correctness) pairs behind it
    report/                      report.md, report.json, reliability_<row>_<split>.png, levels_<split>.png
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmboundary.ablations import ROWS, Row, resolve_row, row_availability, row_config, row_model
from mmboundary.confidence.fusion import level_probability
from mmboundary.errors import ConfigError, RunError
from mmboundary.evaluation.expressed import ConfidenceReport
from mmboundary.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from mmboundary.locks import Busy, hold

__all__ = [
    "COLUMNS",
    "PAPER_DATASETS",
    "PAPER_TABLE",
    "RESULT_FORMAT",
    "BaselineSpec",
    "CompareSpec",
    "Report",
    "ReportRow",
    "RowResult",
    "SplitResult",
    "Stat",
    "build_report",
    "compare_main",
    "load_result",
    "load_spec",
    "pipeline_row_result",
    "render_markdown",
    "result_path",
    "run_compare",
    "save_result",
    "write_report",
]

log = logging.getLogger("mmboundary.compare")

#: Format tag of a saved `RowResult`.
RESULT_FORMAT = "mmboundary.compare.row/1"
#: The report's columns: (ConfidenceReport field, header, better direction).
COLUMNS: tuple[tuple[str, str, Literal["lower", "higher"]], ...] = (
    ("ece", "ECE", "lower"), ("mece", "MECE", "lower"), ("accuracy", "Acc", "higher"),
    ("f1", "F1", "higher"), ("auroc", "AUROC", "higher"), ("brier", "Brier", "lower"),
)
#: The paper's results (LLaVA-NeXT-7B; method.md section 6): row -> data set -> ECE, MECE, Acc, F1.
PAPER_TABLE: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "SaySelf": {"A-OKVQA": (.345, .384, .734, .603), "ScienceQA": (.386, .462, .633, .483),
                "CulturalVQA": (.375, .437, .417, .571)},
    "MMBoundary w/o RL (SFT only)": {"A-OKVQA": (.392, .427, .768, .581), "ScienceQA": (.419, .481, .663, .495),
                                     "CulturalVQA": (.408, .456, .419, .595)},
    "MMBoundary": {"A-OKVQA": (.316, .304, .835, .661), "ScienceQA": (.354, .392, .703, .565),
                   "CulturalVQA": (.337, .361, .448, .665)},
}
#: The paper's data sets beside each of our splits: in-domain (test) and out-of-distribution (ood).
PAPER_DATASETS: dict[str, tuple[str, ...]] = {"test": ("A-OKVQA", "ScienceQA"), "ood": ("CulturalVQA",)}
_PAPER_COLUMNS = ("ece", "mece", "accuracy", "f1")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SIGNAL_LABELS = {"lnlp": "U_LNLP", "mte": "U_MTE", "token_sar": "U_TokenSAR", "clip_score": "U_CLIPScore"}


# --- the spec ------------------------------------------------------------------------------------

class BaselineSpec(BaseModel):
    """One baseline row: a method of `mmboundary.baselines`, its config (a mapping checked by
    `baselines.make_config`), and the seed's model it runs on (None: the SFT model for
    `multisample`, whose statements it aggregates, the vanilla model otherwise).

    Unless the config says otherwise, `internal`, `sc` and `multisample` generate under the run's
    `generation` config (the evaluate stage's chains), and `sc` / `multisample` sample with the
    comparison seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["internal", "sc", "multisample", "dpv", "dps"]
    name: str | None = Field(None, description="Row name (default: from the method and its config).")
    label: str | None = Field(None, description="Row label in the report (default: from the method).")
    model: Literal["vanilla", "sft"] | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> "BaselineSpec":
        from mmboundary.baselines import make_config

        make_config(self.method, self.config)  # ConfigError (a ValueError for pydantic) naming the key
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"baseline name {self.name!r}: lower-case letters, digits, '_', '-', '.' only")
        return self

    @property
    def model_name(self) -> str:
        return self.model or ("sft" if self.method == "multisample" else "vanilla")

    @property
    def row_name(self) -> str:
        if self.name:
            return self.name
        base = self.method
        if self.method == "internal":
            from mmboundary.baselines import make_config

            c = make_config("internal", self.config)
            base = "internal-fused-continuous" if c.source == "fused" and c.readout == "continuous" \
                else f"internal-{c.variant}"
        default_model = "sft" if self.method == "multisample" else "vanilla"
        return base if self.model_name == default_model else f"{base}-{self.model_name}"

    @property
    def row_label(self) -> str:
        if self.label:
            return self.label
        if self.method == "internal":
            from mmboundary.baselines import make_config

            c = make_config("internal", self.config)
            text = ("Internal: fused levels (no training)" if c.readout == "level" else
                    "Internal: fused, continuous" if c.source == "fused" else
                    f"Internal: {_SIGNAL_LABELS[c.source]} alone")
        else:
            text = {"sc": "SC (self-consistency)", "multisample": "Multisample", "dpv": "DPV",
                    "dps": "DPS"}[self.method]
        return f"{text}, {self.model_name} model" if self.method in ("sc", "multisample", "dpv", "dps") else text

    def resolved_config(self, run_config, seed: int):
        """The method's checked config for a run (`run_config`: its RunConfig) and seed."""
        from mmboundary.baselines import make_config

        data = dict(self.config)
        if self.method in ("internal", "sc", "multisample") and "generation" not in data:
            data["generation"] = run_config.generation.model_dump(mode="json")
        if self.method in ("sc", "multisample") and "seed" not in data:
            data["seed"] = seed
        return make_config(self.method, data)


def _default_baselines() -> list[BaselineSpec]:
    return [BaselineSpec(method="internal", config={"source": s}) for s in ("lnlp", "mte", "token_sar", "clip_score")] + [
        BaselineSpec(method="internal", config={"source": "fused", "readout": "continuous"}),
        BaselineSpec(method="sc"),
        BaselineSpec(method="multisample"),
    ]


class CorrectionSpec(BaseModel):
    """One self-correction row (`mmboundary.correction`, this project's design): the seed's
    `model` ("vanilla", "sft" or "rl") answers every question of the split with
    confidence-guided self-correction (`config`: `CorrectionConfig` fields; default its
    defaults, sampling seed = the comparison seed). The row's columns are those of the
    corrected chains (internal levels for the vanilla model, expressed levels otherwise, as the
    model's own row); `extra` holds the same model's numbers without it (its greedy chains, from
    the evaluate stage), the accuracy change and the extra compute (`CorrectionRun.compute_summary`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["vanilla", "sft", "rl"] = "vanilla"
    name: str | None = Field(None, description="Row name (default: self-correct-<model>).")
    label: str | None = Field(None, description="Row label in the report (default: from the model).")
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> "CorrectionSpec":
        from mmboundary.correction import CorrectionConfig

        try:
            CorrectionConfig.model_validate(self.config)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ValueError(f"self-correction config: {problems}") from None
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"self-correction row name {self.name!r}: lower-case letters, digits, '_', '-', '.' only")
        return self

    @property
    def row_name(self) -> str:
        return self.name or f"self-correct-{self.model}"

    @property
    def row_label(self) -> str:
        return self.label or {"vanilla": "Self-correction, vanilla model (internal levels)",
                              "sft": "Self-correction, SFT-only model", "rl": "Self-correction, full method"}[self.model]

    def resolved_config(self, seed: int):
        """The checked `CorrectionConfig` for a seed (its sampling seed is the comparison seed
        unless `config` sets one)."""
        from mmboundary.correction import CorrectionConfig

        return CorrectionConfig.model_validate({"seed": seed, **self.config})


def _default_corrections() -> list[CorrectionSpec]:
    return [CorrectionSpec(model="vanilla"), CorrectionSpec(model="rl")]


class CompareSpec(BaseModel):
    """What a comparison runs. The defaults are the built-in default's comparison
    (`configs/compare/default.yaml`): every pipeline row, the baselines that apply to the tiny
    model, 3 seeds, test and OOD.

    - `config` / `overrides`: the base run config (None: the built-in default) and `key=value`
      overrides applied to it; every row is an overlay on it (`mmboundary.ablations`). A relative
      `config` path is read from the working directory, else next to the spec file.
    - `with_rl`: add the `rl` stage to the full method (the paper's method). False: the full
      method stops at SFT and the rows that need RL are reported unavailable.
    - `methods`, `ablations`: pipeline rows (names or aliases of `ablations.ROWS`).
    - `baselines`: `BaselineSpec`s.
    - `corrections`: `CorrectionSpec`s, self-correction rows (default: the vanilla model and the
      full method's model; a row on "rl" is unavailable without the rl stage).
    - `seeds`: run seeds (`seed=<s>`: the training seeds; the built-in benchmark's data come from
      `data.benchmark.seed` and stay the same).
    - `splits`: the evaluated splits reported.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    config: Path | None = None
    overrides: list[str] = Field(default_factory=list)
    with_rl: bool = True
    methods: list[str] = Field(default_factory=lambda: ["vanilla", "sayself", "drl", "expected", "sft_only",
                                                        "full"])
    ablations: list[str] = Field(default_factory=lambda: [
        "wo_lnlp", "wo_mte", "wo_token_sar", "wo_clip_score", "max_pooling", "wo_mapping",
        "wo_r_ka", "wo_r_ec", "wo_r_cs"])
    baselines: list[BaselineSpec] = Field(default_factory=_default_baselines)
    corrections: list[CorrectionSpec] = Field(default_factory=_default_corrections)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    splits: list[Literal["test", "ood"]] = Field(default_factory=lambda: ["test", "ood"], min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r}: lower-case letters, digits, '_', '-', '.' only")
        return v

    @field_validator("methods", "ablations")
    @classmethod
    def _rows(cls, v: list[str], info) -> list[str]:
        out = []
        for name in v:
            row = resolve_row(name)  # ConfigError for an unknown name
            want = "ablation" if info.field_name == "ablations" else ("method", "reference")
            if (row.kind == "ablation") != (want == "ablation"):
                raise ValueError(f"{name!r} is {'an ablation' if row.kind == 'ablation' else 'a method'}: "
                                 f"list it under {'ablations' if row.kind == 'ablation' else 'methods'}")
            if row.name in out:
                raise ValueError(f"row {name!r} is listed twice")
            out.append(row.name)
        return out

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct and >= 0, got {v}")
        return v

    @field_validator("splits")
    @classmethod
    def _splits(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a split is listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _unique_rows(self) -> "CompareSpec":
        names = [b.row_name for b in self.baselines] + [c.row_name for c in self.corrections]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(ROWS)))
        if clash:
            raise ValueError(f"baseline row name(s) {clash} clash with another row; give them a `name`")
        return self

    def rows(self) -> list[tuple[str, Row | BaselineSpec | CorrectionSpec]]:
        """The rows in report order: the vanilla reference, the baselines, the methods, the
        ablations, the full method, the self-correction rows last. Each as ("pipeline", Row),
        ("baseline", BaselineSpec) or ("correction", CorrectionSpec)."""
        chosen = set(self.methods) | set(self.ablations)
        pipeline = [ROWS[n] for n in ROWS if n in chosen]
        head = [("pipeline", r) for r in pipeline if r.kind == "reference"]
        rest = [("pipeline", r) for r in pipeline if r.kind != "reference"]
        return head + [("baseline", b) for b in self.baselines] + rest + [("correction", c) for c in self.corrections]

    def row_names(self) -> list[str]:
        return [r.name if kind == "pipeline" else r.row_name for kind, r in self.rows()]


def load_spec(path: str | Path) -> CompareSpec:
    """Read a comparison spec (YAML). A bad file or key is a `ConfigError` naming it; a relative
    `config` path that does not exist from the working directory is taken next to the spec."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"comparison spec not found: {p}")
    try:
        data = yaml.safe_load(p.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{p}: not a valid YAML comparison spec: {str(e)[:300]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    try:
        spec = CompareSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"key '{'.'.join(str(x) for x in err['loc']) or '<root>'}': {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"{p}: invalid comparison spec: {problems}") from None
    if spec.config is not None and not spec.config.is_absolute() and not spec.config.exists() \
            and (p.parent / spec.config).exists():
        spec = spec.model_copy(update={"config": p.parent / spec.config})
    return spec


# --- saved results -------------------------------------------------------------------------------

class SplitResult(BaseModel):
    """One row, one seed, one split: the evaluate stage's columns (`report`) and the pairs they
    were computed from: step-level (confidence, correctness) of every scored step and answer-level
    (confidence, answer correctness) of every answer with a confidence. `extra`: method-specific
    numbers (a baseline's fallback counts, answer Brier score, cost per example)."""

    model_config = ConfigDict(extra="forbid")

    report: ConfidenceReport
    step_confidence: list[float] = Field(default_factory=list)
    step_correct: list[int] = Field(default_factory=list)
    answer_confidence: list[float] = Field(default_factory=list)
    answer_correct: list[int] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paired(self) -> "SplitResult":
        if len(self.step_confidence) != len(self.step_correct) or len(self.answer_confidence) != len(self.answer_correct):
            raise ValueError("confidences and correctness must pair up")
        return self


class RowResult(BaseModel):
    """One row of the comparison for one seed, as saved in `results/<row>/seed<s>.json`.

    `status`: "ok" (per split results in `splits`), "not_applicable" (a baseline that does not
    apply to the model), "unavailable" (a row the config cannot express), "failed" (an error;
    retried by the next run). `reason` says why for every status but "ok". `source` names the run
    directory and model, or the baseline and its raw result files. `stages_reused` / `stages_run`:
    the run's stages hard-linked from the full run / computed for this row; `seconds`: the wall
    time this row took in the run that produced it. `origin`: the weights of the seed's full run
    the result was made from, as {stage: digest} for its model stages (`base`, `sft`, `rl`) the
    row depends on (`stage_digest`); empty in results saved before it was recorded."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["mmboundary.compare.row/1"] = RESULT_FORMAT
    row: str
    label: str
    kind: Literal["reference", "method", "ablation", "baseline", "correction"]
    seed: int
    status: Literal["ok", "not_applicable", "unavailable", "failed"]
    reason: str | None = None
    paper_row: str | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    splits: dict[str, SplitResult] = Field(default_factory=dict)
    stages_reused: list[str] = Field(default_factory=list)
    stages_run: list[str] = Field(default_factory=list)
    seconds: float | None = None
    fingerprint: str | None = None
    origin: dict[str, str] = Field(default_factory=dict)
    note: str | None = None

    @model_validator(mode="after")
    def _status(self) -> "RowResult":
        if self.status == "ok" and not self.splits:
            raise ValueError(f"row {self.row!r} seed {self.seed}: status ok needs results for a split")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"row {self.row!r} seed {self.seed}: status {self.status} needs a reason")
        return self


def result_path(root_dir: str | Path, row: str, seed: int) -> Path:
    return Path(root_dir) / "results" / row / f"seed{seed}.json"


def save_result(root_dir: str | Path, result: RowResult) -> Path:
    path = result_path(root_dir, result.row, result.seed)
    atomic_write_text(path, result.model_dump_json(indent=1) + "\n")
    return path


def load_result(path: str | Path) -> RowResult:
    path = Path(path)
    try:
        return RowResult.model_validate_json(path.read_text("utf-8"))
    except (ValidationError, ValueError, OSError) as e:
        raise RunError(f"{path}: not a valid comparison result: {str(e)[:500]}") from None


def _level_pairs(chains, levels) -> dict[str, list]:
    """(confidence, correctness) pairs of level-based confidence, as `confidence_report` counts
    them: steps with a level and a known truth; answers whose last step has a level."""
    sp, sy, ap, ay = [], [], [], []
    for chain, lv in zip(chains, levels):
        for step, level in zip(chain.steps, lv):
            if level is not None and step.correct is not None:
                sp.append(level_probability(int(level)))
                sy.append(int(step.correct))
        if lv and lv[-1] is not None:
            ap.append(level_probability(int(lv[-1])))
            ay.append(int(chain.answer_correct))
    return {"step_confidence": sp, "step_correct": sy, "answer_confidence": ap, "answer_correct": ay}


def pipeline_row_result(run, row: Row, seed: int, splits: Sequence[str]) -> dict[str, SplitResult]:
    """The splits of a pipeline row from its run's evaluate stage (no model is run): the
    ConfidenceReport the evaluate stage wrote for the row's model, and its pairs from the judged
    chains (expressed levels; for the vanilla model, the estimate stage's internal levels)."""
    from mmboundary.evaluation.expressed import chain_levels
    from mmboundary.pipeline import read_chains, read_step_levels

    ev = run.require("evaluate")
    metrics = json.loads((ev / "metrics.json").read_text("utf-8"))
    model = row_model(row, run.config)
    out: dict[str, SplitResult] = {}
    for split in splits:
        m = metrics.get(split, {}).get(model)
        if m is None:
            continue
        chains = read_chains(ev / f"chains_{model}_{split}.jsonl")
        if model == "vanilla":
            if "internal" not in m:
                raise RunError(f"{ev}: the evaluate stage scored no internal levels for the vanilla model on "
                               f"{split} (evaluate.limit differs from estimate.limit)")
            lv_map = read_step_levels(run.require("estimate") / f"steps_{split}.jsonl")
            levels = [[lv_map.get((c.example_id, i)) for i in range(len(c.steps))] for c in chains]
            report = m["internal"]
        else:
            levels = [chain_levels(c) for c in chains]
            report = m["expressed"]
        out[split] = SplitResult(report=ConfidenceReport.model_validate(report), **_level_pairs(chains, levels))
    if not out:
        raise RunError(f"{ev}/metrics.json has no {model!r} row for the splits {list(splits)}")
    return out


def _baseline_split(result, f1: float | None) -> SplitResult:
    """A baseline's split: its row's columns (fallbacks counted at their value, `baseline_report`)
    and the pairs behind them."""
    from mmboundary.baselines import baseline_report

    rep = baseline_report(result, f1=f1)
    sp, sy, ap, ay = [], [], [], []
    for ex in result.examples:
        for step, p in zip(ex.chain.steps, ex.step_confidences):
            if step.correct is not None:
                sp.append(float(p))
                sy.append(int(step.correct))
        ap.append(float(ex.answer_confidence))
        ay.append(int(ex.chain.answer_correct))
    extra = {"answer_brier": rep.answer_brier, "fallback_steps": rep.fallback_steps,
             "fallback_answers": rep.fallback_answers, "cost_per_example": rep.cost_per_example,
             "parsed_only": rep.parsed_only.model_dump(mode="json") if rep.parsed_only else None}
    return SplitResult(report=rep.confidence, step_confidence=sp, step_correct=sy, answer_confidence=ap,
                       answer_correct=ay, extra=extra)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- running the baselines on a seed's models -----------------------------------------------------

BaselineRun = Callable[[BaselineSpec, str], tuple[Any, float | None, str | None]]


class _RunBaselines:
    """Baselines on one run's models: models, encoders and fitted inputs are loaded once, on
    first use. Called with (BaselineSpec, split), returns (BaselineResult, F1 of its chains, note)."""

    def __init__(self, run, seed: int):
        self.run = run
        self.cfg = run.config
        self.seed = seed
        self._models: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def matcher(self):
        from mmboundary.confidence.similarity import SentenceSimilarity

        ev = self.cfg.evaluate
        return self._get("matcher", lambda: SentenceSimilarity(ev.match_model, kind=ev.match_kind))

    def similarity(self):
        from mmboundary.confidence.similarity import SentenceSimilarity

        e, ev = self.cfg.estimate, self.cfg.evaluate
        if (e.similarity_model, e.similarity_kind) == (ev.match_model, ev.match_kind):
            return self.matcher()
        return self._get("similarity", lambda: SentenceSimilarity(e.similarity_model, kind=e.similarity_kind))

    def fitted(self):
        from mmboundary.confidence.fusion import Levels, Normalizer

        est = self.run.require("estimate")
        return self._get("fitted", lambda: (Normalizer.load(est / "normalizer.json"), Levels.load(est / "levels.json")))

    def model(self, name: str):
        if name not in self._models:
            from mmboundary.models import load_vlm
            from mmboundary.pipeline import make_accelerator, resolve_vlm_path

            path = resolve_vlm_path(self.run) if name == "vanilla" else self.run.require(name) / "model"
            vlm = load_vlm(path, self.cfg.model)
            vlm.model.to(make_accelerator(self.cfg).device)
            self._models[name] = vlm
        return self._models[name]

    def inputs(self, method: str, config):
        from mmboundary.baselines import BaselineInputs
        from mmboundary.pipeline import make_statement_mapper

        kw: dict[str, Any] = {}
        if method == "internal":
            normalizer, levels = self.fitted()
            kw.update(normalizer=normalizer, levels=levels, fusion=self.cfg.estimate.fusion)
            fusion = self.cfg.estimate.fusion
            used = fusion.signals_in_use if config.source == "fused" else (config.source,)
            if "clip_score" in used:
                from mmboundary.models import load_clip
                from mmboundary.pipeline import make_accelerator

                def make_clip():
                    clip = load_clip(self.cfg.clip.path or self.run.require("base") / "clip")
                    clip.model.to(make_accelerator(self.cfg).device)
                    return clip

                kw["clip"] = self._get("clip", make_clip)
            if "token_sar" in used:
                kw["similarity"] = self.similarity()
        if method in ("sc", "multisample"):
            kw["similarity"] = self.similarity()
        if method in ("multisample", "dps"):
            shared = self.matcher() if self.cfg.statements.kind == "statement" and \
                self.cfg.evaluate.match_model is None and self.cfg.evaluate.match_kind == "bi-encoder" else None
            kw["mapper"] = self._get("mapper", lambda: make_statement_mapper(self.cfg, encoder=shared))
        return BaselineInputs(**kw)

    def _saved_signals(self, split: str):
        """The estimate stage's chains and signals of `split` when they are the chains the
        evaluate stage judges (same examples), else None."""
        from mmboundary.pipeline import _reuse_estimate_chains, read_chains
        from mmboundary.records import StepSignals

        path = _reuse_estimate_chains(self.run, split)
        steps = self.run.stage_dir("estimate") / f"steps_{split}.jsonl"
        if path is None or not steps.exists():
            return None
        fields = set(StepSignals.model_fields)
        signals = [StepSignals.model_validate({k: v for k, v in json.loads(line).items() if k in fields})
                   for line in steps.read_text("utf-8").splitlines() if line.strip()]
        return read_chains(path), signals

    def __call__(self, spec: BaselineSpec, split: str):
        from mmboundary.baselines import BaselineResult, internal_confidences, run_baseline
        from mmboundary.pipeline import chains_f1, load_split

        examples = load_split(self.run, split, self.cfg.evaluate.limit)
        config = spec.resolved_config(self.cfg, self.seed)
        note = None
        saved = self._saved_signals(split) if spec.method == "internal" and \
            config.generation == self.cfg.generation else None
        if saved is not None:
            normalizer, levels = self.fitted()
            chains, signals = saved
            records = internal_confidences(chains, signals, config, normalizer, levels, self.cfg.estimate.fusion)
            result = BaselineResult(method="internal", variant=config.variant, config=config.model_dump(mode="json"),
                                    examples=tuple(records))
            note = "read out from the estimate stage's saved chains and signals (no model run; cost not counted)"
        else:
            result = run_baseline(spec.method, self.model(spec.model_name), examples, config,
                                  self.inputs(spec.method, config))
        f1 = None
        if result.applicable and result.examples:
            f1 = chains_f1([e.chain for e in result.examples], examples, self.matcher(),
                           self.cfg.evaluate.match_threshold)
        return result, f1, note


# --- self-correction on a seed's models -----------------------------------------------------------

class CorrectionOutcome(BaseModel):
    """What a self-correction row computes on one split: the corrected chains' report, the pairs
    behind it, the F1 of the corrected chains, and the extra compute (`CorrectionRun.compute_summary`)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    chains: list[Any]
    levels: list[list[int | None]]
    compute: dict[str, Any]
    f1: float | None = None


CorrectionRunner = Callable[[CorrectionSpec, str], CorrectionOutcome]


class _RunCorrections:
    """Self-correction on one run's models (`api.load(run, stage=model)`: the run's normaliser,
    fusion, levels and statement mapper), each model loaded once. Called with (CorrectionSpec,
    split)."""

    def __init__(self, run, seed: int):
        self.run = run
        self.seed = seed
        self._models: dict[str, Any] = {}
        self._matcher = None

    def __call__(self, spec: CorrectionSpec, split: str) -> CorrectionOutcome:
        from mmboundary.api import load
        from mmboundary.confidence.similarity import SentenceSimilarity
        from mmboundary.pipeline import chains_f1, load_split

        cfg = self.run.config
        if spec.model not in self._models:
            self._models[spec.model] = load(self.run.root, stage=spec.model)
        model = self._models[spec.model]
        if spec.model == "vanilla" and not model.internal_available:
            raise RunError(f"{self.run.root}: no internal levels for the vanilla model (estimate stage incomplete)")
        examples = load_split(self.run, split, cfg.evaluate.limit)
        crun = model.correct_examples(examples, spec.resolved_config(self.seed),
                                      description=f"{spec.row_name} {split}")
        levels = crun.internal_levels if spec.model == "vanilla" else crun.expressed_levels
        if self._matcher is None:
            self._matcher = SentenceSimilarity(cfg.evaluate.match_model, kind=cfg.evaluate.match_kind)
        f1 = chains_f1(crun.chains, examples, self._matcher, cfg.evaluate.match_threshold)
        return CorrectionOutcome(chains=crun.chains, levels=levels, compute=crun.compute_summary(), f1=f1)


def _greedy_numbers(run, model: str, split: str) -> dict[str, float | None]:
    """The model's own numbers on `split` without self-correction: its greedy chains as the
    evaluate stage judged them (internal levels for the vanilla model, expressed otherwise)."""
    ev = run.require("evaluate")
    m = json.loads((ev / "metrics.json").read_text("utf-8")).get(split, {}).get(model)
    if m is None:
        raise RunError(f"{ev}/metrics.json has no {model!r} model on {split!r}")
    rep = m.get("internal" if model == "vanilla" else "expressed")
    if rep is None:
        raise RunError(f"{ev}/metrics.json: no {'internal' if model == 'vanilla' else 'expressed'} report "
                       f"of {model!r} on {split!r}")
    return {"accuracy": rep.get("accuracy"), "mece": rep.get("mece"), "ece": rep.get("ece"), "auroc": rep.get("auroc")}


def _correction_split(outcome: CorrectionOutcome, without: dict[str, float | None]) -> SplitResult:
    """A self-correction row's split: the corrected chains' report and pairs, with the model's
    numbers without it and the change in accuracy (`extra`)."""
    from mmboundary.evaluation.expressed import confidence_report

    report = confidence_report(outcome.chains, outcome.levels, f1=outcome.f1)
    gain = None if without.get("accuracy") is None else report.accuracy - without["accuracy"]
    extra = {"without": without, "accuracy_gain": gain, "compute": outcome.compute}
    return SplitResult(report=report, **_level_pairs(outcome.chains, outcome.levels), extra=extra)


# --- the orchestration ---------------------------------------------------------------------------

def _default_pipeline(run) -> None:
    from mmboundary.pipeline import run_pipeline

    run_pipeline(run)


#: The stages whose trained weights a model of a run depends on.
MODEL_STAGES = {"vanilla": ("base",), "sft": ("base", "sft"), "rl": ("base", "sft", "rl")}


def stage_digest(run, stage: str) -> str | None:
    """A digest of the weights a finished stage of `run` trained (sha256 over its `.safetensors`
    files, by relative path), or None for a stage that is not complete or trained none.

    Why: training on a CPU is reproducible bit for bit only at the same thread count (measured: the
    same seed and config, rebuilt on another day with one thread per process, gave an SFT model
    with test MECE 0.075 instead of 0.087), so a seed's full run rebuilt after its run directory
    was lost may be another experiment.
    Rows saved from the old one must not be mixed with rows forked from the new one."""
    if not run.is_complete(stage):
        return None
    d = run.stage_dir(stage)
    files = sorted(d.rglob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(d)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _origin(digests: dict[str, str | None], stages: Sequence[str]) -> dict[str, str]:
    """The `origin` of a result that depends on `stages` of the full run (digests of the full run)."""
    return {s: digests[s] for s in stages if digests.get(s)}


def _consistent(res: RowResult, digests: dict[str, str | None], saved_at: float | None,
                base_done: float | None) -> bool:
    """Whether a saved result belongs to the seed's current full run: every stage digest it
    recorded still matches. A result without digests (saved before they were recorded) is kept
    unless its file is older than the full run's `base` stage (`saved_at` < `base_done`, file
    modification times): then it cannot have been made from these weights."""
    if not res.origin:
        return saved_at is None or base_done is None or saved_at >= base_done
    return all(digests.get(stage) == d for stage, d in res.origin.items())


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _run_seconds(run) -> float | None:
    """The seconds a run's complete stages took, from their COMPLETE markers (None if none says)."""
    secs = [run.marker(s).get("seconds") for s in _complete(run)]
    secs = [x for x in secs if x is not None]
    return round(sum(secs), 2) if secs else None


def _complete(run) -> list[str]:
    from mmboundary.config import STAGES

    return [s for s in STAGES if run.is_complete(s)]


class _Display:
    """Per-row progress (a rich progress bar per row, advanced per seed when attached to a
    terminal) and one line per finished row and seed on stderr."""

    def __init__(self, rows: Sequence[tuple[str, str]], seeds: int):
        from rich.console import Console

        from mmboundary.progress import make_progress, progress_enabled

        self.console = Console(stderr=True)
        self.enabled = progress_enabled()
        self.progress = make_progress()
        from rich.markup import escape

        self.tasks = {name: self.progress.add_task(escape(label), total=seeds, info="waiting") for name, label in rows}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, row: str, seed: int, what: str = "running") -> None:
        self.progress.update(self.tasks[row], info=f"seed {seed}: {what}")

    def note(self, row: str, seed: int, label: str, what: str) -> None:
        """A row this process leaves (e.g. to another process running it)."""
        from rich.markup import escape

        self.progress.update(self.tasks[row], info=f"seed {seed}: {what}")
        (self.progress.console if self.enabled else self.console).print(
            "[yellow]" + escape(f"seed {seed} · {label}: {what}") + "[/yellow]", highlight=False)

    def done(self, result: RowResult) -> None:
        from rich.markup import escape

        task = self.tasks[result.row]
        self.progress.update(task, advance=1, info=f"seed {result.seed}: {result.status}")
        extra = ""
        if result.stages_reused or result.stages_run:
            extra = f"; reused {', '.join(result.stages_reused) or 'nothing'}, ran {', '.join(result.stages_run) or 'nothing'}"
        secs = f", {result.seconds:.0f} s" if result.seconds is not None else ""
        why = f": {result.reason}" if result.reason and result.status != "ok" else ""
        colour = {"ok": "green", "failed": "red"}.get(result.status, "yellow")
        line = f"[{colour}]" + escape(f"seed {result.seed} · {result.label}: {result.status}{why}{secs}{extra}") \
            + f"[/{colour}]"
        (self.progress.console if self.enabled else self.console).print(line, highlight=False)


#: The stages whose config cannot change a model's results: the vanilla model's numbers do not
#: depend on the statements, the SFT or the RL stage, the SFT model's not on the RL stage.
_LATER_STAGES = {"vanilla": ("sft_data", "sft", "rl"), "sft": ("rl",), "rl": ()}


#: Config fields added after results were saved, by generation (oldest first), each with the value
#: that reproduces the behaviour the earlier results were computed with. A saved result still
#: matches while the new fields hold those values (`_FINGERPRINT_FORMS`).
_ADDED_FIELDS: tuple[dict[tuple[str, ...], Any], ...] = (
    # 2026-12-02, second session: the RL variants of issue 5
    {("rl", "algorithm"): "ppo", ("rl", "level_phrasings"): 1, ("rl", "level_gradient"): "exact",
     ("rl", "level_temperature"): 1.0, ("rl", "questions"): "train", ("rl", "reward", "cs_scale"): "level"},
    # 2026-12-02, third session: the floored level gradient, statement granularity (SaySelf)
    {("rl", "level_floor"): 0.05, ("statements", "granularity"): "step"},
)

#: The forms of a fingerprint a saved result may have been written in, newest first: 0 the
#: current `_model_dump`; 1 the same before the newest generation of `_ADDED_FIELDS`; 2 the whole
#: `dump_config` before any of them (results saved before 2026-12-02's second session).
_FINGERPRINT_FORMS = (0, 1, 2)


def _without_added(data: dict, generations) -> bool:
    """Remove the fields of `generations` from `data` (a config's `model_dump`) in place; False
    when one of them holds another value than its neutral one (no earlier result can match)."""
    for fields in generations:
        for path, neutral in fields.items():
            node = data
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict) or path[-1] not in node:
                continue
            if node[path[-1]] != neutral:
                return False
            del node[path[-1]]
    return True


def _model_dump(cfg, model: str, form: int = 0) -> str | None:
    """The part of a run config that a row of `model` ('vanilla', 'sft' or 'rl') depends on, as
    text for a fingerprint: the whole `dump_config` for the RL model; without the config sections
    (and the `stages` entries) of the stages after the model was made otherwise, so that changing
    e.g. the RL settings keeps the saved vanilla, SFT-only and baseline rows. `form`
    (`_FINGERPRINT_FORMS`) gives the text as an earlier version wrote it, or None when the config
    uses a field that version did not have."""
    import yaml

    if form == 2:
        return _legacy_dump(cfg)
    from mmboundary.runs import STAGE_SECTIONS

    data = cfg.model_dump(mode="json")
    later = _LATER_STAGES[model]
    for stage in later:  # first: a field of a later stage's section does not matter to the model
        for section in STAGE_SECTIONS[stage]:
            data.pop(section, None)
    if form == 1 and not _without_added(data, _ADDED_FIELDS[-1:]):
        return None
    if not later:
        return yaml.safe_dump(data, sort_keys=False)  # = dump_config(cfg) for form 0
    data["stages"] = [s for s in data.get("stages", []) if s not in later]
    return json.dumps(data, sort_keys=True, default=str)


def _legacy_dump(cfg) -> str | None:
    """`dump_config` of `cfg` as it read before any field of `_ADDED_FIELDS` existed, when each of
    them holds its neutral value (else None: no earlier result can match)."""
    import yaml

    data = cfg.model_dump(mode="json")
    if not _without_added(data, _ADDED_FIELDS):
        return None
    return yaml.safe_dump(data, sort_keys=False)


def _pipeline_fingerprint(cfg, model: str, form: int = 0) -> str:
    """What a pipeline row's saved result must match to be reused: the model's part of the run
    config (`_model_dump`) and the model."""
    return _fingerprint({"config": _model_dump(cfg, model, form), "model": model})


def _baseline_fingerprint(b: BaselineSpec, full_cfg, seed: int, splits, form: int = 0) -> str:
    """The same for a baseline row: the baseline, its resolved config, the part of the full run's
    config that the baseline's model depends on, and the splits."""
    return _fingerprint({"baseline": b.model_dump(mode="json"),
                         "config": b.resolved_config(full_cfg, seed).model_dump(mode="json"),
                         "run": _model_dump(full_cfg, b.model_name, form), "splits": splits})


def _correction_fingerprint(c: CorrectionSpec, full_cfg, seed: int, splits, form: int = 0) -> str:
    """The same for a self-correction row."""
    return _fingerprint({"correction": c.model_dump(mode="json"),
                         "config": c.resolved_config(seed).model_dump(mode="json"),
                         "run": _model_dump(full_cfg, c.model, form), "splits": splits})


def _current_run(path: Path, cfg, source: Path | None = None, overrides: Sequence[str] = ()):
    """The run at `path` for config `cfg`: reopened when it was made with `cfg`; when it was made
    with another config (the spec or a default changed since), it is moved to
    `<its folder>/.stale/<name>-<k>` and replaced by a fork of it to `cfg` (its stages that the
    change leaves valid are reused, e.g. everything before `rl` when only the RL settings
    changed). A missing run is forked from `source` with `overrides` when `source` is given,
    else created. Returns (run, stages reused)."""
    import shutil

    from mmboundary.config import config_diff, load_config
    from mmboundary.runs import Run, fork_run

    if (path / "config.yaml").exists():
        if not config_diff(load_config(path / "config.yaml"), cfg):
            return Run.open(path, cfg), []
        stale_root = path.parent / ".stale"
        stale_root.mkdir(parents=True, exist_ok=True)
        k = 0
        while (stale_root / f"{path.name}-{k}").exists():
            k += 1
        stale = stale_root / f"{path.name}-{k}"
        shutil.move(str(path), str(stale))
        log.info("%s was made with another config: moved to %s, forked from it", path, stale)
        return fork_run(stale, path, config=cfg)
    if source is not None and (source / "config.yaml").exists():
        run, reused = fork_run(source, path, list(overrides))
        diff = config_diff(run.config, cfg)
        if diff:
            raise RunError(f"{path}: the fork's config differs from the row's at {diff}")
        return run, reused
    return Run.open(path, cfg), []


def _lock_file(root: Path, row: str, seed: int) -> Path:
    """The lock a process holds while it runs (row, seed) of the comparison at `root`."""
    return root / "locks" / f"seed{seed}-{row}.lock"


def _saved_if_current(root: Path, row: str, seed: int, fingerprints: Sequence[str],
                      statuses: tuple[str, ...] = ("ok",)) -> RowResult | None:
    """The saved result of (row, seed) when its status is one of `statuses` and its fingerprint is
    one of `fingerprints` (the same config and settings), else None."""
    path = result_path(root, row, seed)
    if not fingerprints or not path.exists():
        return None
    try:
        old = load_result(path)
    except RunError:
        return None
    return old if old.status in statuses and old.fingerprint in fingerprints else None


def _reusable_results(root: Path, spec: CompareSpec, rows, seed: int,
                      overrides: list[str]) -> tuple[dict[str, RowResult], set[str]]:
    """Saved results of a seed that still hold, by row name: computed from the configs alone (the
    fingerprints `run_compare` writes), so that no run directory is needed; and the rows that need
    no run at all (unavailable in this config). A config that cannot be built reuses nothing (the
    run then reports the error)."""
    from mmboundary.config import config_diff

    try:
        full_cfg = row_config("full", spec.config, overrides, spec.with_rl)
    except Exception:  # noqa: BLE001 - reported by the run itself
        return {}, set()
    free: set[str] = set()
    out: dict[str, RowResult] = {}
    for kind, item in rows:
        if kind == "pipeline":
            if row_availability(item.name, spec.config, overrides, spec.with_rl):
                free.add(item.name)
                continue
            try:
                cfg = row_config(item.name, spec.config, overrides, spec.with_rl)
            except Exception:  # noqa: BLE001
                continue
            run_cfg = full_cfg if not item.own_run or not config_diff(full_cfg, cfg) else cfg
            model = row_model(item, run_cfg)
            name, fps = item.name, [_pipeline_fingerprint(run_cfg, model, f) for f in _FINGERPRINT_FORMS]
            statuses: tuple[str, ...] = ("ok",)
        elif kind == "baseline":
            name, statuses = item.row_name, ("ok", "not_applicable")
            fps = [_baseline_fingerprint(item, full_cfg, seed, spec.splits, f) for f in _FINGERPRINT_FORMS]
        else:
            if item.model == "rl" and not spec.with_rl:
                free.add(item.row_name)
                continue
            name, statuses = item.row_name, ("ok",)
            fps = [_correction_fingerprint(item, full_cfg, seed, spec.splits, f) for f in _FINGERPRINT_FORMS]
        old = _saved_if_current(root, name, seed, fps, statuses)
        if old is not None:
            out[name] = old
    return out, free


def run_compare(spec: CompareSpec, root_dir: str | Path, *,
                pipeline_runner: Callable[[Any], None] | None = None,
                baseline_runner: Callable[[Any, int], BaselineRun] | None = None,
                correction_runner: Callable[[Any, int], CorrectionRunner] | None = None) -> list[RowResult]:
    """Run a comparison into `root_dir` (see the module docstring) and return the rows' results.

    `pipeline_runner(run)` runs a run's missing stages (default `pipeline.run_pipeline`);
    `baseline_runner(run, seed)` returns a callable (BaselineSpec, split) -> (BaselineResult, F1,
    note) for the full run of a seed (default: the real baselines on its models);
    `correction_runner(run, seed)` a callable (CorrectionSpec, split) -> CorrectionOutcome
    (default: self-correction on its models). They are parameters so the orchestration can be
    tested with stubs."""
    from mmboundary.config import config_diff

    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    pipeline_runner = pipeline_runner or _default_pipeline
    baseline_runner = baseline_runner or _RunBaselines
    correction_runner = correction_runner or _RunCorrections
    atomic_write_text(root / "spec.json", spec.model_dump_json(indent=1) + "\n")
    handler = logging.FileHandler(root / "compare.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.time()
    results: list[RowResult] = []
    rows = spec.rows()
    labels = [(r.name, r.label) if k == "pipeline" else (r.row_name, r.row_label) for k, r in rows]

    def take_reused(found: dict[str, RowResult], seed: int) -> None:
        for res in found.values():
            results.append(res)
            display.done(res)
        if found:
            log.info("seed %d: %d saved result(s) reused: %s", seed, len(found), ", ".join(found))

    def finish(res: RowResult) -> RowResult:
        save_result(root, res)
        results.append(res)
        display.done(res)
        log.info("seed %d %s: %s%s", res.seed, res.row, res.status, f" ({res.reason})" if res.reason else "")
        return res

    def failed(row: str, label: str, kind: str, seed: int, err: BaseException, t0: float, **kw) -> RowResult:
        log.error("seed %d %s failed:\n%s", seed, row, "".join(traceback.format_exception(err)))
        return RowResult(row=row, label=label, kind=kind, seed=seed, status="failed",
                         reason=f"{type(err).__name__}: {str(err)[:500]}", seconds=round(time.time() - t0, 2), **kw)

    try:
        with _Display(labels, len(spec.seeds)) as display:
            pending = list(spec.seeds)
            while pending:
                seed = pending.pop(0)
                overrides = list(spec.overrides) + [f"seed={seed}"]
                seed_root = root / "runs" / f"seed{seed}"
                full_dir = seed_root / "full"
                full_run, full_cfg, full_error = None, None, None
                # 0. rows whose saved result still holds (same fingerprint) are not recomputed; when
                # every row of the seed has one, its runs are not even opened (results kept from an
                # earlier session, without the run directories, still count)
                reused, free = _reusable_results(root, spec, rows, seed, overrides)
                needed = [name for name, _ in labels if name not in reused and name not in free]
                if not needed:  # the unavailable rows are recorded without a run
                    take_reused(reused, seed)
                    for kind, item in rows:
                        name = item.name if kind == "pipeline" else item.row_name
                        if name in free:
                            reason = (row_availability(name, spec.config, overrides, spec.with_rl) if kind == "pipeline"
                                      else "the comparison has no rl stage (with_rl: false)")
                            finish(RowResult(row=name, label=item.label if kind == "pipeline" else item.row_label,
                                             kind=item.kind if kind == "pipeline" else "correction", seed=seed,
                                             status="unavailable", reason=reason,
                                             paper_row=item.paper_row if kind == "pipeline" else None))
                    continue
                # 1. the full method's run (the source of every fork of this seed)
                if "full" in display.tasks and "full" not in reused:
                    display.start("full", seed, "the full method's run")
                try:
                    full_cfg = row_config("full", spec.config, overrides, spec.with_rl)
                    # another process making this seed's full run: go on with a later seed and come
                    # back; with no other seed left, wait for it
                    with hold(_lock_file(root, "full-run", seed), what=f"seed {seed}'s full run",
                              wait=not pending,
                              on_wait=lambda who, seed=seed: display.note(
                                  "full", seed, "the full method's run",
                                  f"waiting for {who}, which makes this seed's full run")):
                        full_run, _ = _current_run(full_dir, full_cfg)
                        pipeline_runner(full_run)
                except Exception as e:  # noqa: BLE001 - recorded, the other seeds go on
                    if isinstance(e, Busy) and full_run is None and pending:
                        log.info("seed %d: its full run is being made by %s; seed %d first", seed, e.holder,
                                 pending[0])
                        display.note("full", seed, "the full method's run", f"made by {e.holder}; later")
                        pending.append(seed)
                        continue
                    full_error = e
                    log.error("seed %d: the full method's run failed:\n%s", seed, "".join(traceback.format_exception(e)))
                # a saved result is kept only if it was made from this full run's weights: one
                # seed's rows then always share one vanilla / SFT / RL model (see stage_digest)
                digests = ({st: stage_digest(full_run, st) for st in MODEL_STAGES["rl"]}
                           if full_run is not None else {})
                base_done = _mtime(full_run.stage_dir("base") / "COMPLETE") if full_run is not None else None

                def consistent(res: RowResult) -> bool:
                    return full_run is None or _consistent(res, digests, _mtime(result_path(root, res.row, seed)),
                                                           base_done)

                for name in list(reused):
                    if not consistent(reused[name]):
                        log.info("seed %d %s: its saved result was made from other weights than this seed's "
                                 "full run (rebuilt since); recomputed", seed, name)
                        del reused[name]
                take_reused(reused, seed)
                def claimed(wanted: str, seed: int = seed, overrides: list[str] = overrides, reused=reused):
                    """The rows of kind `wanted` this process runs, each while holding its lock: a row
                    another process is running is left to it (it saves the result); one another
                    process finished since this seed started is reused."""
                    for kind, item in rows:
                        if kind != wanted:
                            continue
                        name = item.name if kind == "pipeline" else item.row_name
                        label = item.label if kind == "pipeline" else item.row_label
                        if name in reused:
                            continue
                        try:
                            with hold(_lock_file(root, name, seed), what=f"row {name} of seed {seed}"):
                                again, _ = _reusable_results(root, spec, [(kind, item)], seed, overrides)
                                if name in again and consistent(again[name]):
                                    results.append(again[name])
                                    display.done(again[name])
                                    continue
                                yield item
                        except Busy as e:
                            log.info("seed %d %s: run by %s; left to it", seed, name, e.holder)
                            display.note(name, seed, label, f"running in {e.holder}; left to it")

                # 2-3. the pipeline rows
                for row in claimed("pipeline"):
                    display.start(row.name, seed)
                    t0 = time.time()
                    common = dict(row=row.name, label=row.label, kind=row.kind, seed=seed, paper_row=row.paper_row)
                    reason = row_availability(row.name, spec.config, overrides, spec.with_rl)
                    if reason:
                        finish(RowResult(**common, status="unavailable", reason=reason))
                        continue
                    try:
                        cfg = row_config(row.name, spec.config, overrides, spec.with_rl)
                        stages_reused: list[str] = []
                        note = None
                        if full_cfg is None or not row.own_run or not config_diff(full_cfg, cfg):
                            if full_error is not None:
                                raise RunError(f"the full method's run {full_dir} failed: "
                                               f"{type(full_error).__name__}: {full_error}")
                            run = full_run
                            # the full row costs the full run, whichever process made it
                            ran = _complete(full_run) if row.name == "full" else []
                            if row.name != "full":
                                note = "a model of the full method's run (no run of its own)" if not row.own_run \
                                    else "same config as the full method: its run"
                        else:
                            run, stages_reused = _current_run(seed_root / row.name, cfg, full_dir, row.overrides)
                            before = _complete(run)
                            pipeline_runner(run)
                            ran = [s for s in _complete(run) if s not in before]
                        splits = pipeline_row_result(run, row, seed, spec.splits)
                        model = row_model(row, run.config)
                        depends = MODEL_STAGES[model] if run is full_run else \
                            [st for st in MODEL_STAGES[model] if st in stages_reused]
                        finish(RowResult(
                            **common, status="ok", splits=splits,
                            source={"run": str(run.root.relative_to(root)) if run.root.is_relative_to(root)
                                    else str(run.root), "model": model},
                            stages_reused=stages_reused, stages_run=ran,
                            seconds=_run_seconds(full_run) if row.name == "full" else round(time.time() - t0, 2),
                            fingerprint=_pipeline_fingerprint(run.config, model),
                            origin=_origin(digests, depends), note=note))
                    except Exception as e:  # noqa: BLE001 - recorded as a failed row, retried next time
                        finish(failed(row.name, row.label, row.kind, seed, e, t0, paper_row=row.paper_row))
                # 4. the baselines on the seed's models
                runner = None
                for b in claimed("baseline"):
                    display.start(b.row_name, seed)
                    t0 = time.time()
                    common = dict(row=b.row_name, label=b.row_label, kind="baseline", seed=seed)
                    try:
                        if full_error is not None or full_run is None:
                            raise RunError(f"the full method's run {full_dir} failed: "
                                           f"{type(full_error).__name__}: {full_error}")
                        fp = _baseline_fingerprint(b, full_run.config, seed, spec.splits)
                        runner = runner or baseline_runner(full_run, seed)
                        from mmboundary.pipeline import split_names

                        splits, raw, notes, reason = {}, {}, set(), None
                        for split in [s for s in spec.splits if s in split_names(full_run)]:
                            result, f1, note = runner(b, split)
                            raw[split] = str(result.save(root / "baselines" / b.row_name / f"seed{seed}_{split}.json")
                                             .relative_to(root))
                            if note:
                                notes.add(note)
                            if not result.applicable:
                                reason = result.reason
                                break
                            splits[split] = _baseline_split(result, f1)
                        source = {"baseline": b.method, "model": b.model_name, "run": str(full_dir.relative_to(root)),
                                  "results": raw}
                        status = "not_applicable" if reason else "ok"
                        if status == "ok" and not splits:
                            raise RunError(f"{full_dir}: none of the splits {spec.splits} exists")
                        finish(RowResult(**common, status=status, reason=reason, splits={} if reason else splits,
                                         source=source, seconds=round(time.time() - t0, 2), fingerprint=fp,
                                         origin=_origin(digests, MODEL_STAGES[b.model_name]),
                                         note="; ".join(sorted(notes)) or None))
                    except Exception as e:  # noqa: BLE001
                        finish(failed(b.row_name, b.row_label, "baseline", seed, e, t0))
                del runner
                # 5. self-correction on the seed's models
                crunner = None
                for c in claimed("correction"):
                    display.start(c.row_name, seed)
                    t0 = time.time()
                    common = dict(row=c.row_name, label=c.row_label, kind="correction", seed=seed)
                    if c.model == "rl" and not spec.with_rl:
                        finish(RowResult(**common, status="unavailable",
                                         reason="the comparison has no rl stage (with_rl: false)"))
                        continue
                    try:
                        if full_error is not None or full_run is None:
                            raise RunError(f"the full method's run {full_dir} failed: "
                                           f"{type(full_error).__name__}: {full_error}")
                        fp = _correction_fingerprint(c, full_run.config, seed, spec.splits)
                        crunner = crunner or correction_runner(full_run, seed)
                        from mmboundary.pipeline import split_names

                        splits = {}
                        for split in [s for s in spec.splits if s in split_names(full_run)]:
                            without = _greedy_numbers(full_run, c.model, split)
                            splits[split] = _correction_split(crunner(c, split), without)
                        if not splits:
                            raise RunError(f"{full_dir}: none of the splits {spec.splits} exists")
                        finish(RowResult(**common, status="ok", splits=splits,
                                         source={"run": str(full_dir.relative_to(root)), "model": c.model,
                                                 "correction": c.resolved_config(seed).model_dump(mode="json")},
                                         seconds=round(time.time() - t0, 2), fingerprint=fp,
                                         origin=_origin(digests, MODEL_STAGES[c.model]),
                                         note="chains with confidence-guided self-correction; the model's greedy "
                                              "numbers (without) are its own row's"))
                    except Exception as e:  # noqa: BLE001
                        finish(failed(c.row_name, c.row_label, "correction", seed, e, t0))
                del crunner
    finally:
        log.removeHandler(handler)
        handler.close()
    atomic_write_json(root / "last_run.json", {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 2), "seeds": spec.seeds, "rows": spec.row_names(),
        "failed": sorted({f"{r.row} (seed {r.seed})" for r in results if r.status == "failed"})})
    return results


# --- the report ----------------------------------------------------------------------------------

class Stat(BaseModel):
    """Mean and sample standard deviation (n - 1) of one column over the seeds that have it
    (`std` None for a single value)."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat | None":
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return None
        return cls(mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else None,
                   n=len(vals), values=vals)


class ReportRow(BaseModel):
    """A row of one split's table: its columns over seeds (`stats`, keyed by `COLUMNS` field),
    the parsed share, the mean level shares, the paper's numbers for the matching row (data set ->
    ECE, MECE, Acc, F1), and the status of each seed. The pooled pairs behind the reliability
    diagram are kept for plotting and left out of `report.json`."""

    model_config = ConfigDict(extra="forbid")

    row: str
    label: str
    kind: str
    seeds: list[int]
    status: str  # "ok" when at least one seed has numbers, else the common status of the seeds
    reason: str | None = None
    seed_status: dict[int, str] = Field(default_factory=dict)
    stats: dict[str, Stat | None] = Field(default_factory=dict)
    parsed: Stat | None = None
    level_shares: dict[int, Stat] = Field(default_factory=dict)
    paper_row: str | None = None
    paper: dict[str, tuple[float, float, float, float]] = Field(default_factory=dict)
    seconds: Stat | None = None
    stages_reused: list[str] = Field(default_factory=list)
    stages_run: list[str] = Field(default_factory=list)
    note: str | None = None
    correction: dict[str, Stat | None] = Field(
        default_factory=dict, description="Self-correction rows: over seeds, the model's accuracy and MECE "
        "without it (`acc_without`, `mece_without`), the accuracy change (`acc_gain`), the extra tokens "
        "per greedy token (`extra_token_ratio`) and the steps replaced per question (`replaced_per_question`).")
    mece_by_seed: dict[int, float] = Field(
        default_factory=dict, description="The row's MECE on each seed that has one.")
    mece_vs_full: Stat | None = Field(
        None, description="Paired with the full method: the row's MECE minus the full method's on the same "
        "seed, over the seeds both have (the seed spread of a trained model is often larger than the gap "
        "between two rows' means, and the means may be over different seeds).")
    lower_than_full: int | None = Field(
        None, description="On how many of those seeds the row's MECE is below the full method's.")
    step_confidence: list[float] = Field(default_factory=list, exclude=True)
    step_correct: list[int] = Field(default_factory=list, exclude=True)


class SplitTable(BaseModel):
    split: str
    datasets: tuple[str, ...]
    rows: list[ReportRow]
    findings: list[str]


class Report(BaseModel):
    """The whole comparison, rebuilt from saved results (`build_report`)."""

    root: str
    name: str
    seeds: list[int]
    splits: list[str]
    base_config: str | None
    overrides: list[str]
    with_rl: bool
    tables: list[SplitTable]
    last_run: dict[str, Any] | None = None
    figures: list[str] = Field(default_factory=list)
    #: per seed, where rows were made from different weights of the full run (`origin`); empty
    #: when every seed's rows share one set of models
    mixed: list[str] = Field(default_factory=list)
    #: results with no `origin` (saved before it was recorded): their weights cannot be checked
    unchecked: int = 0


def _mixed_origins(saved: dict[str, dict[int, RowResult]], seeds: Sequence[int]) -> list[str]:
    """One line per (seed, model stage) whose rows recorded more than one weight digest."""
    out = []
    for seed in seeds:
        by_stage: dict[str, dict[str, list[str]]] = {}
        for name, per in saved.items():
            r = per.get(seed)
            for stage, digest in (r.origin.items() if r is not None else ()):
                by_stage.setdefault(stage, {}).setdefault(digest, []).append(name)
        for stage, digests in by_stage.items():
            if len(digests) > 1:
                out.append(f"seed {seed}: rows made from different `{stage}` weights: " + "; ".join(
                    f"{', '.join(sorted(rows))} ({d})" for d, rows in sorted(digests.items())))
    return out


def _better(col: str, a: float, b: float) -> bool:
    """Whether value a is better than value b in column `col`."""
    direction = {c: d for c, _, d in COLUMNS}[col]
    return a < b if direction == "lower" else a > b


def _findings(split: str, rows: list[ReportRow]) -> list[str]:
    ok = {r.row: r for r in rows if r.status == "ok" and r.stats.get("mece")}
    out: list[str] = []
    if not ok:
        return ["No row has numbers on this split."]
    ranked = sorted(ok.values(), key=lambda r: r.stats["mece"].mean)
    best = ranked[0]
    full = ok.get("full")
    if full is None:
        fr = next((r for r in rows if r.row == "full"), None)
        why = ("it is not in this comparison" if fr is None else
               f"it has no MECE ({fr.status.replace('_', ' ')}{': ' + fr.reason if fr.reason else ''})"
               if fr.status != "ok" else
               f"it has no MECE (no step with a parsed statement and a known truth; parsed share "
               f"{_fmt(fr.parsed)})")
        out.append(f"Lowest MECE: {best.label} ({best.stats['mece'].mean:.3f}); the full method: {why}.")
    elif best.row == "full":
        runner_up = ranked[1] if len(ranked) > 1 else None
        more = f", next {runner_up.label} ({runner_up.stats['mece'].mean:.3f})" if runner_up else ""
        out.append(f"The full method has the lowest MECE of all {len(ranked)} rows with numbers "
                   f"({full.stats['mece'].mean:.3f}{more}).")
    else:
        fm = full.stats["mece"]
        lower = [r for r in ranked if r.stats["mece"].mean < fm.mean]
        spread = f" (seed std {fm.std:.3f})" if fm.std is not None else ""
        out.append(f"The full method does NOT have the lowest MECE here: its MECE is {fm.mean:.3f}{spread}, rank "
                   f"{ranked.index(full) + 1} of {len(ranked)}; lower: "
                   + ", ".join(f"{r.label} ({r.stats['mece'].mean:.3f})" for r in lower) + ".")
    if full is not None:
        paired = [r for r in ok.values() if r.mece_vs_full is not None and r.mece_vs_full.n > 1]
        always = [r for r in paired if r.lower_than_full == r.mece_vs_full.n]
        never = [r for r in paired if r.lower_than_full == 0]
        if paired:
            out.append("Paired with the full method on the same seeds (MECE, row minus full): lower on every common "
                       "seed: " + (", ".join(f"{r.label} ({r.mece_vs_full.mean:+.3f}, {r.mece_vs_full.n} seeds)"
                                            for r in always) or "no row")
                       + "; lower on no common seed: "
                       + (", ".join(f"{r.label} ({r.mece_vs_full.mean:+.3f}, {r.mece_vs_full.n} seeds)"
                                    for r in never) or "no row")
                       + "; the other rows change sign between seeds.")
    sft = ok.get("sft_only")
    if full is not None and sft is not None:
        paper = PAPER_TABLE["MMBoundary"]
        paper_sft = PAPER_TABLE["MMBoundary w/o RL (SFT only)"]
        ds = PAPER_DATASETS.get(split, ())
        paper_txt = "; ".join(f"{d} {paper[d][1]:.3f} vs {paper_sft[d][1]:.3f}" for d in ds)
        verdict = "below" if full.stats["mece"].mean < sft.stats["mece"].mean else "not below"
        out.append(f"RL vs SFT only: the full method's MECE {full.stats['mece'].mean:.3f} is {verdict} SFT only's "
                   f"{sft.stats['mece'].mean:.3f}" + (f" (paper, full vs SFT only: {paper_txt})." if paper_txt else "."))
    if full is not None:
        for r in rows:
            if r.kind != "ablation" or r.row not in ok:
                continue
            cols = [c for c, _, _ in COLUMNS if r.stats.get(c) and full.stats.get(c)]
            worse = [c for c in cols if _better(c, full.stats[c].mean, r.stats[c].mean)]
            out.append(f"{r.label}: worse than the full method on {len(worse)} of {len(cols)} columns"
                       + (f" ({', '.join(dict((c, h) for c, h, _ in COLUMNS)[c] for c in worse)})" if worse else "")
                       + ".")
    return out


def _pair_with_full(rows: list[ReportRow]) -> None:
    """Fill each row's `mece_vs_full` / `lower_than_full` from the seeds it shares with the full
    method's row (in place; nothing when there is no full row with MECE)."""
    full = next((r for r in rows if r.row == "full" and r.mece_by_seed), None)
    if full is None:
        return
    for r in rows:
        if r is full:
            continue
        common = sorted(set(r.mece_by_seed) & set(full.mece_by_seed))
        if not common:
            continue
        diffs = [r.mece_by_seed[s] - full.mece_by_seed[s] for s in common]
        r.mece_vs_full = Stat.of(diffs)
        r.lower_than_full = sum(d < 0 for d in diffs)


def build_report(root_dir: str | Path) -> Report:
    """The report of the saved results under `root_dir` (pure: reads JSON only, runs no model).

    Rows, seeds and splits are those of `spec.json` (the last `run_compare`); without it, every
    saved result. A row's columns are the mean and sample std over the seeds whose result is "ok"."""
    root = Path(root_dir)
    results_dir = root / "results"
    if not results_dir.is_dir():
        raise RunError(f"{root}: no saved comparison results (no results/ folder); run the comparison first")
    spec = None
    if (root / "spec.json").exists():
        try:
            spec = CompareSpec.model_validate_json((root / "spec.json").read_text("utf-8"))
        except ValidationError as e:
            raise RunError(f"{root / 'spec.json'}: not a valid comparison spec: {str(e)[:300]}") from None
    saved: dict[str, dict[int, RowResult]] = {}
    for path in sorted(results_dir.glob("*/seed*.json")):
        r = load_result(path)
        saved.setdefault(r.row, {})[r.seed] = r
    if not saved:
        raise RunError(f"{results_dir}: no saved comparison results")
    if spec is not None:
        order = [n for n in spec.row_names() if n in saved]
        seeds, splits = list(spec.seeds), list(spec.splits)
    else:
        kind_order = {"reference": 0, "baseline": 1, "method": 2, "ablation": 3, "correction": 5}
        registry = list(ROWS)

        def key(name: str):
            any_r = next(iter(saved[name].values()))
            k = 4 if name == "full" else kind_order.get(any_r.kind, 6)
            return (k, registry.index(name) if name in registry else 99, name)

        order = sorted(saved, key=key)
        seeds = sorted({s for per in saved.values() for s in per})
        splits = [s for s in ("test", "ood") if any(s in r.splits for per in saved.values() for r in per.values())]
    tables = []
    for split in splits:
        rows = []
        for name in order:
            per = {s: r for s, r in saved[name].items() if s in seeds}
            if not per:
                continue
            any_r = next(iter(per.values()))
            have = [r for r in per.values() if r.status == "ok" and split in r.splits]
            statuses = {s: (r.status if r.status != "ok" or split in r.splits else "no such split")
                        for s, r in sorted(per.items())}
            missing = [s for s in seeds if s not in per]
            for s in missing:
                statuses[s] = "not run"
            paper_row = any_r.paper_row
            paper = {d: PAPER_TABLE[paper_row][d] for d in PAPER_DATASETS.get(split, ())
                     if paper_row in PAPER_TABLE and d in PAPER_TABLE[paper_row]}
            rr = ReportRow(row=name, label=any_r.label, kind=any_r.kind, seeds=sorted(per), status="ok",
                           seed_status=statuses, paper_row=paper_row, paper=paper,
                           note=next((r.note for r in per.values() if r.note), None))
            if have:
                reps = [r.splits[split].report for r in have]
                rr.stats = {c: Stat.of([getattr(rep, c) for rep in reps]) for c, _, _ in COLUMNS}
                rr.parsed = Stat.of([rep.parsed_share for rep in reps])
                rr.level_shares = {lv: st for lv in range(1, 6)
                                   if (st := Stat.of([rep.level_shares.get(lv, 0.0) for rep in reps if rep.level_shares]))}
                rr.seconds = Stat.of([r.seconds for r in have])
                first = min(have, key=lambda r: r.seed)
                rr.stages_reused, rr.stages_run = first.stages_reused, first.stages_run
                if rr.kind == "correction":
                    ex = [r.splits[split].extra for r in have]
                    rr.correction = {
                        "acc_without": Stat.of([e.get("without", {}).get("accuracy") for e in ex]),
                        "mece_without": Stat.of([e.get("without", {}).get("mece") for e in ex]),
                        "acc_gain": Stat.of([e.get("accuracy_gain") for e in ex]),
                        "extra_token_ratio": Stat.of([e.get("compute", {}).get("extra_token_ratio") for e in ex]),
                        "replaced_per_question": Stat.of([e.get("compute", {}).get("replaced_steps_per_question")
                                                          for e in ex])}
                rr.mece_by_seed = {r.seed: r.splits[split].report.mece for r in sorted(have, key=lambda r: r.seed)
                                   if r.splits[split].report.mece is not None}
                for r in sorted(have, key=lambda r: r.seed):
                    rr.step_confidence += r.splits[split].step_confidence
                    rr.step_correct += r.splits[split].step_correct
                bad = {s: per[s].reason for s in per if per[s].status != "ok"}
                if bad:
                    rr.reason = "; ".join(f"seed {s}: {why}" for s, why in bad.items())
            else:
                kinds = {r.status for r in per.values()}
                rr.status = kinds.pop() if len(kinds) == 1 else "failed"
                if rr.status == "ok":
                    rr.status = "no such split"
                reasons = {r.reason for r in per.values() if r.reason}
                rr.reason = "; ".join(sorted(reasons)) if len(reasons) > 1 else (reasons.pop() if reasons else None)
            rows.append(rr)
        _pair_with_full(rows)
        tables.append(SplitTable(split=split, datasets=PAPER_DATASETS.get(split, ()), rows=rows,
                                 findings=_findings(split, rows)))
    last = None
    if (root / "last_run.json").exists():
        last = json.loads((root / "last_run.json").read_text("utf-8"))
    return Report(root=str(root), name=spec.name if spec else root.name, seeds=seeds, splits=splits,
                  base_config=str(spec.config) if spec and spec.config else None,
                  overrides=list(spec.overrides) if spec else [], with_rl=spec.with_rl if spec else True,
                  tables=tables, last_run=last, mixed=_mixed_origins(saved, seeds),
                  unchecked=sum(1 for per in saved.values() for sd, r in per.items()
                                if sd in seeds and r.status == "ok" and not r.origin))


def _fmt(stat: Stat | None, bold: bool = False) -> str:
    if stat is None:
        return "-"
    text = f"{stat.mean:.3f}" + (f" ± {stat.std:.3f}" if stat.std is not None else "")
    return f"**{text}**" if bold else text


def _fmt_seconds(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    return f"{stat.mean:.0f}" + (f" ± {stat.std:.0f}" if stat.std is not None else "")


def _paper_cell(values: tuple[float, float, float, float] | None) -> str:
    if not values:
        return ""
    return " / ".join(f"{v:.3f}".lstrip("0") for v in values)


def _figure_name(kind: str, row: str | None, split: str) -> str:
    return f"reliability_{row}_{split}.png" if kind == "reliability" else f"levels_{split}.png"


def render_markdown(report: Report, figures: Sequence[str] = ()) -> str:
    """The report as Markdown: a table per split (mean ± sample std over seeds, best value of
    each column in bold), the paper's numbers beside matching rows, findings, rows without
    numbers and why, the cost of each row, and links to `figures` (file names next to it)."""
    seeds = ", ".join(str(s) for s in report.seeds)
    lines = [f"# Comparison `{report.name}`", ""]
    lines.append(f"Rebuilt from the saved results in `{report.root}` (no model was run to write it: "
                 f"`mmboundary compare --root {report.root} --report-only`). Seeds: {seeds} "
                 f"({len(report.seeds)}; training seeds, the same data). Base config: "
                 f"{report.base_config or 'the built-in default'}"
                 + (f", overrides: `{' '.join(report.overrides)}`" if report.overrides else "")
                 + (", with the rl stage" if report.with_rl else ", without the rl stage (with_rl: false)") + ".")
    lines.append("")
    if report.mixed:
        lines.append("**Warning: some seeds mix rows made from different weights of their full run** (their rows are "
                     "not one experiment; rerun `compare` on a root with the run directories to recompute them):")
        lines += [f"- {m}" for m in report.mixed]
    else:
        lines.append("Each seed's rows were made from one set of weights of its full run (the `origin` digests "
                     "of the results agree)" + (f"; {report.unchecked} result(s) have no digests to check."
                                                if report.unchecked else "."))
    if report.last_run:
        lr = report.last_run
        lines.append("")
        lines.append(f"Last `run_compare`: started {lr.get('started')}, {lr.get('seconds', 0) / 60:.1f} min wall time"
                     + (f"; failed rows: {', '.join(lr['failed'])}" if lr.get("failed") else "") + ".")
    lines += ["", "Cells: mean ± sample standard deviation over the seeds with a result (n - 1 in the "
              "denominator; no ± with one seed). ECE: answer level; MECE, AUROC, Brier: step level; "
              "best mean of each column in bold. Paper: LLaVA-NeXT-7B on A-OKVQA / ScienceQA (in-domain) and "
              "CulturalVQA (OOD), ECE / MECE / Acc / F1 (method.md section 6), beside the rows that match; "
              "they are another model on other data: compare directions, not values.", ""]
    for table in report.tables:
        title = {"test": "test (in-domain)", "ood": "OOD"}.get(table.split, table.split)
        lines += [f"## {title}", ""]
        heads = [h for _, h, _ in COLUMNS] + ["parsed", "seeds"]
        paper_heads = [f"paper {d} (ECE / MECE / Acc / F1)" for d in table.datasets]
        lines.append("| row | " + " | ".join(heads + paper_heads) + " |")
        lines.append("|---|" + "---:|" * len(heads) + "---|" * len(paper_heads))
        ok = [r for r in table.rows if r.status == "ok"]
        best = {}
        for c, _, _ in COLUMNS:
            vals = [r.stats[c].mean for r in ok if r.stats.get(c)]
            if vals:
                best[c] = min(vals) if {x: d for x, _, d in COLUMNS}[c] == "lower" else max(vals)
        for r in table.rows:
            paper = [_paper_cell(r.paper.get(d)) for d in table.datasets]
            if r.status == "ok":
                cells = [_fmt(r.stats.get(c), bold=r.stats.get(c) is not None and r.stats[c].mean == best.get(c))
                         for c, _, _ in COLUMNS]
                n = max((s.n for s in r.stats.values() if s), default=0)
                cells += [_fmt(r.parsed), f"{n}/{len(report.seeds)}"]
            else:
                why = (r.reason or "").replace("|", "/")
                why = why if len(why) <= 80 else why[:77].rstrip() + "... (below)"
                cells = [f"{r.status.replace('_', ' ')}: {why}"] + [""] * (len(heads) - 1)
            lines.append(f"| {r.label} | " + " | ".join(cells + paper) + " |")
        lines += ["", "Findings:", ""] + [f"- {f}" for f in table.findings]
        partial = [r for r in table.rows if r.status == "ok" and r.reason]
        if partial:
            lines += [""] + [f"- {r.label}: some seeds have no result ({r.reason})." for r in partial]
        without = [r for r in table.rows if r.status != "ok"]
        if without:
            lines += ["", "Rows without numbers:", ""] + [
                f"- {r.label}: {r.status.replace('_', ' ')}: {r.reason or '-'}" for r in without]
        lines.append("")
        shares = [r for r in table.rows if r.status == "ok" and r.level_shares]
        if shares:
            lines += ["Level shares (% of steps at levels 1-5, mean over seeds):", "",
                      "| row | 1 | 2 | 3 | 4 | 5 |", "|---|---:|---:|---:|---:|---:|"]
            for r in shares:
                lines.append(f"| {r.label} | " + " | ".join(
                    f"{100 * r.level_shares[lv].mean:.0f}" if lv in r.level_shares else "-" for lv in range(1, 6)) + " |")
            lines.append("")
        by_seed = [r for r in table.rows if r.status == "ok" and r.mece_by_seed]
        if len(report.seeds) > 1 and by_seed:
            lines += ["MECE by seed, and paired with the full method (row minus full on the seeds both have; "
                      "lower is better for the row):", "",
                      "| row | " + " | ".join(f"seed {s}" for s in report.seeds) + " | minus full | seeds lower than full |",
                      "|---|" + "---:|" * (len(report.seeds) + 2)]
            for r in by_seed:
                cells = [f"{r.mece_by_seed[s]:.3f}" if s in r.mece_by_seed else "-" for s in report.seeds]
                d = r.mece_vs_full
                cells.append("-" if d is None else f"{d.mean:+.3f}" + (f" ± {d.std:.3f}" if d.std is not None else ""))
                cells.append("-" if d is None else f"{r.lower_than_full} of {d.n}")
                lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
            lines.append("")
    corr = [(t.split, r) for t in report.tables for r in t.rows if r.kind == "correction" and r.status == "ok"]
    if corr:
        lines += ["## Self-correction (this project's design; docs/using.md)", "",
                  "The same model with and without confidence-guided self-correction (without: its greedy "
                  "chains, its own row above). Acc: answer accuracy; MECE of the confidence the row reports "
                  "(internal levels for the vanilla model, stated levels otherwise); extra tokens: sampled + "
                  "regenerated tokens per greedy token.", "",
                  "| row | split | Acc without | Acc with | change | MECE without | MECE with | "
                  "extra tokens / greedy token | steps replaced / question |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for split, r in corr:
            c = r.correction
            gain = c.get("acc_gain")
            sign = "+" if gain is not None and gain.mean > 0 else ""
            change = "-" if gain is None else f"{sign}{100 * gain.mean:.1f} pts" + (
                f" ± {100 * gain.std:.1f}" if gain.std is not None else "")
            lines.append(f"| {r.label} | {split} | {_fmt(c.get('acc_without'))} | {_fmt(r.stats.get('accuracy'))} | "
                         f"{change} | {_fmt(c.get('mece_without'))} | {_fmt(r.stats.get('mece'))} | "
                         f"{_fmt(c.get('extra_token_ratio'))} | {_fmt(c.get('replaced_per_question'))} |")
        lines.append("")
    first = report.tables[0] if report.tables else None
    if first:
        lines += ["## Rows and their cost", "",
                  "| row | stages reused (first seed) | stages run (first seed) | seconds per seed | note |",
                  "|---|---|---|---:|---|"]
        for r in first.rows:
            lines.append(f"| {r.label} | {', '.join(r.stages_reused) or '-'} | {', '.join(r.stages_run) or '-'} | "
                         f"{_fmt_seconds(r.seconds)} | {(r.note or '').replace('|', '/')} |")
        lines.append("")
    lines += ["## The paper's table (method.md section 6)", "",
              "| paper row | " + " | ".join(f"{d} (ECE / MECE / Acc / F1)" for d in ("A-OKVQA", "ScienceQA", "CulturalVQA"))
              + " | our row |", "|---|---|---|---|---|"]
    ours = {r.paper_row: r.label + ("" if r.status == "ok" else f" ({r.status.replace('_', ' ')})")
            for t in report.tables[:1] for r in t.rows if r.paper_row}
    for name, per in PAPER_TABLE.items():
        lines.append(f"| {name} | " + " | ".join(_paper_cell(per[d]) for d in ("A-OKVQA", "ScienceQA", "CulturalVQA"))
                     + f" | {ours.get(name, 'not in this comparison')} |")
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines.append(f"- [{f}]({f})")
        lines.append("")
    return "\n".join(lines)


def _level_histogram(table: SplitTable, path: Path) -> Path | None:
    """Stacked horizontal bars: the mean share of steps at each level, one bar per row."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in table.rows if r.status == "ok" and r.level_shares]
    if not rows:
        return None
    fig = Figure(figsize=(8.0, 1.0 + 0.4 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    colours = ["#d73027", "#fc8d59", "#fee090", "#91bfdb", "#4575b4"]
    for lv in range(1, 6):
        share = np.array([r.level_shares[lv].mean if lv in r.level_shares else 0.0 for r in rows])
        ax.barh(y, share, left=left, color=colours[lv - 1], edgecolor="black", linewidth=0.4, label=f"level {lv}")
        left += share
    ax.set_yticks(y)
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of steps (mean over seeds)")
    ax.set_title(f"Confidence levels of the steps, {table.split}", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write `report.md`, `report.json`, a step-level reliability diagram per row and split (seeds
    pooled) and a level histogram per split into `out_dir`; return the paths written."""
    from mmboundary.evaluation.plots import reliability_diagram

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures: list[str] = []
    for table in report.tables:
        for r in table.rows:
            if r.status != "ok" or not r.step_confidence:
                continue
            name = _figure_name("reliability", r.row, table.split)
            seeds = ", ".join(str(s) for s in r.seeds if r.seed_status.get(s) == "ok")
            written.append(reliability_diagram(r.step_confidence, r.step_correct, out / name,
                                               title=f"{r.label}: {table.split} steps (seeds {seeds} pooled)"))
            figures.append(name)
        hist = _level_histogram(table, out / _figure_name("levels", None, table.split))
        if hist is not None:
            written.append(hist)
            figures.append(hist.name)
    report = report.model_copy(update={"figures": figures})
    md = out / "report.md"
    atomic_write_text(md, render_markdown(report, figures))
    js = out / "report.json"
    atomic_write_text(js, report.model_dump_json(indent=1) + "\n")
    return [md, js] + written


def _print_summary(report: Report) -> None:
    from rich.table import Table

    from mmboundary.progress import report_console

    console = report_console()
    for t in report.tables:
        table = Table(title=f"comparison {report.name}: {t.split} (mean ± std over seeds)")
        table.add_column("row")
        for _, h, _ in COLUMNS:
            table.add_column(h, justify="right")
        for r in t.rows:
            if r.status == "ok":
                table.add_row(r.label, *[_fmt(r.stats.get(c)) for c, _, _ in COLUMNS])
            else:
                table.add_row(r.label, f"[dim]{r.status.replace('_', ' ')}[/dim]", *[""] * (len(COLUMNS) - 1))
        console.print(table)
        for f in t.findings:
            console.print(f"  {f}", highlight=False)


def compare_main(spec_path: str | Path | None, root_dir: str | Path | None, report_only: bool = False,
                 overrides: Sequence[str] | None = None) -> Report:
    """`mmboundary compare`: run the comparison of `spec_path` (None: the built-in default,
    `CompareSpec()` = configs/compare/default.yaml) into `root_dir` (None:
    `runs/compare-<spec name>`), unless `report_only`; then rebuild the report from the saved
    results into `<root_dir>/report/` and print its tables. `overrides` are appended to the
    spec's base-config overrides. Returns the report (`Report.tables[*].rows[*].seed_status`
    says which rows failed)."""
    from rich.console import Console

    spec = load_spec(spec_path) if spec_path is not None else CompareSpec()
    if overrides:
        spec = CompareSpec.model_validate({**spec.model_dump(), "overrides": list(spec.overrides) + list(overrides)})
    root = Path(root_dir) if root_dir is not None else Path("runs") / f"compare-{spec.name}"
    err = Console(stderr=True)
    if not report_only:
        err.print(f"comparison {spec.name}: {len(spec.rows())} rows x {len(spec.seeds)} seeds into {root}")
        run_compare(spec, root)
    report = build_report(root)
    paths = write_report(report, root / "report")
    _print_summary(report)
    err.print(f"report: {paths[0]} ({len(paths) - 2} figures)")
    return report
