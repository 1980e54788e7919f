"""U_MTE: mean token entropy of a step (method.md section 2).

    U_MTE = (1/L) * sum_l H(P(. | y_<l, x)),   H(P) = -sum_v P(v) log P(v)

over the L tokens of a step, each H over the full vocabulary of the raw (unprocessed) next-token
distribution of the model's own teacher-forced pass (`forward.teacher_forced`), in nats. High =
unsure. Mean token entropy: Fomicheva et al., "Unsupervised Quality Estimation for Neural Machine
Translation", TACL 2020; used as a step signal by MMBoundary (He et al., ACL 2025).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mte(entropies: Sequence[float] | np.ndarray) -> float:
    """Mean of a step's per-token entropies."""
    h = np.asarray(entropies, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError("mte: needs a non-empty 1-D array of entropies")
    return float(h.mean())
