"""The rows of the paper's comparison that are configurations of this pipeline (method.md section
6: the warm-up and RL ablations of the paper's table), as named config overlays: lists of
`key=value` overrides, never code edits.

Every row is defined relative to **the full method**: the run config (the built-in default, or the
comparison's config and overrides) with the `rl` stage added to its stages
(`full_overrides`). A row's overrides are applied on top of that; a row with its own run is a fork
of the full method's run (`stages.fork_run`), which reuses every finished stage the overlay leaves
valid (`stages.reusable_stages`), so the shared stages are computed once.

| row | overlay on the full method | model of the row | paper row |
|---|---|---|---|
| `vanilla` | none (the full run's vanilla model, internal levels) | vanilla | - |
| `constant_level` | none (vanilla chains, every step at one level fitted on train) | vanilla | - |
| `kind_prior` | none (vanilla chains, each step at its kind's level fitted on train) | vanilla | - |
| `full` | none | rl | MMBoundary |
| `sft_only` (alias `wo_rl`) | none (the full run's SFT model: no extra run) | sft | MMBoundary w/o RL (SFT only) |
| `wo_lnlp` / `wo_mte` / `wo_token_sar` / `wo_clip_score` | `estimate.fusion.ablate=[<signal>]` | rl | w/o that signal |
| `max_pooling` | `estimate.fusion.pooling=max` | rl | max pooling |
| `wo_mapping` | `statements.kind=numeric` ("confidence 4/5" instead of a statement) | rl | w/o S-S mapping |
| `wo_r_ka` / `wo_r_ec` / `wo_r_cs` | `rl.reward.alpha=0` / `beta=0` / `gamma=0` | rl | w/o that reward |
| `drl` | `rl.init=vanilla`, stages without `sft_data` / `sft` | rl | DRL (baseline) |
| `expected` | `rl.algorithm=expected`, `rl.level_temperature=3`, `rl.reward.gamma=0` | rl | - (this project's) |
| `sayself` | `statements.granularity=answer`, `rl.reward.alpha=0`, `rl.reward.gamma=0` | rl | SaySelf (baseline) |

Rows the config cannot express yet are not faked: `row_availability` validates the overlay against
the config schema and returns the reason a row cannot run. DRL starts the `rl` stage from the vanilla
model (`rl.init=vanilla`). SaySelf is the same pipeline at answer granularity
(`statements/granularity.py`): one statement after the answer, learned by SFT, then PPO whose only
reward is the answer-level R_EC. A comparison reports rows it cannot run as "not available", with
the reason.

Overlays *set* keys: `estimate.fusion.ablate=[lnlp]` replaces a list the base config may already
have, it does not extend it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mmboundary.config import STAGE_NAMES as STAGES
from mmboundary.config import RunConfig, load_config
from mmboundary.errors import ConfigError

__all__ = [
    "ABLATIONS",
    "ALIASES",
    "FULL_STAGES",
    "METHODS",
    "REFERENCES",
    "ROWS",
    "Row",
    "full_overrides",
    "resolve_row",
    "row_availability",
    "row_config",
    "row_model",
    "row_overrides",
]

#: Stages of the full method (every stage, `rl` included).
FULL_STAGES: tuple[str, ...] = tuple(STAGES)
#: Stages without the `rl` stage (a comparison with `with_rl: false`).
SFT_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s != "rl")


def _stages(stages: Sequence[str]) -> str:
    return f"stages=[{','.join(stages)}]"


class Row(BaseModel):
    """One row of the comparison that the pipeline itself produces.

    - `overrides`: applied on top of the full method's config (`full_overrides`); empty for a
      row read from the full method's own run.
    - `own_run`: False when the row is a model of the full method's run (vanilla, SFT only, the
      full method itself): no extra run.
    - `model`: which evaluated model of the row's run gives the row: "final" = `rl` when the run
      has the `rl` stage, else `sft`.
    - `needs_rl`: the row only makes sense when the comparison runs the `rl` stage.
    - `unavailable`: the reason the row cannot be run with the current config schema, when that
      is known without validating (SaySelf); other rows are validated by `row_availability`.
    - `paper_row`: the row of method.md's table (section 6) it matches, if any.
    - `levels`: where the row's step levels come from: "model" (the model's own: its statements,
      or the vanilla model's internal levels), or a reference that knows nothing about the step
      but what the vanilla model's train chains say (`evaluation.references`): "constant" (one
      level for every step, `constant_level`), "kind_prior" (one level per kind of step,
      `kind_prior_levels`). A method that does not beat them has learned nothing per step.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    label: str
    kind: Literal["reference", "method", "ablation"]
    group: Literal["reference", "method", "warm-up", "rl"]
    overrides: tuple[str, ...] = ()
    own_run: bool = True
    model: Literal["final", "vanilla", "sft", "rl"] = "final"
    needs_rl: bool = False
    unavailable: str | None = None
    paper_row: str | None = None
    description: str = ""
    levels: Literal["model", "constant", "kind_prior"] = "model"


