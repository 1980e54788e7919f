"""Baseline `internal`: the vanilla model's internal confidence read out without any training.

Method (method.md section 2, and the paper's comparison of internal signals): each step of the
model's own greedy chain gets the four uncertainty signals of one teacher-forced pass (U_LNLP,
U_MTE, U_TokenSAR, U_CLIPScore: `confidence.estimator.estimate_signals`), normalised with the
run's fitted `Normalizer` and fused under its `FusionConfig` (`confidence.fusion`). Readouts
(`InternalConfig.source` / `readout`):

- "fused" + "level" (default): p(L) = (L - 0.5) / 5 of the step's level under the run's fitted
  `Levels`: exactly the vanilla row of the evaluate stage (same chains, same levels);
- "fused" + "continuous": the fused confidence itself, in [0, 1], without the cut into levels;
- one signal alone ("lnlp", "mte", "token_sar", "clip_score"): that signal's normalised
  confidence (1 - minmax for the uncertainties, minmax for CLIPScore), continuous.

Where it departs from the paper: the paper reports no "internal signal alone" row; these
readouts are here to show what the fusion, the levels and the training add. **[choice]** A step
that states the final answer is scored as the run's `FusionConfig.answer_step` says (default:
the mean confidence of the steps before it, a departure of this project explained there), for a
single signal too, so that every readout treats answer steps alike. The answer's confidence is
that of the chain's last step, as in the evaluate stage.

The normaliser, levels and fusion config are inputs (the estimate stage's `normalizer.json`,
`levels.json` and `estimate.fusion`), as the rl stage reuses them (`confidence.scorer`): a level means the same thing
here as in every stage. Fallbacks: a chain with a step that lacks a signal the readout needs (the
step was cut by the model's `max_length`, so its signals are None) gets `fallback` for every step
and the answer (**[choice]**: per chain, since an answer step's confidence depends on the steps
before it); an empty chain gets `fallback` for its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from mmboundary.baselines.base import BaselineConfig, BaselineResult, Cost, ExampleConfidence
from mmboundary.baselines.common import generate, load_images
from mmboundary.confidence.estimator import estimate_signals
from mmboundary.confidence.fusion import (
    SIGNALS,
    FusionConfig,
    Levels,
    Normalizer,
    fuse_steps,
    level_probability,
    score_steps,
)
from mmboundary.generation import chain_record
from mmboundary.records import Example, GeneratedChain, StepSignals

__all__ = ["InternalConfig", "internal_confidences", "run_internal"]

InternalSource = Literal["fused", "lnlp", "mte", "token_sar", "clip_score"]


class InternalConfig(BaselineConfig):
    """- `source`: "fused" (the run's fusion) or one signal alone;
    - `readout`: "level" (p of the level; only with "fused") or "continuous"; when not given,
      "level" for "fused" and "continuous" for a single signal;
    - `batch_size`: chains per teacher-forced batch of `estimate_signals` (16, as `estimate`)."""

    source: InternalSource = "fused"
    readout: Literal["level", "continuous"] = "level"
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _default_readout(cls, data):
        if isinstance(data, dict) and data.get("readout") is None and data.get("source", "fused") != "fused":
            data = {**data, "readout": "continuous"}
        return data

    @model_validator(mode="after")
    def _level_needs_fusion(self) -> "InternalConfig":
        if self.readout == "level" and self.source != "fused":
            raise ValueError(f"internal: readout 'level' needs source 'fused' (levels are fitted on the "
                             f"fused confidence); use readout 'continuous' for {self.source!r} alone")
        return self

    @property
    def variant(self) -> str:
        return "fused-level" if self.readout == "level" else self.source


def _readout_fusion(cfg: InternalConfig, fusion: FusionConfig) -> FusionConfig:
    """The fusion config of the readout: the run's, or one that keeps a single signal (weight 1,
    the others ablated) with the run's answer-step rule and level kind."""
    if cfg.source == "fused":
        return fusion
    return FusionConfig(weights={cfg.source: 1.0}, ablate=[s for s in SIGNALS if s != cfg.source],
                        pooling="weighted", levels=fusion.levels, answer_step=fusion.answer_step)


