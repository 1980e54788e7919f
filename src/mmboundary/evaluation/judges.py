"""Step judges: whether each generated reasoning step is correct (method.md sections 5-6).

A step judge turns example k's generated step texts `steps[k]` (confidence statements already
stripped) into one `StepVerdict` per step: `correct` (the step correctness y_t), `degree` (the
matching degree m_t, R_KA,t = 2 m_t - 1), and for a text judge the index of the matched
reference step in `example.chain` and the pair's raw similarity. Every judge has ONE signature,
`judge(steps, examples) -> list[tuple[StepVerdict | None, ...]]`, and is registered by name
(`register_judge`, `JUDGES`, `get_judge_class`):

- `ExactJudge` ("exact"): the built-in benchmark's checker (`check_step`); needs `example.scene`
  (ValueError naming the example otherwise); degree 1.0 or 0.0, no reference, no similarity.
- `EncoderJudge` ("encoder", `similarity`, `threshold`): the greedy one-to-one matching of
  `evaluation.matching` (`match_matrix`: pairs with similarity >= threshold, highest first); a
  step is correct iff it is matched; degree = its pair's similarity clamped to [0, 1].
- `ConsistentJudge` ("consistent", `similarity`, `threshold`): the same candidate pairs, but the
  greedy matching takes every consistent pair (`evaluation.consistency.consistent`: the same
  numbers, colours, positions, sizes, comparisons, proper nouns and negation parity) before any
  inconsistent one. The sort key (**[choice]**) is (inconsistent, -similarity, predicted index,
  reference index), so a step that agrees with some reference step above the threshold is
  matched to it even when a contradicting reference step scores higher. A step is matched when
  it gets any partner; it is correct iff it is matched AND its pair is consistent. A matched but
  inconsistent step keeps its reference index and similarity (what it was compared with) and is
  wrong. E.g. reference ["There are 3 red circles", "There are 2 blue squares"], step "There are
  2 red circles." -> matched to reference 0 (0.885 with MiniLM) but inconsistent on numbers:
  wrong; the encoder judge calls it right. A step that is a closed arithmetic or numeric
  comparison claim ("3 minus 1 is 2.") is decided by arithmetic (`consistency.arithmetic_truth`;
  degree 1 / 0, no reference) and takes no part in the matching (**[choice]**, added after the
  first measurement: on the built-in benchmark's train steps, most true steps this judge called
  wrong were right sums of counts that differ from the reference chain's; docs/results/step-judges.md).

Both text judges score every (step, reference step) pair of every example with ONE
`similarity.pairwise` call (none when there is no pair). Reference texts are compared as given:
the authors' reference steps lack the final period, which the consistency ignores
(`consistency.claims`) and which moves MiniLM's score little (measured: "So the answer is 3." /
"So the answer is 3" 0.985; "There are 2 red circles." / "There are 3 red circles" 0.871, with
the period 0.885).

Degree (**[choice]**): a wrong step earns degree 0, so R_KA = -1 for it, as with exact truth; a
right one earns its similarity, so R_KA lies in [2 * threshold - 1, 1] for text judges.

Empty cases (**[choice]**): an example with no steps gets an empty tuple; an example with an empty
reference chain gets None for each of its steps from a text judge (nothing to judge against: not
"wrong"); the exact judge does not read the chain.

Thresholds are per similarity model and must be measured for it (`evaluation.matching` records
0.65 for the MiniLM bi-encoder, measured there for plain matching); no default is claimed here:
the caller passes one.

`agreement(judged, exact)` compares a judge's verdicts with exact truth where both exist
(agreement, precision and recall of "correct", Cohen's kappa).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmboundary.data.benchmark.checker import check_step
from mmboundary.evaluation.consistency import Claims, arithmetic_truth, claims, consistent
from mmboundary.evaluation.matching import PairSimilarity, match_matrix, similarity_matrices
from mmboundary.records import Example

__all__ = [
    "JUDGES",
    "ConsistentJudge",
    "EncoderJudge",
    "ExactJudge",
    "JudgeAgreement",
    "StepJudge",
    "StepVerdict",
    "agreement",
    "get_judge_class",
    "register_judge",
]


class StepVerdict(BaseModel):
    """One step's verdict: `correct` (y_t), `degree` (m_t in [0, 1]), the index of the matched
    reference step in `example.chain` and the pair's raw similarity (None: unmatched, or the
    exact judge)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    correct: bool
    degree: float = Field(ge=0, le=1)
    reference: int | None = Field(None, ge=0)
    similarity: float | None = None


