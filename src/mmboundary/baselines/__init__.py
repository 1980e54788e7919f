"""Baselines of the paper's comparison (method.md section 7) that need no training stage:

| method | file | confidence |
|---|---|---|
| `internal` | `internal.py` | the vanilla model's fused internal level, or one signal alone |
| `sc` | `sc.py` | self-consistency: agreement of sampled chains with the judged one |
| `multisample` | `multisample.py` | statements of sampled chains, averaged (Avg-Conf for the answer) |
| `dpv` | `dpv.py` | the model prompted for "confidence: N/5" after each step |
| `dps` | `dps.py` | the model prompted for a confidence phrase after each step |

Each returns a `BaselineResult` (`base.py`): per example the judged chain, a confidence in
[0, 1] for every step and for the answer (fallbacks flagged), and the cost; or "not applicable"
with the reason. `report.baseline_report` turns it into the evaluate stage's columns. SaySelf and
DRL need training stages: they are configurations of the pipeline's sft / rl stages, not here.
See docs/baselines.md.

`run_baseline(method, vlm, examples, config, inputs)` runs any of them by name with the inputs
it needs (`BaselineInputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mmboundary.baselines.base import (
    DEFAULT_FALLBACK,
    METHODS,
    BaselineConfig,
    BaselineResult,
    Cost,
    ExampleConfidence,
    ParseCounts,
    SamplingConfig,
)
from mmboundary.baselines.common import ExactSimilarity, instruction_following
from mmboundary.baselines.dps import DPSConfig, run_dps
from mmboundary.baselines.dpv import DPVConfig, run_dpv
from mmboundary.baselines.internal import InternalConfig, internal_confidences, run_internal
from mmboundary.baselines.multisample import MultisampleConfig, multisample_confidences, run_multisample
from mmboundary.baselines.prompted import prompted_confidences
from mmboundary.baselines.report import BaselineReport, baseline_report, confidence_columns, question_scores_of
from mmboundary.baselines.sc import SCConfig, run_sc, sc_confidences, sc_equivalence
from mmboundary.errors import ConfigError
from mmboundary.judging import judge_chains
from mmboundary.records import Example

__all__ = [
    "CONFIGS", "DEFAULT_FALLBACK", "METHODS", "BaselineConfig", "BaselineInputs", "BaselineReport", "BaselineResult",
    "Cost", "DPSConfig", "DPVConfig", "ExactSimilarity", "ExampleConfidence", "InternalConfig", "MultisampleConfig",
    "ParseCounts", "SCConfig", "SamplingConfig", "baseline_report", "confidence_columns", "instruction_following",
    "internal_confidences", "judged_result", "make_config", "multisample_confidences", "prompted_confidences",
    "question_scores_of",
    "run_baseline", "run_dps", "run_dpv", "run_internal", "run_multisample", "run_sc", "sc_confidences",
    "sc_equivalence",
]

#: The config class of each method.
CONFIGS: dict[str, type[BaselineConfig]] = {
    "internal": InternalConfig, "sc": SCConfig, "multisample": MultisampleConfig, "dpv": DPVConfig,
    "dps": DPSConfig,
}

#: What each method needs besides the model and the examples (fields of `BaselineInputs`).
NEEDS: dict[str, tuple[str, ...]] = {
    "internal": ("normalizer", "levels", "fusion"),  # + clip / similarity when the readout uses them
    "sc": ("similarity",),  # only with the encoder equivalence (`sc_equivalence`)
    "multisample": ("mapper", "similarity"),
    "dpv": (),
    "dps": ("mapper",),
}


@dataclass(frozen=True)
class BaselineInputs:
    """Everything a baseline may need besides the model and the examples, built once by the caller:
    the estimate stage's fitted `normalizer` and `levels` and the run's `fusion` config
    (`internal`); the `clip` model and TokenSAR's / the agreement's sentence `similarity`; the
    statement `mapper` (`multisample`, `dps`); the run's step `judge` (`judging.make_step_judge`;
    None: each step's truth as the chain builders set it, exact on the built-in benchmark)."""

    normalizer: Any = None
    levels: Any = None
    fusion: Any = None
    clip: Any = None
    similarity: Any = None
    mapper: Any = None
    judge: Any = None


def make_config(method: str, config: BaselineConfig | Mapping[str, Any] | None = None) -> BaselineConfig:
    """The checked config of `method` from a config object, a mapping (e.g. a YAML section), or
    None (the defaults). Unknown keys and bad values are a `ConfigError` naming them."""
    if method not in CONFIGS:
        raise ConfigError(f"unknown baseline {method!r} (known: {', '.join(METHODS)})")
    cls = CONFIGS[method]
    if config is None:
        return cls()
    if isinstance(config, BaselineConfig):
        if not isinstance(config, cls):
            raise ConfigError(f"baseline {method!r} takes a {cls.__name__}, not a {type(config).__name__}")
        return config
    try:
        return cls.model_validate(dict(config))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"baseline {method!r}: invalid config: {problems}") from e


def run_baseline(method: str, vlm, examples: Sequence[Example],
                 config: BaselineConfig | Mapping[str, Any] | None = None,
                 inputs: BaselineInputs | None = None) -> BaselineResult:
    """Run one baseline by name. A missing input is a `ConfigError` naming it (checked before any
    generation)."""
    cfg = make_config(method, config)
    inputs = inputs or BaselineInputs()
    missing = [name for name in NEEDS[method] if getattr(inputs, name) is None]
    if method == "dps" and missing and not instruction_following(vlm, cfg.instruction_following)[0]:
        missing = []  # not applicable: the mapper would not be used
    if method == "sc" and sc_equivalence(cfg, examples) == "exact":
        missing = []  # the exact step equivalence needs no sentence similarity
    if missing:
        raise ConfigError(f"baseline {method!r} needs {', '.join(missing)} (BaselineInputs)")
    if method == "internal":
        result = run_internal(vlm, examples, cfg, normalizer=inputs.normalizer, levels=inputs.levels,
                              fusion=inputs.fusion, clip=inputs.clip, similarity=inputs.similarity)
    elif method == "sc":
        result = run_sc(vlm, examples, cfg, similarity=inputs.similarity)
    elif method == "multisample":
        result = run_multisample(vlm, examples, cfg, mapper=inputs.mapper, similarity=inputs.similarity)
    elif method == "dpv":
        result = run_dpv(vlm, examples, cfg)
    else:
        result = run_dps(vlm, examples, cfg, mapper=inputs.mapper)
    return judged_result(result, examples, inputs.judge)


def judged_result(result: BaselineResult, examples: Sequence[Example], judge) -> BaselineResult:
    """`result` with the steps of every judged chain judged by `judge` (`judging.judge_chains`;
    the confidences are per step index, so they stay aligned); unchanged when `judge` is None."""
    if judge is None or not result.examples:
        return result
    chains = judge_chains([e.chain for e in result.examples], examples, judge)
    return result.model_copy(update={"examples": tuple(e.model_copy(update={"chain": c})
                                                       for e, c in zip(result.examples, chains))})
