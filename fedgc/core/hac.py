"""Long-run (HAC) covariances and Wald tests with a small-sample F correction.

For a (N, k) series phi_t (an estimator's influence series) the long-run covariance is

    S = Gamma_0 + sum_{j >= 1} w_j (Gamma_j + Gamma_j^T),   Gamma_j = (1/N) sum_t phi_t phi_{t-j}^T,

estimated with Bartlett weights w_j = 1 - j / b for j < b (Newey-West), b from Andrews' (1991) AR(1)
plug-in rule (one AR(1) per column, equal weights): b = 1.1447 (a1 N)^{1/3},
a1 = sum 4 rho^2 sigma^4 / ((1 - rho)^6 (1 + rho)^2) / sum sigma^4 / (1 - rho)^4.

A Wald statistic W = delta^T V^{-1} delta with V = S / N estimated from the same data is not chi2(q)
in small samples when q is large. Treating S as Wishart with the Bartlett kernel's equivalent degrees of
freedom nu = (N - K) / (b int k^2) = 1.5 (N - K) / b (capped at N - K), the Hotelling-type approximation
W (nu - q + 1) / (nu q) ~ F(q, nu - q + 1) holds; as nu -> inf it is the chi2(q) test.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.special

from fedgc.core.granger import chi2_log10_sf

ANDREWS_RHO_CAP = 0.97
CHOLESKY_FROM = 32  # one hypothesis with at least this many restrictions: Cholesky instead of eigh  # AR(1) coefficients are capped so the plug-in bandwidth stays finite


class LongRunCovariance(NamedTuple):
    """S: (k, k) long-run covariance, normalised as Var(sum_t phi_t) / N;  bandwidth: b used."""

    S: np.ndarray
    bandwidth: float


class WaldTest(NamedTuple):
    """statistic: W;  dof: q (rank of V);  log10_pvalue: log10 of the F (or chi-square) tail;  nu: the
    equivalent degrees of freedom of V (inf: the chi-square test)."""

    statistic: float
    dof: int
    log10_pvalue: float
    nu: float


def _series(phi: np.ndarray) -> np.ndarray:
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] < 3 or phi.shape[1] < 1:
        raise ValueError(f"phi must be a (N >= 3, k >= 1) series, got shape {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi must be finite")
    return phi


def andrews_bandwidth(phi: np.ndarray) -> float:
    """Andrews' AR(1) plug-in bandwidth of the Bartlett kernel for the (centred) series phi (N, k)."""
    phi = _series(phi)
    N = phi.shape[0]
    x0, x1 = phi[:-1], phi[1:]
    denom = np.einsum("tk,tk->k", x0, x0)
    rho = np.divide(np.einsum("tk,tk->k", x0, x1), denom, out=np.zeros_like(denom), where=denom > 0)
    rho = np.clip(rho, -ANDREWS_RHO_CAP, ANDREWS_RHO_CAP)
    resid = x1 - x0 * rho
    sig2 = np.einsum("tk,tk->k", resid, resid) / (N - 1)
    num = np.sum(4.0 * rho**2 * sig2**2 / ((1.0 - rho) ** 6 * (1.0 + rho) ** 2))
    den = np.sum(sig2**2 / (1.0 - rho) ** 4)
    a1 = num / max(den, 1e-300)
    return float(1.1447 * (a1 * N) ** (1.0 / 3.0))


def bartlett_weights(bandwidth: float) -> np.ndarray:
    """w_j = 1 - j / b for the lags j = 1, 2, ... < b (Newey-West), shape (ceil(b) - 1,)."""
    j = np.arange(1, int(np.ceil(bandwidth)), dtype=np.float64)
    return 1.0 - j / bandwidth


def bartlett_lrv(phi: np.ndarray, *, bandwidth: float | None = None, min_bandwidth: float = 1.0) -> LongRunCovariance:
    """Newey-West long-run covariance of phi (N, k), centred first. bandwidth: b (None: Andrews' rule),
    raised to min_bandwidth and capped at N / 4; lags j < b get weight 1 - j / b."""
    phi = _series(phi)
    phi = phi - phi.mean(axis=0)
    N = phi.shape[0]
    b = andrews_bandwidth(phi) if bandwidth is None else float(bandwidth)
    if not np.isfinite(b) or b <= 0:
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
    b = min(max(b, float(min_bandwidth)), N / 4.0)
    # N S = phi^T K phi with K the banded Toeplitz matrix of the weights (K_st = w_|s-t|, w_0 = 1): the
    # band is applied to phi first, so the k x k products cost one matrix product instead of one per lag
    banded = phi.copy()
    for j, w in enumerate(bartlett_weights(b), start=1):
        banded[j:] += w * phi[:-j]
        banded[:-j] += w * phi[j:]
    S = phi.T @ banded / N
    return LongRunCovariance(0.5 * (S + S.T), float(b))


