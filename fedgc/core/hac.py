"""Long-run (HAC) covariances and Wald tests with a small-sample F correction.

For a (N, k) series phi_t (an estimator's influence series) the long-run covariance is

    S = Gamma_0 + sum_{j >= 1} w_j (Gamma_j + Gamma_j^T),   Gamma_j = (1/N) sum_t phi_t phi_{t-j}^T,

estimated with Bartlett weights w_j = 1 - j / b for j < b (Newey-West; the streaming change test), b from
Andrews' (1991) AR(1) plug-in rule (one AR(1) per column, equal weights): b = 1.1447 (a1 N)^{1/3},
a1 = sum 4 rho^2 sigma^4 / ((1 - rho)^6 (1 + rho)^2) / sum sigma^4 / (1 - rho)^4.

A Wald statistic W = delta^T V^{-1} delta with V = S / N estimated from the same data is not chi2(q)
in small samples when q is large. Treating S as Wishart with the Bartlett kernel's equivalent degrees of
freedom nu = (N - K) / (b int k^2) = 1.5 (N - K) / b (capped at N - K), the Hotelling-type approximation
W (nu - q + 1) / (nu q) ~ F(q, nu - q + 1) holds; as nu -> inf it is the chi2(q) test.

Batch means (the SIV tests): the N rows cut into B consecutive batches b of n_b rows (lengths differing
by at most one), phibar_b their means, phibar the overall mean,

    S = 1 / (B - 1) sum_b n_b (phibar_b - phibar)(phibar_b - phibar)^T.

When phi's dependence is short against a batch (fixed-B asymptotics), the batch sums are independent
normal, so S is Wishart with nu = B - 1 degrees of freedom, independent of phibar, and the F form above
is Hotelling's T^2, exactly F(q, B - q). There is no bandwidth to estimate, so slow components that an
AR(1) plug-in misses (multi-scale plant dynamics) are not under-covered the way Newey-West's are.
B = floor(0.4 N^(2/3)), the degrees of freedom Lazarus, Lewis, Stock and Watson (2018, "HAR inference:
recommendations for practice") recommend for equal-weight estimators, raised to 2q so that the F keeps
at least q denominator degrees of freedom, and capped so that a batch holds at least `min_rows` rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.special

from fedgc.core.granger import chi2_log10_sf

ANDREWS_RHO_CAP = 0.97  # AR(1) coefficients are capped so the plug-in bandwidth stays finite
CHUNK_VALUES = 1 << 22  # floats per block of rows (32 MB) where a series is processed by blocks
BATCH_SCALE = 0.4  # B = floor(BATCH_SCALE N^(2/3)) batches before the floor 2q
CHOLESKY_FROM = 32  # one hypothesis with at least this many restrictions: Cholesky instead of eigh


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
    x0, x1 = phi[:-1], phi[1:]
    sums = (np.einsum("tk,tk->k", x0, x0), np.einsum("tk,tk->k", x0, x1), np.einsum("tk,tk->k", x1, x1))
    return andrews_from_sums(*sums, phi.shape[0])


def ar1_terms(s00: np.ndarray, s01: np.ndarray, s11: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Andrews' per-column terms 4 rho^2 sigma^4 / ((1 - rho)^6 (1 + rho)^2) and sigma^4 / (1 - rho)^4 from a
    centred column's sums s00 = sum_{t < n-1} x_t^2, s01 = sum x_t x_{t+1}, s11 = sum_{t >= 1} x_t^2:
    rho = s01 / s00 (capped), sigma^2 = sum (x_{t+1} - rho x_t)^2 / (n - 1)."""
    rho = np.divide(s01, s00, out=np.zeros_like(s00), where=s00 > 0)
    rho = np.clip(rho, -ANDREWS_RHO_CAP, ANDREWS_RHO_CAP)
    sig2 = (s11 - 2.0 * rho * s01 + rho**2 * s00) / (n - 1)
    return 4.0 * rho**2 * sig2**2 / ((1.0 - rho) ** 6 * (1.0 + rho) ** 2), sig2**2 / (1.0 - rho) ** 4


def andrews_from_sums(s00: np.ndarray, s01: np.ndarray, s11: np.ndarray, n: int) -> float:
    """andrews_bandwidth from the columns' lag-0 and lag-1 sums (see ar1_terms), equal weights."""
    num, den = ar1_terms(s00, s01, s11, n)
    return float(1.1447 * (float(np.sum(num)) / max(float(np.sum(den)), 1e-300) * n) ** (1.0 / 3.0))


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
    S = phi.T @ _banded(phi, 0, N, bartlett_weights(b)) / N
    return LongRunCovariance(0.5 * (S + S.T), float(b))


