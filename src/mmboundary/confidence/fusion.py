"""From four raw signals to one internal confidence level per step (method.md section 2).

Pipeline, all pure functions of their inputs:

1. `fit_normalizer` fits, on the warm-up corpus, a [lo, hi] range per signal; a `Normalizer`
   turns a raw value into a confidence in [0, 1] (`Normalizer.confidence`).
2. `fuse` combines a step's per-signal confidences into one fused confidence in [0, 1]
   under a `FusionConfig` (weights, pooling, ablation); `answer_step_confidence` then gives a
   step that states the final answer the confidence of the steps it rests on
   (`FusionConfig.answer_step`, a departure from the paper explained there).
3. `fit_levels` fits four thresholds on the corpus' fused confidences; `Levels.level` maps a
   fused confidence to a level 1 (least confident) .. 5 (most).
4. `score_steps` does 1-3 for a sequence of `StepSignals` and returns `StepConfidence` records.

`level_probability` / `probability_level` convert between levels and probabilities.

The fitted `Normalizer` and `Levels` are saved with the run (JSON) and reused at RL and
evaluation time, so that a level means the same thing at every stage.

Invalid input raises `ValueError` (pydantic's `ValidationError` is one) whose message names
the signal, the step or the field.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmboundary.answers import extract_answer
from mmboundary.io import atomic_write_text
from mmboundary.levels import N_LEVELS
from mmboundary.records import StepConfidence, StepSignals

__all__ = [
    "N_LEVELS",
    "SIGNALS",
    "SIMILARITIES",
    "UNCERTAINTIES",
    "FusionConfig",
    "Levels",
    "Normalizer",
    "SignalRange",
    "answer_step_confidence",
    "chain_runs",
    "fit_levels",
    "fit_normalizer",
    "fuse",
    "fuse_steps",
    "level_probability",
    "probability_level",
    "score_steps",
]

#: The four signals, named as the fields of `StepSignals`.
SIGNALS: tuple[str, ...] = ("lnlp", "mte", "token_sar", "clip_score")
#: Uncertainties (high = unsure): confidence = 1 - minmax(U).
UNCERTAINTIES: frozenset[str] = frozenset({"lnlp", "mte", "token_sar"})
#: Similarities (high = grounded): confidence = minmax(U).
SIMILARITIES: frozenset[str] = frozenset({"clip_score"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Fitted(_Model):
    """A record fitted on a corpus and saved with the run as JSON (`_what` names it in errors)."""

    _what: ClassVar[str] = "fitted"

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON (atomically); return the path."""
        path = Path(path)
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            raise ValueError(f"{path}: not a valid {cls._what} file:\n{e}") from e


def _check_signal_name(name: str, where: str) -> None:
    if name not in SIGNALS:
        raise ValueError(f"{where}: unknown signal {name!r} (known: {', '.join(SIGNALS)})")


def _check_unit(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{what}: expected a value in [0, 1], got {value!r}")
    return v


# --- 1. Normalisation ---------------------------------------------------------------------------

class SignalRange(_Model):
    """The fitted [lo, hi] of one signal (its q_low and q_high quantiles over the corpus) and
    the number of corpus values it was fitted on."""

    lo: float
    hi: float
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SignalRange":
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"lo and hi must be finite, got lo={self.lo}, hi={self.hi}")
        if self.hi < self.lo:
            raise ValueError(f"hi ({self.hi}) is below lo ({self.lo})")
        return self