def equivalent_df(n: int, bandwidth: float, n_params: int = 0) -> float:
    """nu = 1.5 (n - n_params) / bandwidth, at most n - n_params (int k^2 = 2/3 for the Bartlett kernel)."""
    base = max(n - n_params, 1)
    return float(min(base, 1.5 * base / max(bandwidth, 1.0)))


class WaldTests(NamedTuple):
    """WaldTest for a batch of P hypotheses, each field (P,)."""

    statistic: np.ndarray
    dof: np.ndarray
    log10_pvalue: np.ndarray
    nu: np.ndarray


def _well_conditioned_statistic(delta: np.ndarray, V: np.ndarray) -> float | None:
    """delta^T V^{-1} delta by Cholesky when V's condition number is surely below 1e12, so that every
    eigen-direction counts (see wald_tests) and the pseudo-inverse is the inverse: cond_2 <= cond_1, and
    LAPACK's estimate of 1 / cond_1 must be >= 1e-9 (a margin of 1000 for the estimate). None otherwise."""
    try:
        factor = scipy.linalg.cho_factor(V, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    rcond, info = scipy.linalg.lapack.dpocon(factor[0], float(np.abs(V).sum(axis=0).max()), uplo="U")
    if info != 0 or not rcond >= 1e-9:
        return None
    return float(delta @ scipy.linalg.cho_solve(factor, delta, check_finite=False))


def wald_tests(delta: np.ndarray, V: np.ndarray, *, nu: np.ndarray | None = None) -> WaldTests:
    """wald_test for P hypotheses of the same size q0 at once: delta (P, q0), V (P, q0, q0), nu (P,) or None."""
    delta = np.asarray(delta, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if delta.ndim != 2 or V.shape != (*delta.shape, delta.shape[1]):
        raise ValueError(f"delta must be (P, q) and V (P, q, q), got {delta.shape} and {V.shape}")
    P = delta.shape[0]
    nus = np.full(P, np.inf) if nu is None else np.broadcast_to(np.asarray(nu, dtype=np.float64), (P,)).copy()
    V = 0.5 * (V + np.swapaxes(V, 1, 2))
    full_rank = _well_conditioned_statistic(delta[0], V[0]) if P == 1 and delta.shape[1] >= CHOLESKY_FROM else None
    if full_rank is not None:
        stat, q = np.array([full_rank]), np.array([delta.shape[1]])
    else:
        w, U = np.linalg.eigh(V)
        keep = w > 1e-12 * np.maximum(w.max(axis=1, initial=0.0), 1e-300)[:, None]
        z = np.einsum("pij,pi->pj", U, delta)
        stat = np.sum(np.where(keep, z**2 / np.where(keep, w, 1.0), 0.0), axis=1)
        q = keep.sum(axis=1)
    lp = np.zeros(P)
    chi2 = (q > 0) & ~np.isfinite(nus)
    lp[chi2] = chi2_log10_sf(stat[chi2], q[chi2])
    d2 = nus - q + 1
    ftest = (q > 0) & np.isfinite(nus) & (d2 >= 1)  # p = 1 when nu - q + 1 < 1 (too few degrees of freedom)
    if np.any(ftest):
        qf, d2f = q[ftest].astype(np.float64), d2[ftest]
        F = stat[ftest] * d2f / (nus[ftest] * qf)
        # P(F(q, d2) > F) = I_{d2 / (d2 + q F)}(d2 / 2, q / 2), the regularised incomplete beta function
        with np.errstate(divide="ignore"):
            lpf = np.log10(scipy.special.betainc(d2f / 2.0, qf / 2.0, d2f / (d2f + qf * F)))
        under = ~np.isfinite(lpf)  # underflow: the chi-square tail of q F (the F's large-nu limit) keeps the order
        if np.any(under):
            lpf[under] = chi2_log10_sf(F[under] * qf[under], qf[under])
        lp[ftest] = lpf
    stat[q == 0] = 0.0
    return WaldTests(stat, q, lp, nus)


def wald_test(delta: np.ndarray, V: np.ndarray, *, nu: float | None = None) -> WaldTest:
    """W = delta^T V^+ delta over V's numerically positive eigen-directions (q of them). nu None: chi2(q);
    else W (nu - q + 1) / (nu q) ~ F(q, nu - q + 1), p = 1 when nu - q + 1 < 1 (too few degrees of freedom)."""
    delta = np.ravel(np.asarray(delta, dtype=np.float64))
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (delta.size, delta.size):
        raise ValueError(f"V must be ({delta.size}, {delta.size}), got {V.shape}")
    t = wald_tests(delta[None], V[None], nu=None if nu is None else np.array([nu]))
    return WaldTest(float(t.statistic[0]), int(t.dof[0]), float(t.log10_pvalue[0]), float(t.nu[0]))