def _check_inputs(cfg: InternalConfig, normalizer: Normalizer, levels: Levels, fusion: FusionConfig) -> FusionConfig:
    used = _readout_fusion(cfg, fusion)
    unfitted = [s for s in used.signals_in_use if s not in normalizer.ranges]
    if unfitted:
        raise ValueError(f"internal ({cfg.variant}): the normaliser has no range for {unfitted} "
                         f"(fitted: {sorted(normalizer.ranges)})")
    if cfg.readout == "level" and levels.kind != fusion.levels:
        raise ValueError(f"internal: levels were fitted as {levels.kind!r} but the fusion config asks "
                         f"for {fusion.levels!r}")
    return used


def internal_confidences(chains: Sequence[GeneratedChain], signals: Sequence[StepSignals], cfg: InternalConfig,
                         normalizer: Normalizer, levels: Levels, fusion: FusionConfig,
                         costs: Sequence[Cost] | None = None) -> list[ExampleConfidence]:
    """The readout of `cfg` for chains whose steps have `signals` (every step of every chain, in
    chain then step order, as `estimate_signals` returns them). Pure: no model is run.
    `costs[i]`: what chain i cost (default: nothing recorded)."""
    used = _check_inputs(cfg, normalizer, levels, fusion)
    if len(signals) != sum(len(c.steps) for c in chains):
        raise ValueError(f"internal: {len(signals)} step signals for {sum(len(c.steps) for c in chains)} steps")
    if costs is not None and len(costs) != len(chains):
        raise ValueError(f"internal: {len(costs)} costs for {len(chains)} chains")
    out = []
    k = 0
    for i, chain in enumerate(chains):
        mine = list(signals[k:k + len(chain.steps)])
        k += len(chain.steps)
        for j, s in enumerate(mine):
            if s.example_id != chain.example_id or s.step_index != j:
                raise ValueError(f"internal: the signals of chain {chain.example_id!r} step {j} belong to "
                                 f"{s.example_id!r} step {s.step_index}")
        complete = all(getattr(s, name) is not None for s in mine for name in used.signals_in_use)
        if mine and complete:
            if cfg.readout == "level":
                conf = [level_probability(c.level) for c in score_steps(mine, normalizer, levels, used)]
            else:
                conf = fuse_steps(mine, normalizer, used)
            fallback = [False] * len(conf)
        else:
            conf = [cfg.fallback] * len(mine)
            fallback = [True] * len(mine)
        out.append(ExampleConfidence(
            example_id=chain.example_id, chain=chain, step_confidences=tuple(conf), step_fallback=tuple(fallback),
            answer_confidence=conf[-1] if conf else cfg.fallback,
            answer_fallback=fallback[-1] if fallback else True,
            cost=costs[i] if costs is not None else Cost()))
    return out


def run_internal(vlm, examples: Sequence[Example], cfg: InternalConfig | None = None, *, normalizer: Normalizer,
                 levels: Levels, fusion: FusionConfig, clip=None, similarity=None) -> BaselineResult:
    """Generate each example's chain (`cfg.generation`, greedy by default), compute the signals the
    readout needs on `vlm` (`clip` for clip_score, `similarity` for token_sar) and read them out
    (`internal_confidences`)."""
    cfg = cfg or InternalConfig()
    used = _check_inputs(cfg, normalizer, levels, fusion)
    gen = cfg.generation
    images = load_images(examples)
    outputs = generate(vlm, [(ex.question, ex.choices, images[ex.id]) for ex in examples],
                       max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size, do_sample=gen.do_sample,
                       temperature=gen.temperature)
    chains = [chain_record(ex, o.text) for ex, o in zip(examples, outputs)]
    signals = estimate_signals(vlm, clip, similarity, examples, chains, batch_size=cfg.batch_size,
                               signals=used.signals_in_use, progress=False)
    costs = [Cost(sequences=1, tokens=o.tokens, scored_sequences=int(bool(c.steps))) for o, c in zip(outputs, chains)]
    records = internal_confidences(chains, signals, cfg, normalizer, levels, fusion, costs)
    return BaselineResult(method="internal", variant=cfg.variant, config=cfg.model_dump(mode="json"),
                          examples=tuple(records))