class Normalizer(_Fitted):
    """Per-signal min-max normalisation to a confidence in [0, 1] (method.md section 2).

    - **[choice]** lo and hi of each signal are its `q_low` and `q_high` quantiles (default 1%
      and 99%, numpy's default linear interpolation) over the warm-up corpus, so that a few
      extreme steps do not squash every other one; values outside [lo, hi] are clipped.
    - minmax(v) = (clip(v, lo, hi) - lo) / (hi - lo). Uncertainties (`UNCERTAINTIES`: lnlp,
      mte, token_sar) give confidence 1 - minmax(v); the similarity clip_score gives minmax(v).
    - **[choice]** A signal that was constant over the corpus (hi == lo) carries no
      information; every value of it maps to 0.5 (the middle, in either direction).
    - A signal that had no value in the corpus has no range (it is absent from `ranges`);
      asking for its confidence is an error.
    """

    _what: ClassVar[str] = "normaliser"
    q_low: float = Field(default=0.01, ge=0.0, le=1.0)
    q_high: float = Field(default=0.99, ge=0.0, le=1.0)
    ranges: dict[str, SignalRange]

    @field_validator("ranges")
    @classmethod
    def _known_signals(cls, v: dict[str, SignalRange]) -> dict[str, SignalRange]:
        for name in v:
            _check_signal_name(name, "Normalizer.ranges")
        return v

    @model_validator(mode="after")
    def _quantiles_ordered(self) -> "Normalizer":
        if not self.q_low < self.q_high:
            raise ValueError(f"q_low ({self.q_low}) must be below q_high ({self.q_high})")
        return self

    def minmax(self, signal: str, value: float) -> float:
        """The clipped min-max position of `value` in the signal's [lo, hi], in [0, 1]."""
        _check_signal_name(signal, "Normalizer")
        if signal not in self.ranges:
            fitted = ", ".join(self.ranges) or "none"
            raise ValueError(f"Normalizer: signal {signal!r} had no values in the corpus the "
                             f"normaliser was fitted on (fitted: {fitted})")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"Normalizer: {signal} value must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"Normalizer: {signal} value must be finite, got {value!r}")
        r = self.ranges[signal]
        if r.hi == r.lo:
            return 0.5
        return (min(max(v, r.lo), r.hi) - r.lo) / (r.hi - r.lo)

    def confidence(self, signal: str, value: float) -> float:
        """The confidence in [0, 1] (high = confident) of one raw signal value."""
        m = self.minmax(signal, value)
        return 1.0 - m if signal in UNCERTAINTIES else m

    def confidences(self, step: StepSignals,
                    signals: Sequence[str] | None = None) -> dict[str, float]:
        """The confidence of each signal of `step` (default: all four) that is not None.

        Raises if the step has a value for a requested signal the normaliser has no range for.
        """
        out: dict[str, float] = {}
        for name in SIGNALS if signals is None else signals:
            _check_signal_name(name, "Normalizer.confidences")
            value = getattr(step, name)
            if value is None:
                continue
            try:
                out[name] = self.confidence(name, value)
            except ValueError as e:
                raise ValueError(f"step {step.step_index} of example {step.example_id!r}: "
                                 f"{e}") from e
        return out



def fit_normalizer(signals: Sequence[StepSignals], q_low: float = 0.01,
                   q_high: float = 0.99) -> Normalizer:
    """Fit lo/hi of each signal as its `q_low` / `q_high` quantiles over a corpus of steps.

    Steps where a signal is None do not count for that signal; a signal that is None on every
    step is left out of the normaliser. A NaN or infinite value is an error (it names the
    step): it is a bug upstream, not something to average over.
    """
    if not (0.0 <= q_low < q_high <= 1.0):
        raise ValueError(f"quantiles must satisfy 0 <= q_low < q_high <= 1, got q_low={q_low}, "
                         f"q_high={q_high}")
    if len(signals) == 0:
        raise ValueError("empty corpus: cannot fit a normaliser on no steps")
    values: dict[str, list[float]] = {name: [] for name in SIGNALS}
    for step in signals:
        for name in SIGNALS:
            v = getattr(step, name)
            if v is None:
                continue
            if not math.isfinite(v):
                raise ValueError(f"step {step.step_index} of example {step.example_id!r}: "
                                 f"{name} is {v}; signals must be finite")
            values[name].append(float(v))
    ranges = {}
    for name, vals in values.items():
        if vals:
            lo, hi = np.quantile(np.asarray(vals), [q_low, q_high])
            ranges[name] = SignalRange(lo=float(lo), hi=float(hi), count=len(vals))
    if not ranges:
        raise ValueError(f"no signal has a value on any of the {len(signals)} steps")
    return Normalizer(q_low=q_low, q_high=q_high, ranges=ranges)


# --- 2. Fusion ----------------------------------------------------------------------------------

