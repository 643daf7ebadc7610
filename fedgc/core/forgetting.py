"""Exponentially forgotten regression statistics, their effective sample size, and the change test.

Forgotten statistics. The server's regression sums weight sample t by w_t: 1 inside the current
window, lambda^j once the sample left the window j steps ago (lambda = forgetting, per step of S
samples; lambda^(1/S) per sample). With W = S this is the recursion S_k = lambda S_{k-1} + N_k.
Weighted least squares keeps the newton rule unchanged (the per-step scale of a penalty is sum w).

Effective sample size. For weighted least squares with stationary regressors,
Var(beta_hat) = sigma^2 W (sum w^2 x x^T) W ~= sigma^2 (sum w^2 / sum w) W, W = (sum w x x^T)^{-1}, so
the restricted-minus-full residual sum is sigma^2 (sum w^2 / sum w) chi2_q while RSS ~= sigma^2 sum w:
the log-det statistic scales as chi2_q / N_eff with Kish's N_eff = (sum w)^2 / sum w^2. The GC tests
use N_eff where the batch test uses T (fedgc.core.granger's Bartlett factor N - K - ...). Steady state
with W = S: sum w = S / (1 - lambda), N_eff = S (1 + lambda) / (1 - lambda) (19 S at lambda = 0.9):
between sum w (conservative) and the sample count (anti-conservative, it grows without bound).

Alerts. In window k >= 1, for every ordered pair n -> m, a Chow-type Wald test of "block (m, n) in
the new window equals the forgotten estimate from before it":

    d = Gamma_new[:, n] - Gamma_past[:, n]      (D_m, D_n), Gamma = J^m B the z-space coefficients
    V = [X^T X]^{-1}_nn (new window) + (sum w^2 / sum w) [X^T W X]^{-1}_nn (past, Kish-scaled)
    Wald = tr(Sigma^{-1} d V^{-1} d^T) ~ chi2(D_m D_n),  Sigma: the new window's residual covariance

(the regressor-inverse blocks are the fixed-diagonal Schur complements of fedgc.core.regression). The two
samples are disjoint, so under "no change" the estimates are independent. An alert is raised when
p < alert_alpha / (M (M - 1)) (Bonferroni over pairs): the chance of any false alert in a window is at
most alert_alpha, so a run of K windows expects at most K alert_alpha false alerts. Kind: the pair was
not an edge in the previous window (Benjamini-Hochberg on the forgotten statistics) and its block grew
-> 'appeared'; it was an edge and the new window alone no longer shows it (p > alpha) -> 'disappeared';
otherwise 'changed'. After an alert the server restarts its memory (reset_on_alert): the window's
estimate and tests use the new window only, later windows forget from there. That adapts at once to
the change and prevents the same change from alerting again while old data still dominate.

HAC variance (alert_variance: hac). The Wald variance assumes white innovations. change_tests_hac replaces
the new window's part by the Newey-West long-run variance of the block estimate's influence series
phi_t = vec(e_t (G^{-1} x_t)_n^T) (G = X^T X over target m's regressors, e_t its residuals), Andrews'
bandwidth, and scales the past part by the average inflation tr(V_white^{-1} V_hac) / q that the window
shows; the p-value is the F tail with the Bartlett kernel's equivalent degrees of freedom (fedgc.core.hac).

Reference null (alert_calibration: reference, cross_fit). fit_scaled_chi2 fits stat ~ c chi2(g q) / g
(Satterthwaite's two moments, pooled over pairs and windows after dividing by q) to the change statistics of
a normal-operation reference streamed with the same settings (its own models, or for cross_fit models
identified on the other half of it); scaled_chi2_log10_sf replaces the chi-square tail by it, or (predictive,
cross_fit) by the F tail that carries the estimated scale's degrees of freedom.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from fedgc.core.granger import chi2_log10_sf
from fedgc.core.hac import bartlett_lrv, equivalent_df, f_log10_sf, wald_test
from fedgc.core.regression import Blocks, Diagonal, RegressionStats, regressor_inverse_block, row_fit, shared_inverse

AlertKind = Literal["appeared", "disappeared", "changed"]


class ForgottenStats(NamedTuple):
    """Weighted regression sums sum_t w_t (x x^T, x z^T, z z^T) with w_t in (0, 1].

    stats: RegressionStats of the weighted sums (stats.n counts samples of any weight);
    weight: sum w_t;  weight_sq: sum w_t^2.
    """

    stats: RegressionStats
    weight: float
    weight_sq: float

    @classmethod
    def empty(cls, dim: int) -> ForgottenStats:
        z = np.zeros((dim, dim))
        return cls(RegressionStats(z, z.copy(), z.copy(), 0), 0.0, 0.0)

    def plus(self, new: RegressionStats) -> ForgottenStats:
        """Add unit-weight samples."""
        s = self.stats
        total = RegressionStats(s.gram + new.gram, s.cross + new.cross, s.zz + new.zz, s.n + new.n)
        return ForgottenStats(total, self.weight + new.n, self.weight_sq + new.n)

    def forget(self, lam: float) -> ForgottenStats:
        """Every weight times lambda."""
        s = self.stats
        stats = RegressionStats(lam * s.gram, lam * s.cross, lam * s.zz, s.n)
        return ForgottenStats(stats, lam * self.weight, lam * lam * self.weight_sq)

    def restricted(self, idx: np.ndarray) -> ForgottenStats:
        """The sums over the stacked-state coordinates idx only (the clients still in the run)."""
        s, ix = self.stats, np.ix_(idx, idx)
        return ForgottenStats(RegressionStats(s.gram[ix], s.cross[ix], s.zz[ix], s.n), self.weight, self.weight_sq)

    def plus_within(self, new: RegressionStats, idx: np.ndarray) -> ForgottenStats:
        """Add unit-weight samples whose sums cover only the coordinates idx (zero elsewhere)."""
        D = self.stats.gram.shape[0]
        gram, cross, zz = (np.zeros((D, D)) for _ in range(3))
        for full, part in ((gram, new.gram), (cross, new.cross), (zz, new.zz)):
            full[np.ix_(idx, idx)] = part
        return self.plus(RegressionStats(gram, cross, zz, new.n))

    @property
    def effective_size(self) -> float:
        """Kish's (sum w)^2 / sum w^2."""
        return self.weight**2 / self.weight_sq if self.weight_sq > 0 else 0.0

    def for_fit(self) -> RegressionStats:
        """The sums with n = sum w: the per-step scale of the newton rule's penalty."""
        return self.stats._replace(n=self.weight)

    def for_tests(self) -> RegressionStats:
        """The sums with n = N_eff: the sample size of the GC tests' chi-square approximation."""
        return self.stats._replace(n=self.effective_size)


