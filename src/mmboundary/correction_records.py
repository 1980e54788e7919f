"""Self-correction's settings and records (`mmboundary.correction` re-exports every name).

`CorrectionConfig` (what triggers a resampling, how many candidates, the budget, the sampling) and
`correction_config` (overrides, checked); per question a `CorrectionResult` (the final chain, its
levels, the `Correction`s made with their `Candidate`s, the `ExtraCompute`), and a
`CorrectionRun` over many questions. The procedure that fills them is `correction.SelfCorrector`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmboundary.errors import ConfigError
from mmboundary.records import GeneratedChain

__all__ = [
    "Candidate",
    "Correction",
    "CorrectionConfig",
    "CorrectionResult",
    "CorrectionRun",
    "ExtraCompute",
    "correction_config",
]


# --- configuration ------------------------------------------------------------------------------

class CorrectionConfig(BaseModel):
    """Confidence-guided self-correction (this project's design; the paper gives no procedure)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Literal["internal", "expressed"] = Field(
        "internal", description="The confidence that decides whether a step is resampled: its "
        "'internal' level (fused signals on the model itself, the run's normaliser and levels) or "
        "the 'expressed' level its statement maps back to (models that write statements only). "
        "**[choice]** 'internal': available for every model, and what candidates are ranked by.")
    threshold: int = Field(
        2, ge=1, le=5, description="A step whose level is at or below this is resampled. "
        "**[choice]** 2: levels 1-2 hold about 30% of the vanilla model's test steps on the "
        "default run (10% + 19%), about 1.5 steps per chain.")
    samples: int = Field(
        4, ge=1, description="Candidates sampled for a low step (k). **[choice]** 4.")
    budget: int = Field(
        8, ge=0, description="Most candidate steps sampled per question, over all its low steps "
        "(0: plain greedy decoding). **[choice]** 8: two low steps at k = 4.")
    temperature: float = Field(
        0.7, gt=0, description="Sampling temperature of the candidates (plain tempered sampling, no "
        "top-k / top-p). **[choice]** 0.7, below the model's own distribution (1.0) so that "
        "candidates stay fluent; not tuned.")
    step_max_new_tokens: int = Field(
        48, gt=0, description="Most tokens sampled for one candidate step (a candidate stops at the "
        "end of its first sentence, or at the eos). **[choice]** 48: a default-benchmark step with "
        "its statement is under 25 tokens.")
    keep_original: bool = Field(
        True, description="Rank the original (greedy) step among the candidates, first, so that it "
        "is replaced only by a candidate with a strictly higher internal level. **[choice]** True.")
    unknown_is_low: bool = Field(
        False, description="Whether a step whose deciding confidence is unknown (no parsed "
        "statement for 'expressed'; internal signals that could not be computed) is resampled. "
        "**[choice]** False: an unparsed statement is a format failure, not a low confidence.")
    seed: int = Field(0, description="Seed of the candidates' sampling.")


def correction_config(base: CorrectionConfig | None = None, **overrides) -> CorrectionConfig:
    """`base` (default: the defaults) with the given fields replaced (None values are ignored);
    an invalid value is a `ConfigError` naming the field."""
    data = (base or CorrectionConfig()).model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CorrectionConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"invalid self-correction setting: {problems}") from None


# --- records ------------------------------------------------------------------------------------

class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Candidate(_Record):
    """One candidate for a low step: its sentence (statement included) as generated, its fused
    internal confidence in [0, 1] and that value's level, as ranked (an answer step by its own
    signals; None: not computable), its expressed level (None: no parsed statement, or a model
    without statements), the tokens it took (a sample: every token sampled, before the cut at its
    sentence end), whether it is the original greedy step, and whether it ended (the next sentence
    began, or the eos came) within `step_max_new_tokens` (always True for the original)."""

    text: str
    internal_level: int | None = Field(None, ge=1, le=5)
    internal_confidence: float | None = Field(None, ge=0, le=1)
    expressed_level: int | None = Field(None, ge=1, le=5)
    tokens: int = Field(ge=0)
    original: bool
    complete: bool


class Correction(_Record):
    """One low step that was resampled: its index in the chain at that time, its deciding level
    (None: unknown), the candidates (the original first when it was kept among them) and the index
    of the one kept."""

    step_index: int = Field(ge=0)
    level: int | None
    candidates: tuple[Candidate, ...]
    kept: int = Field(ge=0)

    @property
    def replaced(self) -> bool:
        """Whether a sampled candidate replaced the original step."""
        return not self.candidates[self.kept].original


class ExtraCompute(_Record):
    """What self-correction cost for one question (or a sum over questions), beyond the greedy
    chain: `sampled_steps` candidate steps sampled (at most the budget), `sampled_tokens` the
    tokens generated for them, `regenerated_tokens` greedy tokens generated again after replaced
    steps, `scored_chains` candidate chains whose internal confidence was computed (one
    teacher-forced pass each). `greedy_tokens`: the tokens of the initial greedy chain."""

    sampled_steps: int = 0
    sampled_tokens: int = 0
    regenerated_tokens: int = 0
    scored_chains: int = 0
    greedy_tokens: int = 0

    @property
    def extra_tokens(self) -> int:
        """Generated tokens beyond the greedy chain: sampled + regenerated."""
        return self.sampled_tokens + self.regenerated_tokens

    def __add__(self, other: ExtraCompute) -> ExtraCompute:
        return ExtraCompute(**{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields})


class CorrectionResult(_Record):
    """The final chain of one question (the `GeneratedChain` `evaluate` scores: expressed levels
    in its steps for a model that writes statements), the internal and expressed level of each of
    its steps, the corrections made, and the extra compute."""

    example_id: str
    chain: GeneratedChain
    internal_levels: tuple[int | None, ...]
    expressed_levels: tuple[int | None, ...]
    corrections: tuple[Correction, ...] = ()
    compute: ExtraCompute = Field(default_factory=ExtraCompute)

    @property
    def replaced_steps(self) -> int:
        return sum(c.replaced for c in self.corrections)


class CorrectionRun(_Record):
    """Self-correction over many examples, in their order."""

    config: CorrectionConfig
    results: tuple[CorrectionResult, ...]

    @property
    def chains(self) -> list[GeneratedChain]:
        return [r.chain for r in self.results]

    @property
    def internal_levels(self) -> list[list[int | None]]:
        return [list(r.internal_levels) for r in self.results]

    @property
    def expressed_levels(self) -> list[list[int | None]]:
        return [list(r.expressed_levels) for r in self.results]

    def compute_summary(self) -> dict[str, float | int | None]:
        """Totals and per-question means of the extra compute, and how many steps were resampled
        and replaced."""
        total = sum((r.compute for r in self.results), ExtraCompute())
        n = len(self.results)
        out: dict[str, float | int | None] = {"questions": n, **total.model_dump(),
                                               "extra_tokens": total.extra_tokens,
                                               "resampled_steps": sum(len(r.corrections) for r in self.results),
                                               "replaced_steps": sum(r.replaced_steps for r in self.results)}
        for k in ("sampled_steps", "extra_tokens", "scored_chains", "resampled_steps", "replaced_steps"):
            out[f"{k}_per_question"] = out[k] / n if n else None
        out["extra_token_ratio"] = total.extra_tokens / total.greedy_tokens if total.greedy_tokens else None
        return out
