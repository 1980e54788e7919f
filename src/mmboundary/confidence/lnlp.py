"""U_LNLP: length-normalised negative log-probability, as a perplexity (method.md section 2).

    U_LNLP = exp(-(1/L) * sum_l log P(y_l | y_<l, x))

over the L tokens of a step, with the probabilities of the model's own teacher-forced pass
(`forward.teacher_forced`). High = unsure. Length-normalised likelihood as an uncertainty
measure: Malinin & Gales, "Uncertainty Estimation in Autoregressive Structured Prediction",
ICLR 2021; used as a step signal by MMBoundary (He et al., ACL 2025).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def lnlp(logprobs: Sequence[float] | np.ndarray) -> float:
    """Perplexity of a step from its per-token log-probabilities (natural log)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0:
        raise ValueError("lnlp: needs a non-empty 1-D array of log-probabilities")
    return float(math.exp(-lp.mean()))
