"""The typed records every baseline returns, and the configuration fields they share.

A baseline (method.md section 7) answers each example with one chain (a `GeneratedChain` whose
steps the benchmark's exact checker judged, built as `mmboundary.generation` builds the
pipeline's chains) and gives

- a confidence in [0, 1] for every step of that chain and one for its final answer;
- for each of them, whether it is a *fallback*: a value the method could not compute (an
  unparsed statement, a step with no signal) and that was filled in with the method's
  documented `fallback` value. Fallbacks are counted and reported, never hidden;
- what it cost (`Cost`: generated sequences and tokens, teacher-forced passes, similarity pairs).

A baseline that does not apply to the model it is given (DPV / DPS on a model that cannot follow
instructions) returns a `BaselineResult` with `applicable=False` and the reason, and no examples:
never made-up numbers.

Records are frozen pydantic models, so a result saved as JSON (`BaselineResult.save`) is read back
checked (`BaselineResult.load`) and its report recomputed without running any model
(`mmboundary.baselines.report`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmboundary.config import GenerationConfig
from mmboundary.evaluation.matching import DEFAULT_MATCH_THRESHOLD
from mmboundary.io import atomic_write_text
from mmboundary.records import GeneratedChain
from mmboundary.statements.chain_format import summarize

__all__ = [
    "DEFAULT_FALLBACK",
    "METHODS",
    "BaselineConfig",
    "BaselineResult",
    "Cost",
    "ExampleConfidence",
    "MethodName",
    "ParseCounts",
    "SamplingConfig",
]

MethodName = Literal["internal", "sc", "multisample", "dpv", "dps"]
#: The baselines of this package, in the order of method.md section 7.
METHODS: tuple[str, ...] = ("internal", "sc", "multisample", "dpv", "dps")

#: **[choice]** The confidence given to a step or answer whose confidence a method could not
#: compute: 0.5, "no idea either way". Every such value is flagged as a fallback and counted.
DEFAULT_FALLBACK = 0.5


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _unit(value: float, what: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{what} must be a finite number in [0, 1], got {value!r}")
    return v


# --- configuration ------------------------------------------------------------------------------

class BaselineConfig(_Record):
    """Fields every baseline has.

    - `generation`: how the one chain judged per example is generated (the pipeline's
      `GenerationConfig`: greedy, 128 new tokens, batch 64 by default, as `evaluate` generates
      it), so a baseline judges the same chains as the evaluate stage's vanilla row.
    - `fallback`: see `DEFAULT_FALLBACK`.
    """

    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    fallback: float = Field(DEFAULT_FALLBACK, ge=0.0, le=1.0,
                            description="Confidence of a step or answer the method could not score "
                                        "(flagged and counted). **[choice]** 0.5.")


class SamplingConfig(BaselineConfig):
    """Fields of the baselines that sample several chains per example (SC, Multisample).

    The paper gives none of these numbers (method.md section 7); each is a **[choice]**:
    - `n_samples` 5: sampled chains per example, besides the judged (greedy) one; the paper gives
      no number, and the cost grows linearly with it (`Cost.sequences` = 1 + n_samples);
    - `temperature` 1.0: the model's own distribution, as the RL stage's rollouts sample it
      (`rl.temperature`); a lower temperature makes samples agree more and so raises every
      agreement-based confidence;
    - `seed` 0: sampling runs under `torch.manual_seed(seed)` inside a forked RNG, so a result is
      reproducible and the caller's random state is left as it was;
    - `threshold` 0.65: two steps are "the same step" when their sentence similarity is >= it;
      the default is the F1 matching's `DEFAULT_MATCH_THRESHOLD`, measured for the offline MiniLM
      bi-encoder (see `evaluation/matching.py`, including its known limitation: MiniLM rates "There
      are 2 red circles." and "There are 3 red circles." 0.885). With another similarity (a
      cross-encoder, or `ExactSimilarity`) pass a threshold measured for it.
    """

    n_samples: int = Field(5, ge=1)
    temperature: float = Field(1.0, gt=0)
    seed: int = 0
    threshold: float = Field(DEFAULT_MATCH_THRESHOLD, ge=0.0, le=1.0)


# --- results ------------------------------------------------------------------------------------

class Cost(_Record):
    """What a method spent, per example or in total.

    - `sequences` / `tokens`: sequences generated and tokens generated in them (a sequence's eos
      counts when it was generated), the judged chain included;
    - `scored_sequences`: teacher-forced passes over a chain (the internal signals);
    - `similarity_pairs`: sentence pairs scored by the sentence similarity.
    """

    sequences: int = Field(0, ge=0)
    tokens: int = Field(0, ge=0)
    scored_sequences: int = Field(0, ge=0)
    similarity_pairs: int = Field(0, ge=0)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(sequences=self.sequences + other.sequences, tokens=self.tokens + other.tokens,
                    scored_sequences=self.scored_sequences + other.scored_sequences,
                    similarity_pairs=self.similarity_pairs + other.similarity_pairs)

    @staticmethod
    def total(costs: Iterable["Cost"]) -> "Cost":
        out = Cost()
        for c in costs:
            out = out + c
        return out


class ParseCounts(_Record):
    """How the statements a method read were parsed (`statements.chain_format` failure kinds),
    over every chain it parsed (judged and sampled)."""

    chains: int = Field(ge=0)
    steps: int = Field(ge=0)
    parsed: int = Field(ge=0)
    no_comma: int = Field(ge=0)
    unmapped: int = Field(ge=0)

    @classmethod
    def of(cls, parsed_chains) -> "ParseCounts":
        """Counts of `ParsedChain`s."""
        s = summarize(list(parsed_chains))
        return cls(chains=s.chains, steps=s.steps, parsed=s.parsed, no_comma=s.no_comma, unmapped=s.unmapped)

    @property
    def parsed_share(self) -> float | None:
        return self.parsed / self.steps if self.steps else None


class ExampleConfidence(_Record):
    """One example answered by a baseline.

    - `chain`: the judged chain (steps checked by the benchmark's checker when the example has a
      scene; `correct` None otherwise). For a method whose model writes statements, the steps are
      the step texts without their statements (`generation.expressed_chain_record`).
    - `step_confidences[t]`: the confidence of `chain.steps[t]`, in [0, 1];
      `step_fallback[t]`: True when it is the method's fallback value, not a computed one.
    - `answer_confidence`: the confidence that the chain's final answer is right, in [0, 1];
      `answer_fallback` likewise.
    - `samples`: the sampled chains the confidences were computed from (SC, Multisample).
    - `cost`: what this example cost.
    """

    example_id: str = Field(min_length=1)
    chain: GeneratedChain
    step_confidences: tuple[float, ...]
    step_fallback: tuple[bool, ...]
    answer_confidence: float
    answer_fallback: bool = False
    samples: tuple[GeneratedChain, ...] = ()
    cost: Cost = Field(default_factory=Cost)

    @field_validator("step_confidences")
    @classmethod
    def _steps_in_unit(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(_unit(x, f"step confidence {i}") for i, x in enumerate(v))

    @field_validator("answer_confidence")
    @classmethod
    def _answer_in_unit(cls, v: float) -> float:
        return _unit(v, "answer confidence")

    @model_validator(mode="after")
    def _consistent(self) -> "ExampleConfidence":
        n = len(self.chain.steps)
        if len(self.step_confidences) != n or len(self.step_fallback) != n:
            raise ValueError(f"example {self.example_id!r}: the chain has {n} steps but "
                             f"{len(self.step_confidences)} step confidences and "
                             f"{len(self.step_fallback)} fallback flags")
        if self.chain.example_id != self.example_id:
            raise ValueError(f"example {self.example_id!r}: its chain answers example "
                             f"{self.chain.example_id!r}")
        return self

    @property
    def fallback_steps(self) -> int:
        return sum(self.step_fallback)


class BaselineResult(_Record):
    """A baseline's answers to a list of examples, or the reason it does not apply.

    - `method`: one of `METHODS`; `variant`: which readout of it (e.g. the internal method's
      "fused-level" or "lnlp"), None when the method has one; `label` joins them.
    - `applicable` False: the method does not apply to the model; `reason` says why and
      `examples` is empty. `applicable` True: `reason` is None.
    - `config`: the method's configuration, as JSON data.
    - `parse`: statement parsing counts, for the methods that parse statements (else None).
    """

    method: MethodName
    variant: str | None = None
    applicable: bool = True
    reason: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    examples: tuple[ExampleConfidence, ...] = ()
    parse: ParseCounts | None = None

    @model_validator(mode="after")
    def _applicability(self) -> "BaselineResult":
        if not self.applicable:
            if not self.reason:
                raise ValueError(f"{self.label}: a result that does not apply must say why (reason)")
            if self.examples:
                raise ValueError(f"{self.label}: a result that does not apply has no examples")
        elif self.reason is not None:
            raise ValueError(f"{self.label}: `reason` is only for a result that does not apply")
        ids = [e.example_id for e in self.examples]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.label}: an example is answered twice")
        return self

    @property
    def label(self) -> str:
        return self.method if self.variant is None else f"{self.method}:{self.variant}"

    @property
    def cost(self) -> Cost:
        """The total cost over all examples."""
        return Cost.total(e.cost for e in self.examples)

    @property
    def steps(self) -> int:
        return sum(len(e.step_confidences) for e in self.examples)

    @property
    def fallback_steps(self) -> int:
        return sum(e.fallback_steps for e in self.examples)

    @property
    def fallback_answers(self) -> int:
        return sum(e.answer_fallback for e in self.examples)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically); return the path."""
        path = Path(path)
        atomic_write_text(path, self.model_dump_json(indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BaselineResult":
        """Read a result written by `save`; a bad file is a `ValueError` naming it."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            raise ValueError(f"{path}: not a valid baseline result:\n{e}") from e


def not_applicable(method: MethodName, reason: str, config: BaselineConfig,
                   variant: str | None = None) -> BaselineResult:
    """The result of a method that does not apply to the model it was given."""
    return BaselineResult(method=method, variant=variant, applicable=False, reason=reason,
                          config=config.model_dump(mode="json"))