_SIGNAL_LABELS = {"lnlp": "U_LNLP", "mte": "U_MTE", "token_sar": "U_TokenSAR", "clip_score": "U_CLIPScore"}

_ROWS: list[Row] = [
    Row(name="vanilla", label="Vanilla (internal levels)", kind="reference", group="reference", own_run=False,
        model="vanilla", description="The vanilla model's fused internal confidence as levels, no training: the "
        "evaluate stage's vanilla row of the full method's run."),
    Row(name="constant_level", label="Reference: one constant level", kind="reference", group="reference",
        own_run=False, model="vanilla", levels="constant",
        description="The vanilla model's evaluated chains with every step at one level, the level closest to the "
        "share of correct steps in its train chains (evaluation.references.constant_level): the calibration "
        "of knowing only the base rate."),
    Row(name="kind_prior", label="Reference: per-kind prior level", kind="reference", group="reference",
        own_run=False, model="vanilla", levels="kind_prior",
        description="The vanilla model's evaluated chains with each step at the level of its kind of claim "
        "(count, attribute, spatial, ...), chosen on its train chains (evaluation.references.kind_prior_levels): "
        "the calibration of knowing only which kind of step it is."),
    Row(name="sayself", label="SaySelf (answer-level statement)", kind="method", group="method",
        overrides=("statements.granularity=answer", "rl.reward.alpha=0", "rl.reward.gamma=0"), model="rl",
        needs_rl=True, paper_row="SaySelf",
        description="Answer-level confidence learned by SFT, then RL with an answer-level calibration reward "
                    "(method.md section 7): one statement after the final step (the answer's level: the mean of "
                    "its steps' internal levels), PPO on one answer-level step per response with R_EC only; "
                    "every step carries the answer's level at evaluation."),
    Row(name="drl", label="DRL (RL without warm-up)", kind="method", group="method",
        overrides=("rl.init=vanilla", _stages(("data", "base", "estimate", "rl", "evaluate"))), model="rl",
        needs_rl=True, description="PPO straight from the vanilla model, no SFT warm-up (method.md section 7): "
        "`rl.init=vanilla`; the vanilla model never wrote a statement, so its steps start unparsed."),
    Row(name="expected", label="SFT + expected-reward RL, w/o R_CS (this project)", kind="method",
        group="method", overrides=("rl.algorithm=expected", "rl.level_temperature=3", "rl.reward.gamma=0"),
        model="rl", needs_rl=True,
        description="Not in the paper: the rl stage maximises the exact expected per-step reward over the five "
        "levels (`rl.algorithm: expected`, training/level_objective.py) with R_KA + R_EC, the setting that "
        "kept the SFT model's calibration on the tiny default where PPO with the paper's reward made it worse "
        "(docs/results/rl.md)."),
    Row(name="sft_only", label="MMBoundary w/o RL (SFT only)", kind="method", group="method", own_run=False,
        model="sft", paper_row="MMBoundary w/o RL (SFT only)",
        description="The full method's warm-up model (its `sft` stage), before PPO: the paper's 'w/o RL' row."),
]
_ROWS += [
    Row(name=f"wo_{s}", label=f"w/o {lab}", kind="ablation", group="warm-up",
        overrides=(f"estimate.fusion.ablate=[{s}]",),
        description=f"{lab} left out of the fused internal confidence (the levels of the SFT data and of the "
                    "rl stage's R_CS change with it).")
    for s, lab in _SIGNAL_LABELS.items()
]
_ROWS += [
    Row(name="max_pooling", label="max pooling", kind="ablation", group="warm-up",
        overrides=("estimate.fusion.pooling=max",),
        description="Max pooling of the signals instead of the weighted mean: the fused confidence is the "
                    "smallest of the signals' confidences (confidence.fusion.FusionConfig.pooling)."),
    Row(name="wo_mapping", label="w/o S-S mapping", kind="ablation", group="warm-up",
        overrides=("statements.kind=numeric",),
        description="No score-to-statement mapping: the model writes 'confidence N/5' after each step instead "
                    "of a natural-language statement (statements.mapping.NumericMapper)."),
    Row(name="wo_r_ka", label="w/o R_KA", kind="ablation", group="rl", overrides=("rl.reward.alpha=0",),
        needs_rl=True, description="PPO without the knowledge-accuracy reward (alpha = 0)."),
    Row(name="wo_r_ec", label="w/o R_EC", kind="ablation", group="rl", overrides=("rl.reward.beta=0",),
        needs_rl=True, description="PPO without the expected-calibration reward (beta = 0)."),
    Row(name="wo_r_cs", label="w/o R_CS", kind="ablation", group="rl", overrides=("rl.reward.gamma=0",),
        needs_rl=True, description="PPO without the self-calibration reward (gamma = 0)."),
    Row(name="full", label="MMBoundary (full)", kind="method", group="method", own_run=False, paper_row="MMBoundary",
        description="The full method: SFT warm-up then PPO with R_KA + R_EC + R_CS (the `rl` model)."),
]

