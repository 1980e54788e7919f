"""One-to-one matching of predicted steps to reference steps, and the F1 built on it (method.md
section 6).

Predicted steps are matched to reference steps one-to-one, greedily, highest similarity first,
keeping only pairs with similarity >= a threshold. A predicted step that is matched counts as
correct: this is the step correctness y_t of method.md section 5 for datasets with reference
chains. Per example, precision = matched predicted / predicted, recall = matched reference /
reference, F1 their harmonic mean; `mean_f1` averages F1 over examples.

Inputs are step TEXTS ONLY. A generated step carries an appended confidence statement
(", and I believe this is right", ", but I'm not sure"); the caller must strip it before
matching, otherwise the statement itself (shared by many steps, absent from the reference)
moves the similarities. Reference steps are compared as given.

Layers (all pure; the only side effect is the similarity object's encoder call):

- `match_matrix(sim, threshold)`: the greedy matching over a (predicted x reference) numpy
  similarity matrix -> list of `Pair(predicted, reference, similarity)`;
- `step_match(sim, threshold)`: the same, as a `StepMatch` record (pairs, y_t, precision,
  recall, F1);
- `match_steps(predicted, reference, similarity, threshold)`: builds the matrix with ONE
  `similarity.pairwise(pairs)` call (a `SentenceSimilarity` or anything with that method);
- `match_chains(predicted_chains, reference_chains, similarity, threshold)`: many examples with
  ONE `pairwise` call for all of them; equal to `match_steps` per example;
- `mean_f1(matches)`: F1 averaged per example.

Greedy order and tie-break (**[choice]**): candidate pairs (similarity >= threshold) are taken in
decreasing similarity; among exactly equal similarities, the pair with the lower predicted index
goes first, then the one with the lower reference index (i.e. the sort key is
(-similarity, predicted index, reference index)). A pair is kept when neither of its steps is
already matched. This is the greedy matching the method describes, not the maximum-weight
(Hungarian) assignment: with sim = [[0.9, 0.8], [0.85, 0.1]] and threshold 0.5, greedy keeps
only (0, 0); the assignment (0, 1), (1, 0) would keep two.

Empty cases (**[choice]**): every ratio 0/0 is 0 (sklearn's `zero_division=0`).
- no predicted steps: precision 0, recall 0, F1 0 (an empty chain is a failed generation and
  earns nothing; it has no y_t to report);
- no reference steps (with predicted steps): every predicted step is unmatched (y_t = 0),
  precision 0, recall 0, F1 0;
- both empty: precision, recall, F1 all 0. Scoring it 1 ("perfect agreement") would reward
  generating nothing on an example with no reference chain. Such an example has no F1 to
  measure at all: evaluation should not call the matching for datasets without reference
  chains (there y_t comes from elsewhere, e.g. the benchmark's exact checker), and `mean_f1`
  averages over exactly the matches it is given.

Default threshold (**[choice]**), `DEFAULT_MATCH_THRESHOLD = 0.65`, for the default bi-encoder
(the offline MiniLM, all-MiniLM-L6-v2, g = clamped cosine; `SentenceSimilarity()`). Measured on
48 hand-made step pairs (scripts not kept; the numbers are these):

- 25 paraphrase pairs (should match), e.g. "There are three red circles." / "The image has 3 red
  circles." 0.870, "So the answer is 2." / "Therefore, the answer is two." 0.909, "There is 1
  square." / "The image contains one square." 0.762, and the two loose matches of the paper's
  own figure (reference/step-matching.png): "The performers are engaged in a traditional dance
  involving drums" / "The image shows three men dancing with a drum and wearing traditional
  attire" 0.659, "So the answer is Konya" / "So the performers are from Konya" 0.655.
  Range 0.622 - 0.967; lowest "The bus is parked at the curb." / "A bus is stopped beside the
  sidewalk." 0.622.
- 23 non-paraphrase pairs (should not match), e.g. "There are three red circles." / "There are
  two blue squares." 0.313, "The square is blue." / "The circle is red." 0.363, "So the answer
  is 2." / "So the answer is blue." 0.502, "The white substance on the cupcakes is commonly known
  as icing or frosting" / "So, the answer is icing" 0.562. Range 0.080 - 0.812; above 0.65 only
  "There is 1 square." / "The square is in the top left corner." 0.687 and "The blue square is
  in the top row." / "The blue square is large." 0.812.

Share matched (paraphrase / non-paraphrase) and balanced accuracy by threshold:
0.55: 1.00 / 0.22, 0.891; 0.60: 1.00 / 0.13, 0.935; 0.65: 0.96 / 0.09, 0.937;
0.70: 0.88 / 0.04, 0.918; 0.75: 0.84 / 0.04, 0.898; 0.80: 0.68 / 0.04, 0.818.
0.65 has the best balanced accuracy and still matches the paper's figure pairs (barely).

Known limitation, measured with the same model: a step that differs from a reference step in
one attribute is NOT separated by any threshold: "There are 3 red circles." / "There are 2 red
circles." 0.885, "So the answer is 2." / "So the answer is 3." 0.927, "The red circle is to the
left of the blue square." / "... to the right of ..." 0.993, "There are three red circles." /
"There are three blue circles." 0.690. With MiniLM, matching measures whether a step makes the
same kind of claim as a reference step more than whether the claim is right. (The one-to-one
constraint helps when the right step is also present, since it takes its reference first.)
A cross-encoder (`SentenceSimilarity(kind="cross-encoder")`, as in the paper) scores on another
scale: pass a threshold measured for it (config `evaluate.match_threshold`); 0.65 is for MiniLM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_MATCH_THRESHOLD",
    "Pair",
    "PairSimilarity",
    "StepMatch",
    "match_chains",
    "match_matrix",
    "match_steps",
    "mean_f1",
    "similarity_matrices",
    "step_match",
]

DEFAULT_MATCH_THRESHOLD: float = 0.65
"""The default similarity threshold for the MiniLM bi-encoder (measurement in the module docstring)."""


class PairSimilarity(Protocol):
    """Anything that scores sentence pairs like `SentenceSimilarity.pairwise`: one value per pair."""

    def pairwise(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class Pair(NamedTuple):
    """One matched pair: predicted step index, reference step index, their similarity."""

    predicted: int
    reference: int
    similarity: float


def _threshold(threshold: float | None) -> float:
    t = DEFAULT_MATCH_THRESHOLD if threshold is None else float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"match threshold must be finite, got {threshold!r}")
    return t


def _as_matrix(sim: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(sim, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (predicted x reference), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("similarity matrix contains NaN or infinity")
    return m


def match_matrix(sim: np.ndarray | Sequence[Sequence[float]],
                 threshold: float | None = None) -> list[Pair]:
    """Greedy one-to-one matching over a (predicted x reference) similarity matrix.

    Pairs with similarity >= `threshold` (None: `DEFAULT_MATCH_THRESHOLD`) are taken in the order
    (-similarity, predicted index, reference index); a pair is kept when neither its predicted
    nor its reference step is matched yet. Returns the kept pairs in that (greedy) order. A
    matrix with no rows or no columns gives no pairs. Raises `ValueError` for a matrix that is
    not 2-D or has a non-finite value, or a non-finite threshold.
    """
    t = _threshold(threshold)
    m = _as_matrix(sim)
    i, j = np.nonzero(m >= t)
    if i.size == 0:
        return []
    s = m[i, j]
    order = np.lexsort((j, i, -s))  # last key is the primary one
    used_pred: set[int] = set()
    used_ref: set[int] = set()
    pairs: list[Pair] = []
    for k in order:
        a, b = int(i[k]), int(j[k])
        if a in used_pred or b in used_ref:
            continue
        used_pred.add(a)
        used_ref.add(b)
        pairs.append(Pair(a, b, float(s[k])))
        if len(used_pred) == m.shape[0] or len(used_ref) == m.shape[1]:
            break
    return pairs


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


class StepMatch(BaseModel):
    """The matching of one example's predicted chain to its reference chain.

    Stored: `n_predicted`, `n_reference`, `threshold` and `pairs` (in greedy order, see
    `match_matrix`). Derived (properties, not serialised): `matched` (per predicted step, y_t),
    `reference_of` (per predicted step, its reference index or None), `precision`, `recall`,
    `f1`. Every 0/0 is 0 (the empty cases of the module docstring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_predicted: int = Field(ge=0)
    n_reference: int = Field(ge=0)
    threshold: float
    pairs: tuple[Pair, ...] = ()

    @model_validator(mode="after")
    def _one_to_one(self) -> StepMatch:
        preds = [p.predicted for p in self.pairs]
        refs = [p.reference for p in self.pairs]
        if len(set(preds)) != len(preds) or len(set(refs)) != len(refs):
            raise ValueError("a step appears in more than one matched pair")
        if any(not 0 <= a < self.n_predicted for a in preds):
            raise ValueError(f"predicted index out of range [0, {self.n_predicted})")
        if any(not 0 <= b < self.n_reference for b in refs):
            raise ValueError(f"reference index out of range [0, {self.n_reference})")
        return self

    @property
    def n_matched(self) -> int:
        """Number of matched pairs (= matched predicted steps = matched reference steps)."""
        return len(self.pairs)

    @property
    def reference_of(self) -> tuple[int | None, ...]:
        """Per predicted step, the index of its matched reference step, or None."""
        out: list[int | None] = [None] * self.n_predicted
        for p in self.pairs:
            out[p.predicted] = p.reference
        return tuple(out)

    @property
    def matched(self) -> tuple[bool, ...]:
        """Per predicted step, whether it is matched: the step correctness y_t (section 5)."""
        return tuple(r is not None for r in self.reference_of)

    @property
    def precision(self) -> float:
        """Matched predicted steps / predicted steps (0 when there are none)."""
        return _ratio(self.n_matched, self.n_predicted)

    @property
    def recall(self) -> float:
        """Matched reference steps / reference steps (0 when there are none)."""
        return _ratio(self.n_matched, self.n_reference)

    @property
    def f1(self) -> float:
        """2 P R / (P + R); 0 when P + R = 0."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def step_match(sim: np.ndarray | Sequence[Sequence[float]],
               threshold: float | None = None) -> StepMatch:
    """`match_matrix` as a `StepMatch` (the matrix's shape gives the chain lengths)."""
    t = _threshold(threshold)
    m = _as_matrix(sim)
    return StepMatch(n_predicted=m.shape[0], n_reference=m.shape[1], threshold=t,
                     pairs=tuple(match_matrix(m, t)))


def _check_steps(steps: Sequence[str], what: str) -> list[str]:
    if isinstance(steps, str):
        raise TypeError(f"{what} must be a sequence of step texts, not one string")
    out = list(steps)
    for s in out:
        if not isinstance(s, str):
            raise TypeError(f"{what} must hold strings, got {type(s).__name__}")
    return out


def _scores(similarity: PairSimilarity, pairs: list[tuple[str, str]]) -> np.ndarray:
    """One `pairwise` call (none when there are no pairs), checked for shape and finiteness."""
    if not pairs:
        return np.zeros(0, dtype=np.float64)
    g = np.asarray(similarity.pairwise(pairs), dtype=np.float64).reshape(-1)
    if g.shape[0] != len(pairs):
        raise ValueError(f"similarity.pairwise returned {g.shape[0]} scores for {len(pairs)} pairs")
    if not np.isfinite(g).all():
        raise ValueError("similarity.pairwise returned NaN or infinity")
    return g


def similarity_matrices(predicted_chains: Sequence[Sequence[str]], reference_chains: Sequence[Sequence[str]],
                        similarity: PairSimilarity) -> list[np.ndarray]:
    """Per example k, the (predicted x reference) similarity matrix of `predicted_chains[k]` and
    `reference_chains[k]` (step texts), every pair of every example scored in ONE
    `similarity.pairwise` call (none when there is no pair at all)."""
    if len(predicted_chains) != len(reference_chains):
        raise ValueError(f"{len(predicted_chains)} predicted chains but {len(reference_chains)} reference chains")
    preds = [_check_steps(p, "a predicted chain") for p in predicted_chains]
    refs = [_check_steps(r, "a reference chain") for r in reference_chains]
    g = _scores(similarity, [(a, b) for p, r in zip(preds, refs) for a in p for b in r])
    out: list[np.ndarray] = []
    start = 0
    for p, r in zip(preds, refs):
        n = len(p) * len(r)
        out.append(g[start:start + n].reshape(len(p), len(r)))
        start += n
    return out


def match_chains(predicted_chains: Sequence[Sequence[str]], reference_chains: Sequence[Sequence[str]],
                 similarity: PairSimilarity, threshold: float | None = None) -> list[StepMatch]:
    """Match many examples' chains with ONE `similarity.pairwise` call for all of them.

    `predicted_chains[k]` and `reference_chains[k]` are example k's step texts (statements
    already stripped from the predicted steps). Every (predicted, reference) pair of every
    example is scored in that one call (`similarity_matrices`); the matrices are then matched
    per example as `step_match` does. Equal to `match_steps` per example.
    """
    t = _threshold(threshold)
    return [step_match(m, t) for m in similarity_matrices(predicted_chains, reference_chains, similarity)]


def match_steps(predicted: Sequence[str], reference: Sequence[str], similarity: PairSimilarity,
                threshold: float | None = None) -> StepMatch:
    """Match one predicted chain to its reference chain (one `similarity.pairwise` call).

    `predicted` and `reference` are step texts only: strip the confidence statements from the
    predicted steps first. The matrix entry (i, j) is `similarity` of (predicted[i],
    reference[j]).
    """
    return match_chains([predicted], [reference], similarity, threshold)[0]


def mean_f1(matches: Sequence[StepMatch]) -> float | None:
    """F1 averaged per example (each example weighs the same, whatever its length); None when
    there are no examples."""
    if not matches:
        return None
    return float(sum(m.f1 for m in matches) / len(matches))
