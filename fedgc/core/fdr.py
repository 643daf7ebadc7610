"""Benjamini-Hochberg false discovery rate control: which of n p-values are discoveries at level alpha."""

from __future__ import annotations

import numpy as np


def benjamini_hochberg(pvalues: np.ndarray, *, alpha: float) -> np.ndarray:
    """Discoveries (bool, the shape of pvalues flattened) at FDR level alpha: with the p-values sorted,
    p_(1) <= ... <= p_(n), the k smallest for the largest k with p_(k) <= alpha k / n. A NaN p-value counts
    in n and is never a discovery. The same decisions, operation for operation, as statsmodels'
    multipletests(method="fdr_bh")."""
    p = np.asarray(pvalues, dtype=float).ravel()
    n = p.size
    reject = np.zeros(n, dtype=bool)
    if n == 0:
        return reject
    order = np.argsort(p)
    below = p[order] <= np.arange(1, n + 1) / float(n) * alpha
    if below.any():
        reject[order[: int(np.flatnonzero(below)[-1]) + 1]] = True
    return reject