class ChangeTest(NamedTuple):
    """Wald tests of a change of block (m, n) between the past and the new window, (M, M) [target, source]."""

    statistic: np.ndarray
    dof: np.ndarray
    log10_pvalue: np.ndarray


def change_tests(past: ForgottenStats, new: RegressionStats, blocks: Blocks, diagonal: Diagonal) -> ChangeTest:
    """The Chow-type test of the module docstring, for every ordered pair."""
    M = len(blocks.dims)
    statistic, dof = np.full((M, M), np.nan), np.zeros((M, M), dtype=int)
    W_past, W_new = shared_inverse(past.stats.gram), shared_inverse(new.gram)
    kish = past.weight_sq / past.weight
    for m in range(M):
        fit_past = row_fit(past.stats, W_past, blocks, m, diagonal)
        fit_new = row_fit(new, W_new, blocks, m, diagonal)
        sigma = fit_new.rss / (new.n - fit_new.n_regressors)
        for n in range(M):
            if n == m:
                continue
            src = blocks.slice(n)
            d = fit_new.coef[:, src] - fit_past.coef[:, src]
            V = regressor_inverse_block(W_new, blocks, m, n, diagonal) + kish * regressor_inverse_block(
                W_past, blocks, m, n, diagonal
            )
            statistic[m, n] = float(np.trace(np.linalg.solve(sigma, d) @ np.linalg.solve(V, d.T)))
            dof[m, n] = blocks.dims[m] * blocks.dims[n]
    off = ~np.eye(M, dtype=bool)
    logp = np.full((M, M), np.nan)
    logp[off] = chi2_log10_sf(statistic[off], dof[off])
    return ChangeTest(statistic, dof, logp)


def classify(before_edge: bool, strength_past: float, strength_new: float, new_significant: bool) -> AlertKind:
    """The kind of a significant change (module docstring)."""
    if not before_edge:
        return "appeared" if strength_new > strength_past else "changed"
    return "changed" if new_significant else "disappeared"