def _banded(ext: np.ndarray, off: int, n: int, weights: np.ndarray) -> np.ndarray:
    """(K phi)_t for the n rows ext[off : off + n]: phi_t + sum_j w_j (phi_{t-j} + phi_{t+j}) over the lags
    that ext holds. N S = phi^T K phi with K the banded Toeplitz matrix of the weights (K_st = w_|s-t|,
    w_0 = 1): the band is applied to phi first, so the k x k products cost one matrix product instead of
    one per lag. ext: the rows themselves plus the neighbours the band reaches (as many as the series has)."""
    banded = ext[off : off + n].copy()
    for j, w in enumerate(weights, start=1):
        first = min(n, max(0, j - off))  # rows t with t - j inside ext are first .. n - 1
        if first < n:
            banded[first:] += w * ext[off - j + first : off - j + n]
        last = max(0, min(n, ext.shape[0] - off - j))  # rows t with t + j inside ext are 0 .. last - 1
        if last > 0:
            banded[:last] += w * ext[off + j : off + j + last]
    return banded


def batch_count(n: int, n_restrictions: int, *, min_rows: int = 1) -> int:
    """B = max(floor(0.4 n^(2/3)), 2 q), at most n // min_rows and at least 2."""
    if n < 2 or n_restrictions < 1 or min_rows < 1:
        raise ValueError(
            f"need n >= 2 rows, q >= 1 restrictions and min_rows >= 1, got {n}, {n_restrictions}, {min_rows}"
        )
    wanted = max(int(BATCH_SCALE * n ** (2.0 / 3.0)), 2 * n_restrictions)
    return max(2, min(wanted, n // min_rows))


def batch_bounds(n: int, batches: int) -> np.ndarray:
    """(batches + 1,) row bounds of `batches` consecutive batches of n rows, lengths differing by at most one."""
    return (np.arange(batches + 1) * n) // batches


def batch_means_lrv(phi: np.ndarray, *, batches: int) -> np.ndarray:
    """The batch-means long-run covariance S (k, k) of phi (N, k) with `batches` batches (module docstring);
    nu = batches - 1."""
    phi = _series(phi)
    N = phi.shape[0]
    if not 2 <= batches <= N:
        raise ValueError(f"batches must be in 2 .. {N}, got {batches!r}")
    bounds = batch_bounds(N, batches)
    sums = np.add.reduceat(phi, bounds[:-1], axis=0)
    dev = (sums - np.diff(bounds)[:, None] * phi.mean(axis=0)) / np.sqrt(np.diff(bounds))[:, None]
    S = dev.T @ dev / (batches - 1)
    return 0.5 * (S + S.T)


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
        lp[ftest] = f_log10_sf(stat[ftest] * d2f / (nus[ftest] * qf), qf, d2f)
    stat[q == 0] = 0.0
    return WaldTests(stat, q, lp, nus)


def f_log10_sf(x: np.ndarray, d1: np.ndarray | float, d2: np.ndarray | float) -> np.ndarray:
    """log10 P(F(d1, d2) > x) elementwise = log10 I_{d2 / (d2 + d1 x)}(d2 / 2, d1 / 2), the regularised
    incomplete beta function; where that underflows, the chi-square tail of d1 x (the F's large-d2 limit)
    keeps the order."""
    x, d1, d2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, d1, d2)))
    with np.errstate(divide="ignore"):
        out = np.log10(scipy.special.betainc(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * x)))
    under = ~np.isfinite(out)
    if np.any(under):
        out[under] = chi2_log10_sf(x[under] * d1[under], d1[under])
    return out


def wald_test(delta: np.ndarray, V: np.ndarray, *, nu: float | None = None) -> WaldTest:
    """W = delta^T V^+ delta over V's numerically positive eigen-directions (q of them). nu None: chi2(q);
    else W (nu - q + 1) / (nu q) ~ F(q, nu - q + 1), p = 1 when nu - q + 1 < 1 (too few degrees of freedom)."""
    delta = np.ravel(np.asarray(delta, dtype=np.float64))
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (delta.size, delta.size):
        raise ValueError(f"V must be ({delta.size}, {delta.size}), got {V.shape}")
    t = wald_tests(delta[None], V[None], nu=None if nu is None else np.array([nu]))
    return WaldTest(float(t.statistic[0]), int(t.dof[0]), float(t.log10_pvalue[0]), float(t.nu[0]))