class FusionConfig(_Model):
    """How per-signal confidences become one fused confidence, and how levels are fitted."""

    weights: dict[str, float] = Field(
        default_factory=lambda: {name: 0.25 for name in SIGNALS},
        description="Weight of each signal in weighted pooling. **[choice]** Equal weights 0.25. "
                    "Must be >= 0 and name every signal that is not ablated; the weights of the "
                    "signals in use are renormalised to sum to 1. A weight of 0 takes the "
                    "signal out, exactly like ablating it (also under max pooling).")
    pooling: Literal["weighted", "max"] = Field(
        default="weighted",
        description="'weighted': c = sum_k w_k c_k. 'max' (the paper's max-pooling ablation): "
                    "c = 1 - max_k (1 - c_k), i.e. the smallest confidence of the signals in "
                    "use; the weight values are then ignored (only zero vs non-zero matters).")
    levels: Literal["meanstd", "quantile", "calibrated"] = Field(
        default="meanstd",
        description="How level thresholds are fitted (see `fit_levels`): 'meanstd' = mu -1.5s, "
                    "-0.5s, +0.5s, +1.5s (the paper); 'quantile' = equal-mass 20/40/60/80% "
                    "quantiles; 'calibrated' = where the isotonic fit of step correctness on the "
                    "fused confidence (train split) crosses 0.2, 0.4, 0.6, 0.8, so that a level's "
                    "steps are right about p(L) of the time.")
    ablate: list[str] = Field(
        default_factory=list,
        description="Signals removed (ablation study); the remaining weights are renormalised.")
    answer_step: Literal["own", "premises", "weakest"] = Field(
        default="premises",
        description="The fused confidence of a step that states the final answer ('So the "
                    "answer is X'). 'own': its own signals, as in the paper. 'premises': the "
                    "mean fused confidence of the earlier steps of its chain (its own when it is "
                    "the first step). 'weakest': the smallest fused confidence of the chain up to "
                    "and including it. **[choice]** 'premises', a departure from the paper: the "
                    "answer sentence is nearly deterministic given the steps before it, so its "
                    "own token signals say the model is sure of it even after a wrong count "
                    "(measured on the default benchmark's train split: AUROC of the answer steps "
                    "alone 0.47 with 'own'; of all steps 0.710 'own', 0.753 'weakest', 0.777 "
                    "'premises'; chosen on train, see docs/results/internal-confidence.md).")

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, v: dict[str, float]) -> dict[str, float]:
        for name, w in v.items():
            _check_signal_name(name, "weights")
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {w}")
        return v

    @field_validator("ablate")
    @classmethod
    def _check_ablate(cls, v: list[str]) -> list[str]:
        for name in v:
            _check_signal_name(name, "ablate")
        if len(set(v)) != len(v):
            raise ValueError(f"ablate lists a signal twice: {v}")
        return v

    @model_validator(mode="after")
    def _check_in_use(self) -> "FusionConfig":
        kept = [s for s in SIGNALS if s not in self.ablate]
        if not kept:
            raise ValueError("every signal is ablated; at least one must remain")
        missing = [s for s in kept if s not in self.weights]
        if missing:
            raise ValueError(f"no weight for signal(s) {missing} that are not ablated; give a "
                             f"weight or ablate them")
        if not any(self.weights[s] > 0 for s in kept):
            raise ValueError(f"the signals that are not ablated ({kept}) all have weight 0")
        return self

    @property
    def signals_in_use(self) -> tuple[str, ...]:
        """The signals that enter the fused confidence: not ablated, weight > 0 (SIGNALS order)."""
        return tuple(s for s in SIGNALS if s not in self.ablate and self.weights[s] > 0)

    def normalized_weights(self) -> dict[str, float]:
        """The weights of the signals in use, renormalised to sum to 1."""
        used = self.signals_in_use
        total = sum(self.weights[s] for s in used)
        return {s: self.weights[s] / total for s in used}


def fuse(confidences: Mapping[str, float], cfg: FusionConfig | None = None) -> float:
    """The fused confidence in [0, 1] of one step's per-signal confidences (each in [0, 1]).

    Every signal in use (`cfg.signals_in_use`) must be present: a missing one is an error,
    never silently dropped (ablate it instead). Confidences of other signals are ignored.
    """
    cfg = cfg or FusionConfig()
    used = cfg.signals_in_use
    missing = [s for s in used if s not in confidences or confidences[s] is None]
    if missing:
        raise ValueError(f"fuse: no confidence for signal(s) {missing} (present: "
                         f"{sorted(confidences)}); ablate them to fuse without")
    for name in confidences:
        _check_signal_name(name, "fuse")
    c = {s: _check_unit(confidences[s], f"fuse: confidence of {s}") for s in used}
    if cfg.pooling == "max":
        fused = 1.0 - max(1.0 - c[s] for s in used)
    else:
        weights = cfg.normalized_weights()
        fused = sum(weights[s] * c[s] for s in used)
    return min(max(fused, 0.0), 1.0)  # guard against rounding just outside [0, 1]


def is_answer_step(text: str) -> bool:
    """Whether a step states the final answer ("So the answer is X", `answers.extract_answer`)."""
    return extract_answer(text) is not None