Verdicts = list[tuple[StepVerdict | None, ...]]


class StepJudge(Protocol):
    """Judges example k's generated steps `steps[k]` against `examples[k]`."""

    name: str

    def judge(self, steps: Sequence[Sequence[str]], examples: Sequence[Example]) -> Verdicts: ...


# --- Registry -----------------------------------------------------------------------------------

#: name -> judge class, filled by `register_judge`.
JUDGES: dict[str, type] = {}
J = TypeVar("J", bound=type)


def register_judge(name: str) -> Callable[[J], J]:
    """Register the decorated class as judge `name` (and set its `name`)."""
    def wrap(cls: J) -> J:
        if name in JUDGES:
            raise ValueError(f"step judge {name!r} is already registered")
        cls.name = name
        JUDGES[name] = cls
        return cls
    return wrap


def get_judge_class(name: str) -> type:
    """The judge class registered as `name`."""
    try:
        return JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown step judge {name!r}; registered: {', '.join(sorted(JUDGES))}") from None


# --- Shared checks ------------------------------------------------------------------------------

def _checked(steps: Sequence[Sequence[str]], examples: Sequence[Example]) -> list[list[str]]:
    """`steps` as lists, after checking that there is one list of strings per example."""
    if len(steps) != len(examples):
        if len(steps) < len(examples):
            raise ValueError(f"{len(steps)} step lists for {len(examples)} examples: example "
                             f"{examples[len(steps)].id} has none")
        last = examples[-1].id if examples else None
        raise ValueError(f"{len(steps)} step lists for {len(examples)} examples: step list {len(examples)} "
                         f"has no example (last example: {last})")
    out = []
    for s, e in zip(steps, examples):
        if isinstance(s, str):
            raise TypeError(f"example {e.id}: steps must be a sequence of step texts, not one string")
        s = list(s)
        if not all(isinstance(t, str) for t in s):
            raise TypeError(f"example {e.id}: every step must be a string")
        out.append(s)
    return out


