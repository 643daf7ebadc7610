"""Block Granger causality with significance, from one least-squares factorisation per target.

For target m the full model regresses z_t^m (D_m) on the lagged states of its
regressor set. Dropping source n raises the residual sum of squares by

    RSS_restricted - RSS_full = Gamma_n [ (X^T X)^{-1}_{nn} ]^{-1} Gamma_n^T

(partitioned inverse), so every leave-one-source-out fit costs a D_n x D_n solve.
The statistic is the likelihood ratio of the multivariate regression,

    GC_{n->m} = ln det RSS_restricted - ln det RSS_full,

invariant to any invertible transform of z^m (so to the scale of an identified
R^m), with Bartlett's correction: (N - K - (D_m - D_n + 1) / 2) * GC ~ chi2(D_m D_n)
under "n does not Granger-cause m". Results are [target m, source n] matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.special

from fedgc.core.fdr import benjamini_hochberg
from fedgc.core.regression import Blocks, Diagonal, RegressionStats, regressor_inverse_block, row_fit, shared_inverse


class GCResult(NamedTuple):
    """Block Granger causality, every matrix (M, M) indexed [target m, source n]; diagonals are NaN/False.

    strength:  ||A_s^{mn}||_F;   gc: ln det ratio;   statistic: Bartlett-corrected LR statistic;
    dof: D_m D_n;   pvalue: chi-square p-value;   log10_pvalue: log10 of it (no underflow);
    edges: Benjamini-Hochberg discoveries at level alpha over all M(M-1) pairs;
    A_s: (D, D) the server's matrix (diagonal blocks: joint correction to A^{mm}, else zero).
    unknown: (M, M) bool, pairs not estimated because a client dropped out (fedgc.protocol.dropout), or None
             (every pair known); their matrices are NaN and their edges False.
    test: the test behind statistic, dof and the p-values: 'lr' (this module) or 'siv' (fedgc.core.siv:
          statistic the F-corrected HAC Wald statistic, gc = statistic / N; strength stays the A_s block norm).
    via_source: test 'siv': (M, M) bool, True where the pair's p-value is the source-instrumented test's
                (fedgc.core.siv); None for 'lr'.
    """

    clients: tuple[str, ...]
    dims: tuple[int, ...]
    strength: np.ndarray
    gc: np.ndarray
    statistic: np.ndarray
    dof: np.ndarray
    pvalue: np.ndarray
    log10_pvalue: np.ndarray
    edges: np.ndarray
    alpha: float
    A_s: np.ndarray
    unknown: np.ndarray | None = None
    test: str = "lr"
    via_source: np.ndarray | None = None


def chi2_logsf(stat: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """ln P(chi2_dof > stat), accurate in both tails: ln(1 - cdf) below the median (sf near 1), ln sf above;
    0 for stat <= 0, NaN for NaN. scipy.stats.chi2.logsf's own evaluation (scipy 1.17), from scipy.special
    alone: scipy.stats takes a second to import."""
    out = np.where(np.isnan(stat), np.nan, 0.0)
    inside = stat > 0
    x, k = stat[inside], dof[inside]
    upper = x > 2.0 * scipy.special.gammaincinv(k / 2.0, 0.5)  # above the median
    with np.errstate(divide="ignore"):
        out[inside] = np.where(upper, np.log(scipy.special.chdtrc(k, x)), np.log1p(-scipy.special.chdtr(k, x)))
    return out


def chi2_log10_sf(stat: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """log10 P(chi2_dof > stat) without underflow: the log survival function is -inf once sf < ~1e-308; there
    the upper incomplete gamma Q(a, x) = x^a e^-x / Gamma(a) * CF(a, x) (Legendre's continued fraction, Lentz)."""
    stat = np.asarray(stat, dtype=float)
    dof = np.asarray(dof, dtype=float)
    out = chi2_logsf(stat, dof)
    bad = ~np.isfinite(out) & np.isfinite(stat)
    if np.any(bad):
        a, x = dof[bad] / 2.0, stat[bad] / 2.0
        tiny = 1e-300
        b = x + 1.0 - a
        c = np.full_like(x, 1.0 / tiny)
        d = 1.0 / b
        h = d.copy()
        for i in range(1, 300):
            an = -i * (i - a)
            b = b + 2.0
            d = an * d + b
            d = np.where(np.abs(d) < tiny, tiny, d)
            c = b + an / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            d = 1.0 / d
            delta = d * c
            h = h * delta
            if np.all(np.abs(delta - 1.0) < 1e-15):
                break
        out[bad] = -x + a * np.log(x) - scipy.special.gammaln(a) + np.log(h)
    return out / np.log(10.0)


def granger_tests(
    stats: RegressionStats,
    A_s: np.ndarray,
    clients: Sequence[str],
    blocks: Blocks,
    *,
    diagonal: Diagonal = "fixed",
    alpha: float = 0.05,
) -> GCResult:
    M = len(blocks.dims)
    shape = (M, M)
    gc = np.full(shape, np.nan)
    statistic = np.full(shape, np.nan)
    dof = np.zeros(shape, dtype=int)
    W = shared_inverse(stats.gram)
    for m in range(M):
        fit = row_fit(stats, W, blocks, m, diagonal)
        _, logdet_full = np.linalg.slogdet(fit.rss)
        Dm = blocks.dims[m]
        for n in range(M):
            if n == m:
                continue
            beta = fit.coef[:, blocks.slice(n)]
            extra = beta @ np.linalg.solve(regressor_inverse_block(W, blocks, m, n, diagonal), beta.T)
            _, logdet_restricted = np.linalg.slogdet(fit.rss + 0.5 * (extra + extra.T))
            gc[m, n] = max(logdet_restricted - logdet_full, 0.0)
            Dn = blocks.dims[n]
            statistic[m, n] = (stats.n - fit.n_regressors - 0.5 * (Dm - Dn + 1)) * gc[m, n]
            dof[m, n] = Dm * Dn
    off = ~np.eye(M, dtype=bool)
    logp = np.full(shape, np.nan)
    logp[off] = chi2_log10_sf(statistic[off], dof[off])
    pvalue = np.where(off, 10.0**logp, np.nan)
    edges = np.zeros(shape, dtype=bool)
    if off.any():
        edges[off] = benjamini_hochberg(pvalue[off], alpha=alpha)
    strength = block_strength(A_s, blocks)
    return GCResult(tuple(clients), blocks.dims, strength, gc, statistic, dof, pvalue, logp, edges, alpha, A_s)


def block_strength(A_s: np.ndarray, blocks: Blocks) -> np.ndarray:
    """(M, M) ||A_s^{mn}||_F indexed [target m, source n]; NaN on the diagonal."""
    M = len(blocks.dims)
    strength = np.full((M, M), np.nan)
    for m in range(M):
        for n in range(M):
            if m != n:
                strength[m, n] = np.linalg.norm(A_s[blocks.slice(m), blocks.slice(n)])
    return strength