def change_tests_hac(
    past: ForgottenStats, new: RegressionStats, X: np.ndarray, Z: np.ndarray, blocks: Blocks, diagonal: Diagonal
) -> ChangeTest:
    """change_tests with a variance that allows for serial dependence (module docstring, 'HAC variance').

    X: (N, D) the new window's regressors x_t (stacked lagged states), Z: (N, D) its pseudo-observations z_t,
    the rows whose sums are `new`. The p-values are F tails with the Bartlett kernel's equivalent degrees of
    freedom (fedgc.core.hac.wald_test)."""
    M = len(blocks.dims)
    N = X.shape[0]
    if X.shape != Z.shape or new.n != N:
        raise ValueError(f"X and Z must be the ({new.n}, D) rows of the new window, got {X.shape} and {Z.shape}")
    statistic, dof, logp = np.full((M, M), np.nan), np.zeros((M, M), dtype=int), np.full((M, M), np.nan)
    W_past, W_new = shared_inverse(past.stats.gram), shared_inverse(new.gram)
    kish = past.weight_sq / past.weight
    for m in range(M):
        own, idx = blocks.slice(m), blocks.regressors(m, diagonal)
        fit_past = row_fit(past.stats, W_past, blocks, m, diagonal)
        fit_new = row_fit(new, W_new, blocks, m, diagonal)
        K = fit_new.n_regressors
        sigma = fit_new.rss / (N - K)
        resid = Z[:, own] - X @ fit_new.coef.T  # e_t, (N, D_m)
        U = X[:, idx] @ np.linalg.inv(new.gram[np.ix_(idx, idx)])  # rows (G^{-1} x_t)^T over m's regressors (G = X^T X)
        for n, cols in blocks.sources(m, diagonal):
            src = blocks.slice(n)
            d = fit_new.coef[:, src] - fit_past.coef[:, src]
            # influence of the new window's block estimate: vec(e_t (G^{-1} x_t)_n^T), row-major as d.ravel()
            phi = (resid[:, :, None] * U[:, None, cols]).reshape(N, -1)
            lrv = bartlett_lrv(phi)
            V_new = N * lrv.S
            white = np.kron(sigma, regressor_inverse_block(W_new, blocks, m, n, diagonal))
            # the past estimate's dependence is taken to inflate its variance as much as the new window's
            inflation = float(np.trace(np.linalg.solve(white, V_new))) / white.shape[0]
            V_past = kish * np.kron(sigma, regressor_inverse_block(W_past, blocks, m, n, diagonal))
            test = wald_test(d.ravel(), V_new + inflation * V_past, nu=equivalent_df(N, lrv.bandwidth, K))
            statistic[m, n], dof[m, n], logp[m, n] = test.statistic, test.dof, test.log10_pvalue
    return ChangeTest(statistic, dof, logp)


class ScaledChi2(NamedTuple):
    """The change statistics' null on a normal-operation reference: statistic ~ scale chi2(g q) / g for a test
    of q degrees of freedom (g: dof_factor), fitted by moments over every pair and window (n of them).
    scale_dof: nu, the degrees of freedom of the estimated scale (scale_hat / scale ~ chi2(nu) / nu); inf (the
    default) takes the fitted scale as known, a finite nu gives the predictive F tail (scaled_chi2_log10_sf)."""

    scale: float
    dof_factor: float
    n: int
    scale_dof: float = float("inf")


def fit_scaled_chi2(statistic: np.ndarray, dof: np.ndarray, *, predictive: bool = False) -> ScaledChi2:
    """Satterthwaite's two moments, pooled after per-test normalisation: E[stat] = c q, Var[stat] = 2 c^2 q / g,
    so c = mean(stat / q) and 1 / g = mean((stat - c q)^2 / (2 c^2 q)). Nan statistics (the diagonal) are left out.

    predictive: also the scale's own degrees of freedom. With g known, Var(c_hat) = 2 c^2 sum(1 / (g q_i)) / n^2,
    matched to c chi2(nu) / nu: nu = g n^2 / sum(1 / q_i) (= g sum q_i when every q_i is equal). A new statistic
    over its q then follows c_hat F(g q, nu) instead of c_hat chi2(g q) / (g q): a reference of few statistics
    widens the tail by the uncertainty of its own scale (g's uncertainty is not carried)."""
    statistic, dof = np.asarray(statistic, dtype=np.float64).ravel(), np.asarray(dof, dtype=np.float64).ravel()
    keep = np.isfinite(statistic) & (dof > 0)
    s, q = statistic[keep], dof[keep]
    if s.size < 2:
        raise ValueError(f"a scaled chi-square needs at least 2 reference statistics, got {s.size}")
    c = float(np.mean(s / q))
    spread = float(np.mean((s - c * q) ** 2 / (2.0 * c * c * q)))
    if not (c > 0 and spread > 0):
        raise ValueError("the reference statistics are degenerate (all zero or all equal to their mean)")
    g = 1.0 / spread
    nu = g * s.size**2 / float(np.sum(1.0 / q)) if predictive else float("inf")
    return ScaledChi2(c, g, int(s.size), nu)


def scaled_chi2_log10_sf(statistic: np.ndarray, dof: np.ndarray, null: ScaledChi2) -> np.ndarray:
    """log10 P(scale chi2(g q) / g > statistic) elementwise, or with a finite null.scale_dof = nu
    log10 P(F(g q, nu) > statistic / (scale q)); nan where the statistic is nan."""
    statistic, dof = np.asarray(statistic, dtype=np.float64), np.asarray(dof, dtype=np.float64)
    out = np.full(statistic.shape, np.nan)
    ok = np.isfinite(statistic) & (dof > 0)
    g = null.dof_factor
    if not np.isfinite(null.scale_dof):
        out[ok] = chi2_log10_sf(statistic[ok] * g / null.scale, g * dof[ok])
        return out
    out[ok] = f_log10_sf(statistic[ok] / (null.scale * dof[ok]), g * dof[ok], null.scale_dof)
    return out