#: Every pipeline row by name, in report order (reference, methods, ablations, the full method last).
ROWS: dict[str, Row] = {r.name: r for r in _ROWS}
#: Other names accepted for a row.
ALIASES: dict[str, str] = {"wo_rl": "sft_only", "mmboundary": "full"}
#: Rows that are methods (or the vanilla reference), and rows that are ablations; the reference
#: rows whose levels are not the model's (`Row.levels`), listed under `references` in a spec.
METHODS: tuple[str, ...] = tuple(r.name for r in _ROWS if r.kind != "ablation" and r.levels == "model")
REFERENCES: tuple[str, ...] = tuple(r.name for r in _ROWS if r.levels != "model")
ABLATIONS: tuple[str, ...] = tuple(r.name for r in _ROWS if r.kind == "ablation")


def resolve_row(name: str) -> Row:
    """The row of a name or alias; an unknown name is a `ConfigError` listing the known ones."""
    key = ALIASES.get(name, name)
    if key not in ROWS:
        raise ConfigError(f"unknown comparison row {name!r} (known: {', '.join(ROWS)}; aliases: "
                          f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    return ROWS[key]


def full_overrides(with_rl: bool = True) -> list[str]:
    """The overlay that makes a run config the full method: every stage (`rl` included), or every
    stage but `rl` when the comparison runs without it."""
    return [_stages(FULL_STAGES if with_rl else SFT_STAGES)]


def row_overrides(name: str, with_rl: bool = True) -> list[str]:
    """The overrides of a row relative to the base run config: the full method's overlay, then the
    row's own keys (later keys win)."""
    return full_overrides(with_rl) + list(resolve_row(name).overrides)


def row_config(name: str, config: str | Path | None = None, overrides: Sequence[str] = (),
               with_rl: bool = True) -> RunConfig:
    """The validated run config of a row: `config` (None: the built-in default) with `overrides`,
    then the row's overlay (`row_overrides`). A key the schema does not have is a `ConfigError`."""
    return load_config(config, list(overrides) + row_overrides(name, with_rl))


def row_availability(name: str, config: str | Path | None = None, overrides: Sequence[str] = (),
                     with_rl: bool = True) -> str | None:
    """None when the row can be run on this base config, else the reason it cannot."""
    row = resolve_row(name)
    if row.unavailable:
        return row.unavailable
    if row.needs_rl and not with_rl:
        return "this comparison runs without the rl stage (with_rl: false)"
    try:
        row_config(name, config, overrides, with_rl)
    except ConfigError as e:
        reason = f"the config cannot express it: {e}"
        if name == "drl":
            reason = ("the rl stage always starts from the run's sft/model (stages/rl.py stage_rl) and the "
                      "config has no switch to start it from the vanilla model (proposed: rl.init: sft | vanilla, "
                      f"with the stages data, base, estimate, rl, evaluate); {reason}")
        return reason
    return None


def row_model(row: Row | str, cfg: RunConfig) -> str:
    """The evaluated model ('vanilla', 'sft' or 'rl') that gives a row in a run with config `cfg`."""
    row = resolve_row(row) if isinstance(row, str) else row
    if row.model != "final":
        return row.model
    return "rl" if "rl" in cfg.stages else "sft"