def _clamp(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


_WRONG = StepVerdict(correct=False, degree=0.0)


# --- Judges -------------------------------------------------------------------------------------

@register_judge("exact")
class ExactJudge:
    """Exact truth from the benchmark's checker (see the module docstring)."""

    name: ClassVar[str]

    def judge(self, steps: Sequence[Sequence[str]], examples: Sequence[Example]) -> Verdicts:
        texts = _checked(steps, examples)
        for e in examples:
            if e.scene is None:
                raise ValueError(f"example {e.id} has no scene: the exact judge needs one")
        return [tuple(StepVerdict(correct=True, degree=1.0) if check_step(t, e) else _WRONG for t in s)
                for s, e in zip(texts, examples)]


class _TextJudge:
    """A judge against the reference chain with an injected similarity and its threshold."""

    name: ClassVar[str]

    def __init__(self, similarity: PairSimilarity, threshold: float):
        if not math.isfinite(float(threshold)):
            raise ValueError(f"{self.name} judge: threshold must be finite, got {threshold!r}")
        self.similarity = similarity
        self.threshold = float(threshold)

    def judge(self, steps: Sequence[Sequence[str]], examples: Sequence[Example]) -> Verdicts:
        preds = _checked(steps, examples)
        refs = [[r.text for r in e.chain] for e in examples]
        out: Verdicts = []
        for p, r, m in zip(preds, refs, similarity_matrices(preds, refs, self.similarity)):
            out.append(tuple(self._verdicts(p, r, m)) if r else (None,) * len(p))
        return out

    def _verdicts(self, preds: list[str], refs: list[str], sim: np.ndarray) -> list[StepVerdict]:
        raise NotImplementedError


@register_judge("encoder")
class EncoderJudge(_TextJudge):
    """Correct iff matched by `evaluation.matching`'s greedy matching (see the module docstring)."""

    def _verdicts(self, preds: list[str], refs: list[str], sim: np.ndarray) -> list[StepVerdict]:
        out = [_WRONG] * len(preds)
        for p in match_matrix(sim, self.threshold):
            out[p.predicted] = StepVerdict(correct=True, degree=_clamp(p.similarity), reference=p.reference,
                                           similarity=p.similarity)
        return out


@register_judge("consistent")
class ConsistentJudge(_TextJudge):
    """Matched consistent pairs first; correct iff matched and consistent (see the module docstring)."""

    def _verdicts(self, preds: list[str], refs: list[str], sim: np.ndarray) -> list[StepVerdict]:
        pc: list[Claims] = [claims(t) for t in preds]
        rc: list[Claims] = [claims(t) for t in refs]
        closed = [arithmetic_truth(t) for t in preds]  # decided by arithmetic, not matched
        candidates = sorted(
            (not consistent(pc[i], rc[j]), -float(sim[i, j]), int(i), int(j))
            for i, j in zip(*np.nonzero(sim >= self.threshold)) if closed[i] is None)
        out = [_WRONG if c is None else StepVerdict(correct=c, degree=float(c), reference=None, similarity=None)
               for c in closed]
        used_pred: set[int] = set()
        used_ref: set[int] = set()
        for inconsistent, neg_s, i, j in candidates:
            if i in used_pred or j in used_ref:
                continue
            used_pred.add(i)
            used_ref.add(j)
            s = -neg_s
            out[i] = StepVerdict(correct=not inconsistent, degree=0.0 if inconsistent else _clamp(s),
                                 reference=j, similarity=s)
        return out


# --- Agreement with exact truth -----------------------------------------------------------------

class JudgeAgreement(BaseModel):
    """A judge's verdicts against exact truth on the same steps: `n` steps, `agreement` (share of
    equal verdicts), `precision` and `recall` of "correct", Cohen's `kappa`. None where undefined
    (no steps; 0/0; kappa when both are constant and equal, chance agreement 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0)
    agreement: float | None
    precision: float | None
    recall: float | None
    kappa: float | None


def _bools(values: Sequence[bool], what: str) -> list[bool]:
    out = list(values)
    for v in out:
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"agreement: {what} must hold booleans, got {type(v).__name__}")
    return [bool(v) for v in out]


def agreement(judged: Sequence[bool], exact: Sequence[bool]) -> JudgeAgreement:
    """Agreement of `judged` (a judge's `correct`) with `exact` (exact truth), step by step.

    precision = judged correct and exactly correct / judged correct; recall = the same / exactly
    correct; kappa = (p_o - p_e) / (1 - p_e), p_o the agreement and p_e the chance agreement
    from the two marginals (None when p_e = 1).
    """
    a, b = _bools(judged, "judged"), _bools(exact, "exact")
    if len(a) != len(b):
        raise ValueError(f"agreement: {len(a)} judged verdicts but {len(b)} exact ones")
    n = len(a)
    both = sum(x and y for x, y in zip(a, b))
    equal = sum(x == y for x, y in zip(a, b))
    na, nb = sum(a), sum(b)
    chance = na * nb + (n - na) * (n - nb)  # p_e * n^2, in integers
    return JudgeAgreement(
        n=n,
        agreement=equal / n if n else None,
        precision=both / na if na else None,
        recall=both / nb if nb else None,
        kappa=(equal * n - chance) / (n * n - chance) if n and chance != n * n else None,
    )