def chain_runs(signals: Sequence[StepSignals]) -> list[list[int]]:
    """Indices of `signals` grouped into chains: a chain is a run of consecutive records of one
    example whose `step_index` counts 0, 1, 2, ... (the order `estimate_signals` returns; several
    chains of one example, e.g. RL samples, are told apart by the index starting again)."""
    runs: list[list[int]] = []
    for i, s in enumerate(signals):
        prev = signals[i - 1] if i else None
        if prev is not None and s.example_id == prev.example_id and s.step_index == prev.step_index + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def answer_step_confidence(signals: Sequence[StepSignals], fused: Sequence[float],
                           mode: Literal["own", "premises", "weakest"] = "premises") -> list[float]:
    """The fused confidences of `signals` (in chain order), with every answer step's value
    replaced as `FusionConfig.answer_step` describes. Other steps are unchanged."""
    if len(fused) != len(signals):
        raise ValueError(f"answer_step_confidence: {len(signals)} steps but {len(fused)} fused values")
    if mode not in ("own", "premises", "weakest"):
        raise ValueError(f"answer_step_confidence: unknown mode {mode!r}")
    out = [float(v) for v in fused]
    if mode == "own":
        return out
    for run in chain_runs(signals):
        for k, i in enumerate(run):
            if not is_answer_step(signals[i].text):
                continue
            earlier = [float(fused[j]) for j in run[:k]]
            if mode == "weakest":
                out[i] = min(earlier + [float(fused[i])])
            elif earlier:
                out[i] = sum(earlier) / len(earlier)
    return out


# --- 3. Levels ----------------------------------------------------------------------------------

class Levels(_Fitted):
    """Four non-decreasing thresholds t1 <= t2 <= t3 <= t4 that cut fused confidence into five
    levels: c < t1 -> 1, t1 <= c < t2 -> 2, ..., c >= t4 -> 5.

    **[choice]** A confidence equal to a threshold goes to the upper level. `kind`, `mean`,
    `std` and `count` record how the thresholds were fitted (mean/std of the corpus' fused
    confidences for both kinds).
    """

    _what: ClassVar[str] = "levels"
    kind: Literal["meanstd", "quantile", "calibrated"]
    thresholds: tuple[float, float, float, float]
    mean: float
    std: float = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Levels":
        t = self.thresholds
        if not all(math.isfinite(x) for x in t):
            raise ValueError(f"thresholds must be finite, got {t}")
        if any(b < a for a, b in zip(t, t[1:])):
            raise ValueError(f"thresholds must be non-decreasing, got {t}")
        return self

    def level(self, c: float) -> int:
        """The level 1..5 of a fused confidence c in [0, 1]."""
        v = _check_unit(c, "Levels.level")
        return 1 + bisect_right(self.thresholds, v)



