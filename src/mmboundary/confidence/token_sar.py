"""U_TokenSAR: relevance-weighted token negative log-likelihood of a step (method.md section 2).

    U_TokenSAR = sum_l Rn(y_l) * (-log P(y_l | y_<l, x))
    R(y_k)     = 1 - g(x+y, x+y without y_k),      Rn(y_k) = R(y_k) / sum_l R(y_l)

Duan et al., "Shifting Attention to Relevance: Towards the Predictive Uncertainty Quantification
of Free-Form Large Language Models" (SAR), ACL 2024; used as a step signal by MMBoundary (He et
al., ACL 2025). g is a sentence similarity in [0, 1] (`similarity.SentenceSimilarity`).

Choices made here:
- **[choice]** "x+y" is the step sentence alone: the question and the earlier steps are not
  prepended (SAR's paper prepends the prompt). The image part of x is not text anyway, and with
  a long context a one-token removal barely moves a sentence embedding, which flattens every
  R towards 0 and the weights towards uniform; the step alone measures how much each token carries
  of the step's own meaning. Relevance is normalised per step.
- "x+y" and "without y_k" are both decoded from the step's response tokens (the same decoder,
  `skip_special_tokens=True`, surrounding whitespace stripped), so the two strings differ only by
  token k's text.
- g is clamped to [0, 1], so R is in [0, 1]. If sum R == 0 (no removal changes the similarity,
  e.g. a one-token step whose removal leaves a sentence the encoder scores as identical), the
  weights are uniform, 1/L, and U_TokenSAR is the mean token NLL (log of U_LNLP).
- All removals of all steps of a batch are scored in ONE encoder call (`token_sar_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relevance(similarities: Sequence[float] | np.ndarray) -> np.ndarray:
    """R(y_k) = 1 - g(full, full without y_k), with g clamped to [0, 1]."""
    g = np.clip(np.asarray(similarities, dtype=np.float64), 0.0, 1.0)
    return 1.0 - g


def normalised_relevance(r: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rn = R / sum R; uniform 1/L when sum R == 0."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("token_sar: needs a non-empty 1-D array of relevances")
    if np.any(r < 0):
        raise ValueError("token_sar: relevances must be >= 0")
    total = r.sum()
    if total == 0.0:
        return np.full(r.shape, 1.0 / r.size)
    return r / total


def token_sar(logprobs: Sequence[float] | np.ndarray, similarities: Sequence[float] | np.ndarray) -> float:
    """U_TokenSAR of one step from its tokens' log-probabilities and the similarities
    g(step, step without token k), one per token."""
    lp = np.asarray(logprobs, dtype=np.float64)
    sims = np.asarray(similarities, dtype=np.float64)
    if lp.shape != sims.shape:
        raise ValueError(f"token_sar: {lp.shape} log-probabilities but {sims.shape} similarities")
    weights = normalised_relevance(relevance(sims))
    return float((weights * -lp).sum())


def removal_texts(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[str]]:
    """The step decoded from its tokens, and the step decoded without each token in turn."""
    ids = [int(t) for t in token_ids]
    variants = [ids] + [ids[:k] + ids[k + 1:] for k in range(len(ids))]
    texts = tokenizer.batch_decode(variants, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    texts = [t.strip() for t in texts]
    return texts[0], texts[1:]


def token_sar_batch(tokenizer, similarity, steps: Sequence[tuple[Sequence[int], Sequence[float]]]) -> list[float]:
    """U_TokenSAR of many steps, each given as `(token_ids, logprobs)`, with ONE call of
    `similarity.pairwise` over all (step, step without token k) pairs of all steps."""
    pairs: list[tuple[str, str]] = []
    bounds = []
    for ids, lp in steps:
        if len(ids) != len(lp) or not len(ids):
            raise ValueError("token_sar_batch: each step needs as many log-probabilities as tokens (>= 1)")
        full, removed = removal_texts(tokenizer, ids)
        bounds.append((len(pairs), len(pairs) + len(removed)))
        pairs += [(full, r) for r in removed]
    if not pairs:
        return []
    sims = np.asarray(similarity.pairwise(pairs), dtype=np.float64)
    return [token_sar(lp, sims[a:b]) for (_, lp), (a, b) in zip(steps, bounds)]