def isotonic_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of y on x (pool-adjacent-violators). Returns the sorted
    distinct x values and the fitted value at each (equal x are pooled first)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    xs, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse).astype(float)
    blocks: list[list[float]] = []  # [sum, count, number of distinct x]
    for s_, c_ in zip(sums, counts):
        blocks.append([s_, c_, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, c2, n2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][2] += n2
    fitted = np.concatenate([np.full(int(n), s_ / c_) for s_, c_, n in blocks])
    return xs, fitted


def fit_levels(fused_values: Sequence[float] | np.ndarray,
               kind: Literal["meanstd", "quantile", "calibrated"] = "meanstd",
               correct: Sequence[bool] | np.ndarray | None = None) -> Levels:
    """Fit level thresholds on the fused confidences of a corpus (method.md section 2).

    - 'meanstd' (the paper): mean mu and standard deviation s (**[choice]** population std,
      ddof=0) of the values; thresholds mu - 1.5s, mu - 0.5s, mu + 0.5s, mu + 1.5s. On a
      normal-looking distribution the levels hold about 7/24/38/24/7% of the steps.
    - 'quantile' (**[choice]** option): the 20/40/60/80% quantiles (numpy's linear
      interpolation), so each level holds about a fifth of the corpus.
    - 'calibrated' (this project's option): `correct` gives each step's correctness; the
      isotonic fit of correctness on the fused confidence (`isotonic_fit`) is cut where it first
      reaches 0.2, 0.4, 0.6, 0.8, the boundaries between the levels' probabilities p(L), so that
      on the fitted corpus a step's level is the one whose p(L) is nearest its estimated chance
      of being right. A boundary the fit never reaches is put above 1 (that level stays empty).

    The values must be finite, in [0, 1], at least two, and not all equal (levels of a
    constant corpus would be meaningless).
    """
    if kind not in ("meanstd", "quantile", "calibrated"):
        raise ValueError(f"fit_levels: unknown kind {kind!r} (expected 'meanstd', 'quantile' or 'calibrated')")
    v = np.asarray(fused_values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"fit_levels: expected a 1-D sequence, got shape {v.shape}")
    if v.shape[0] < 2:
        raise ValueError(f"fit_levels: need at least 2 fused confidences, got {v.shape[0]}")
    bad = ~((v >= 0.0) & (v <= 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"fit_levels: {int(bad.sum())} value(s) not in [0, 1] (first at index "
                         f"{i}: {v[i]})")
    if np.all(v == v[0]):
        raise ValueError(f"fit_levels: all {v.shape[0]} fused confidences equal {v[0]}; levels "
                         f"cannot be fitted on a constant corpus")
    mu, s = float(np.mean(v)), float(np.std(v))
    if kind == "calibrated":
        if correct is None or len(correct) != v.shape[0]:
            raise ValueError("fit_levels: 'calibrated' needs one correctness per fused confidence")
        xs, fitted = isotonic_fit(v, np.asarray(correct, dtype=float))
        above = np.nextafter(1.0, 2.0)  # a level no step reaches: above every confidence in [0, 1]
        t = tuple(float(xs[np.argmax(fitted >= p)]) if bool((fitted >= p).any()) else float(above)
                  for p in (0.2, 0.4, 0.6, 0.8))
    elif kind == "meanstd":
        t = (mu - 1.5 * s, mu - 0.5 * s, mu + 0.5 * s, mu + 1.5 * s)
    else:
        t = tuple(float(x) for x in np.quantile(v, [0.2, 0.4, 0.6, 0.8]))
    return Levels(kind=kind, thresholds=t, mean=mu, std=s, count=int(v.shape[0]))


def level_probability(level: int) -> float:
    """**[choice]** The probability a level stands for: p(L) = (L - 0.5) / 5 (0.1 .. 0.9)."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not (
            1 <= level <= N_LEVELS):
        raise ValueError(f"level must be an integer in 1..{N_LEVELS}, got {level!r}")
    return (int(level) - 0.5) / N_LEVELS


def probability_level(p: float) -> int:
    """The level whose probability p(L) is nearest to p in [0, 1]; a tie (0.2, 0.4, 0.6, 0.8)
    goes to the upper level. Inverse of `level_probability`."""
    v = _check_unit(p, "probability_level")
    # p(L) = (L - 0.5) / 5  <=>  L = 5p + 0.5; nearest integer with ties up = floor(5p + 1).
    return int(min(max(math.floor(N_LEVELS * v + 1.0), 1), N_LEVELS))


# --- 4. Steps -----------------------------------------------------------------------------------

def _recorded_signals(normalizer: Normalizer, cfg: FusionConfig) -> list[str]:
    """Signals whose confidence is recorded: those the normaliser knows plus those in use (a
    signal in use that the normaliser does not know is then reported as an error)."""
    return [s for s in SIGNALS if s in normalizer.ranges or s in cfg.signals_in_use]


def fuse_steps(signals: Sequence[StepSignals], normalizer: Normalizer,
               cfg: FusionConfig | None = None) -> list[float]:
    """The fused confidence of every step (e.g. of the warm-up corpus, to fit levels on), with
    answer steps treated as `cfg.answer_step` says (records in chain order)."""
    cfg = cfg or FusionConfig()
    names = _recorded_signals(normalizer, cfg)
    out = []
    for step in signals:
        conf = normalizer.confidences(step, names)
        try:
            out.append(fuse(conf, cfg))
        except ValueError as e:
            raise ValueError(f"step {step.step_index} of example {step.example_id!r}: {e}") from e
    return answer_step_confidence(signals, out, cfg.answer_step)


def score_steps(signals: Sequence[StepSignals], normalizer: Normalizer, levels: Levels,
                cfg: FusionConfig | None = None) -> list[StepConfidence]:
    """Per-signal confidences, fused confidence and level of every step.

    `confidences` of each record holds every signal of the step that the normaliser knows
    (ablated ones too, for analysis); only the signals in use enter `fused`. `levels` must have
    been fitted with the kind `cfg.levels` names.
    """
    cfg = cfg or FusionConfig()
    if levels.kind != cfg.levels:
        raise ValueError(f"score_steps: levels were fitted as {levels.kind!r} but the fusion "
                         f"config asks for {cfg.levels!r}")
    names = _recorded_signals(normalizer, cfg)
    fused_all = fuse_steps(signals, normalizer, cfg)
    return [StepConfidence(example_id=step.example_id, step_index=step.step_index,
                           confidences=normalizer.confidences(step, names), fused=fused,
                           level=levels.level(fused), correct=step.correct)
            for step, fused in zip(signals, fused_all)]
