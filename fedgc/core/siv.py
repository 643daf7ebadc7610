"""SIV: snapshot instrumental-variable Granger tests on the server (issue 13).

Every client m sends its snapshot series x^m (T, r_m) once (fedgc.core.snapshots): x^m = S_m h^m + e^m,
e^m white. Stacking the sites, x_t (T, R) follows

    x_t = sum_n sum_{l in lags(n)} B_{n,l} x^n_{t-l} + u_t,   u_t = v_t + e_t - sum B e_{t-l}   (MA(P)),

so least squares on the noisy regressors is biased (errors in variables) but u_t is uncorrelated with
x_{<= t-P-1}: two-stage least squares with instruments from x_{t-P-1}, ..., x_{t-2P-2} (q = P + 2 lags)
is consistent. The instruments are high-passed, z_t = x_t - EMA_{t-1}(x) with an exponential moving
average of time constant W = min(sqrt(T), 100) (a function of x_{<= t} only), so slow drifts and
near-integrated states do not dominate them.

Regressors: lag 1 of every site, plus lag-2 directions chosen per site (`select_lags`; on series longer
than SELECTION_ROWS, on their last SELECTION_ROWS rows: every candidate costs a refit and a test over the
rows, and at 100000 rows a lag that matters is found at any useful strength). Test of
"site n does not Granger-cause site m": all of n's coefficients in m's equations are zero, a block Wald
test with the batch-means long-run covariance of the 2SLS influence series and its exact F reference
(fedgc.core.hac, fedgc.core.pair_hac; batches of at least P + 2 rows, so the MA(P) error's
autocorrelations stay inside them). The covariance is that of the influence series times the residuals
high-passed with window RESIDUAL_WINDOWS W (from 0, their mean). The high-passed instruments leave the
influence series nearly blind to the residuals' slow part (a site's own drift): its gain
|H(w)|^2 = (wW)^2 / (1 + (wW)^2) is below 0.1 for periods longer than 2 pi 3W. That part adds little to
the estimate's error but, nearly constant over a batch, much to the batch sums (with it, the p-values
under an AR(0.999) drift had median 0.85 at T = 20000). Removing the residuals' content down to the
instruments' own window W would also remove the part that leaks through the gain: anti-conservative
under a strong drift (design.md §6b). The lag selection tests a candidate target by target with the same
covariance (its coefficients in one target site's equations) and takes M times the smallest p-value.

Two tests of every pair, the smaller p-value doubled (Bonferroni). The lagged-instrument test above is
consistent but its instruments are weak where the states forget fast. Under "n does not Granger-cause m"
m's equations hold none of n's snapshot noise e^n (given that the sites' snapshot noises are independent
of each other and of the process noise), so n's own past is a valid instrument there, and for n's
regressors it is a strong one: the source-instrumented test refits with n's own high-passed regressors
among the instruments (_source_refits; one refit per source, all sources through the same products) and
tests n's block. Under the alternative that refit's coefficients are attenuated by e^n (its instrument is
then not valid), so it loses where n's snapshot is noisy against what the other regressors leave of it:
weakly observed or slow states, where the lagged test is the stronger. Measurements: docs/robustness.md.
Results are [target m, source n] matrices as in fedgc.core.granger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg

from fedgc.core.fdr import benjamini_hochberg
from fedgc.core.granger import GCResult, block_strength
from fedgc.core.hac import CHUNK_VALUES, wald_tests
from fedgc.core.pair_hac import Mapper, PairLRV, ResidualChange, pair_lrvs
from fedgc.core.regression import Blocks
from fedgc.core.snapshots import stacked_lag_gram

MAX_LAG = 2
MIN_STRENGTH = 1.5  # partial first-stage strength (about 1 when a direction adds nothing) to consider a lag
LAG_LEVEL = 0.01  # a lag is added when its Wald test has p < LAG_LEVEL / M
RESIDUAL_WINDOWS = 3.0  # the residuals in the tests' covariances are high-passed with window 3 W (module docstring)
MAX_WINDOW = 100.0
INSTRUMENTS = ("both", "lagged")  # siv_tests(instruments=...): server.siv_instruments
SELECTION_ROWS = 100_000  # lags are selected on the last rows of longer series (see siv_tests)


class LagDirection(NamedTuple):
    """An extra regressor a^T x^n_{t-lag} of site `site`; a: (r_n,) unit vector."""

    site: int
    lag: int
    a: np.ndarray


class SIVResult(NamedTuple):
    """Every matrix (M, M), [target m, source n], diagonal NaN (dof 0).

    log10_pvalue: twice the smaller p-value of the pair's two tests (module docstring), at most 1;
    statistic: W of that test;  dof: its q = r_m x (number of n's regressors);  batches: its B, the
    batch-means covariance's batches (int) of its F(q, B - q) reference;
    via_source: True where the smaller p-value is the source-instrumented test's (bool, False on the diagonal);
    coef_norm: ||B^{mn}|| Frobenius norm of n's coefficients in m's equations, from the lagged-instrument
    fit (consistent under either hypothesis; snapshot units);
    ranks: r_m per site;  extra: the lag-2 directions chosen;  max_lag: P;  window: W of the high-pass;
    n_obs: N rows of the regression;  n_regressors: K."""

    statistic: np.ndarray
    dof: np.ndarray
    log10_pvalue: np.ndarray
    coef_norm: np.ndarray
    batches: np.ndarray
    via_source: np.ndarray
    ranks: tuple[int, ...]
    extra: tuple[LagDirection, ...]
    max_lag: int
    window: float
    n_obs: int
    n_regressors: int


def highpass_window(n_steps: int) -> float:
    """W = min(sqrt(T), 100)."""
    return float(min(np.sqrt(n_steps), MAX_WINDOW))


def ema_highpass(x: np.ndarray, window: float, *, start: np.ndarray | float | None = None) -> np.ndarray:
    """x_t - m_{t-1} for x (T, R): m_t = lam m_{t-1} + (1 - lam) x_t, lam = 1 - 1 / window, a function of
    x_{<= t} only. start: m_{-1}, the average before the first row; None: m_0 = x_0 (so the first row is 0).
    A series of known mean (residuals: 0) starts there: from x_0, the first few windows of rows would carry
    -x_0 lam^t, a full-variance transient."""
    x = np.asarray(x, dtype=np.float64)
    if not window >= 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    lam = 1.0 - 1.0 / window
    hp = np.empty_like(x)
    if start is None:
        hp[0], first = 0.0, x[0]
    else:
        hp[0] = x[0] - start
        first = lam * np.broadcast_to(np.asarray(start, dtype=np.float64), x[0].shape) + (1.0 - lam) * x[0]
    for t0, m in _ema_blocks(x, lam, first):  # m: m_{t0-1} .. m_{t0+n-2}, the averages hp_t subtracts
        hp[t0 : t0 + m.shape[0]] = x[t0 : t0 + m.shape[0]] - m
    return hp


def _ema_blocks(x: np.ndarray, lam: float, first: np.ndarray, block: int = 64) -> Iterator[tuple[int, np.ndarray]]:
    """(t0, m_{t0-1 .. t0+n-2}) for t0 = 1, 1 + block, ...: the moving average m_t = lam m_{t-1} + (1 - lam) x_t,
    m_0 = first, lagged by one step, a block at a time. Inside a block m_{t0+i} = lam^(i+1) m_{t0-1} +
    sum_{s <= i} (1 - lam) lam^(i-s) x_{t0+s}: one small matrix product."""
    i = np.arange(block)
    L = np.tril((1.0 - lam) * lam ** np.subtract.outer(i, i).clip(min=0))
    carry = lam ** (i + 1.0)
    last = first
    for t0 in range(1, x.shape[0], block):
        n = min(block, x.shape[0] - t0)
        m = L[:n, :n] @ x[t0 : t0 + n] + carry[:n, None] * last
        yield t0, np.vstack([last[None], m[:-1]])
        last = m[-1]


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh(0.5 * (S + S.T))
    w = np.maximum(w, 1e-10 * max(float(w.max()), 1e-300))
    return (U / np.sqrt(w)) @ U.T


class _Design(NamedTuple):
    """Rows t = start .. T-1: targets Y (N, R), instruments Z (N, q R) as the projector onto them, lagged
    x by lag, the high-passed series by lag (highpassed[l]_t = z_{t-l}), site offsets."""

    Y: np.ndarray
    project: Projector
    lagged: dict[int, np.ndarray]
    highpassed: dict[int, np.ndarray]
    offsets: np.ndarray


def _design(x: np.ndarray, dims: Sequence[int], max_lag: int, window: float) -> _Design:
    T = x.shape[0]
    q = max_lag + 2
    start = max_lag + q
    hp = ema_highpass(x, window)
    # Z = [hp_{t-l} for l in lags], t = start .. T - 1: q row ranges of hp, never copied side by side. Its rows
    # are w_s = (z_s, ..., z_{s-q+1}) of z = hp[:T - max_lag - 1], s = q - 1 .., so Z^T Z is z's stacked lag gram.
    parts = [hp[start - lag : T - lag] for lag in range(max_lag + 1, max_lag + q + 1)]
    project = Projector.of(parts, gram=stacked_lag_gram(hp[: T - max_lag - 1], q - 1))
    lagged = {lag: x[start - lag : T - lag] for lag in range(1, max_lag + 1)}
    highpassed = {lag: hp[start - lag : T - lag] for lag in range(1, max_lag + 1)}
    return _Design(x[start:], project, lagged, highpassed, np.concatenate([[0], np.cumsum(dims)]).astype(int))


def _regressors(
    lagged: dict[int, np.ndarray], offsets: np.ndarray, extra: Sequence[LagDirection]
) -> tuple[np.ndarray, list[list[int]]]:
    """X (N, K): every site's x_{t-1}, then the extra directions, from the lagged series (or their
    instrumented fits: the map is linear); cols[n]: n's columns of X."""
    cols = [list(range(int(offsets[n]), int(offsets[n + 1]))) for n in range(len(offsets) - 1)]
    if not extra:
        return lagged[1], cols
    blocks = [lagged[1]]
    pos = int(offsets[-1])
    for e in extra:
        blocks.append(lagged[e.lag][:, offsets[e.site] : offsets[e.site + 1]] @ e.a[:, None])
        cols[e.site].append(pos)
        pos += 1
    return np.hstack(blocks), cols


def _row_blocks(n_rows: int, width: int) -> list[tuple[int, int]]:
    """(lo, hi) of the blocks of rows of an (n_rows, width) matrix, CHUNK_VALUES values each."""
    step = max(1, CHUNK_VALUES // max(width, 1))
    return [(lo, min(n_rows, lo + step)) for lo in range(0, n_rows, step)]


class Projector(NamedTuple):
    """The orthogonal projection onto the columns of Z = [Z_1 | ... | Z_k] (N, L), given as its column groups
    `parts` (each (N, w_i), e.g. row ranges of one series: views, so Z is never held side by side):
    P_Z X = Z (Z^T Z)^{-1} Z^T X, with Z^T Z factored once (Cholesky: the instruments are high-passed lags of
    a stationary series, well conditioned) and every product taken group by group. When Z^T Z is not well
    conditioned, an orthonormal basis of Z's column space (SVD, numerically zero directions dropped) is the
    one part instead."""

    parts: tuple[np.ndarray, ...]
    factor: tuple[np.ndarray, bool] | None  # Cholesky factor of Z^T Z, or None: parts[0] is an orthonormal basis

    @classmethod
    def of(cls, Z: np.ndarray | Sequence[np.ndarray], *, gram: np.ndarray | None = None) -> Projector:
        """From Z itself, or from its column groups (arrays with the same rows); gram: Z^T Z, when the caller
        has it for less than the products of the groups."""
        parts = (Z,) if isinstance(Z, np.ndarray) else tuple(Z)
        if gram is None:
            columns = Blocks.of([part.shape[1] for part in parts])
            gram = np.empty((columns.total, columns.total))
            for i, a in enumerate(parts):
                for j in range(i + 1):
                    block = a.T @ a if i == j else a.T @ parts[j]
                    gram[columns.slice(i), columns.slice(j)] = block
                    gram[columns.slice(j), columns.slice(i)] = block.T
        scale = np.sqrt(np.diag(gram))
        try:
            factor = scipy.linalg.cho_factor(gram, lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            factor = None
        else:  # the factor's diagonal bounds the Gram matrix's conditioning (relative to the column norms)
            if np.min(np.abs(np.diag(factor[0])) / np.maximum(scale, 1e-300)) < 1e-6:
                factor = None
        if factor is not None:
            return cls(parts, factor)
        whole = np.hstack(parts)
        U, sv, _ = np.linalg.svd(whole, full_matrices=False)
        basis = U[:, sv > sv[0] * max(whole.shape) * np.finfo(np.float64).eps]
        return cls((basis,), None)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        ZtX = np.vstack([part.T @ X for part in self.parts])
        C = ZtX if self.factor is None else scipy.linalg.cho_solve(self.factor, ZtX, check_finite=False)
        columns = Blocks.of([part.shape[1] for part in self.parts])
        n_rows = self.parts[0].shape[0]
        out = np.empty((n_rows, X.shape[1]))
        for lo, hi in _row_blocks(n_rows, X.shape[1]):  # Z C a block of rows at a time: small temporaries
            block = out[lo:hi]
            np.matmul(self.parts[0][lo:hi], C[columns.slice(0)], out=block)
            for i in range(1, len(self.parts)):
                block += self.parts[i][lo:hi] @ C[columns.slice(i)]
        return out

    def lagged(self, lagged: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """P_Z of every lag's series."""
        return {k: self(v) for k, v in lagged.items()}


class _TSLS(NamedTuple):
    """B: (K, R) coefficients;  resid: (N, R);  Xh: (N, K) the instrumented regressors P_Z X;
    G: (K, K) (Xh^T Xh / N)^+. The influence series Xh G (B - B_true = influence^T u / N) is `influence()`."""

    B: np.ndarray
    resid: np.ndarray
    Xh: np.ndarray
    G: np.ndarray

    def influence(self) -> np.ndarray:
        return self.Xh @ self.G


def _tsls(Y: np.ndarray, X: np.ndarray, Xh: np.ndarray) -> _TSLS:
    """2SLS from the instrumented regressors Xh = P_Z X: B = (Xh^T Xh)^{-1} Xh^T Y."""
    N = Y.shape[0]
    G = np.linalg.pinv(Xh.T @ Xh / N)
    B = G @ (Xh.T @ Y / N)
    resid = X @ B
    np.subtract(Y, resid, out=resid)
    return _TSLS(B, resid, Xh, G)


class _Added(NamedTuple):
    """What adding regressors Xc (N, c) to a 2SLS fit changes (Frisch-Waugh-Lovell): B_c (c, R) their
    coefficients, influence_c (N, c) their influence series, shift (N, c) = Xc - X Gamma: the new residuals
    are base - shift B_c (base: the fit's residuals), a change of rank c (`resid`)."""

    B: np.ndarray
    influence: np.ndarray
    shift: np.ndarray
    base: np.ndarray

    @property
    def resid(self) -> np.ndarray:
        return self.base - self.shift @ self.B


class _Extension(NamedTuple):
    """Adding columns Xk (N, k) to a 2SLS fit on X, shared by every subset of them and its directions:
    E (N, k) = P_Z Xk minus its projection on the fit's Xh (what the fit's instrumented regressors leave),
    EtY (k, R) = E^T Y / N, shift (N, k) = Xk - X Gamma with Gamma = (Xh^T Xh)^{-1} Xh^T P_Z Xk, base (N, R)
    the fit's residuals. The second stage of the refit on [X, Xk[:, cols] A] regresses Y on
    [Xh, E[:, cols] A] (`add`). The refit's residuals are linear in (shift, base), so the extension of the
    high-passed pair (`highpassed`) adds high-passed residuals."""

    E: np.ndarray
    EtY: np.ndarray
    shift: np.ndarray
    base: np.ndarray

    def add(self, A: np.ndarray, cols: slice = slice(None)) -> _Added:
        """The refit on [X, Xk[:, cols] A], A (len(cols), c): B_c = (A^T E^T E A / N)^+ A^T EtY[cols]; X's
        coefficients move by -Gamma[:, cols] A B_c."""
        E = self.E[:, cols] @ A
        Gc = np.linalg.pinv(E.T @ E / E.shape[0])
        Bc = Gc @ (A.T @ self.EtY[cols])
        return _Added(Bc, E @ Gc, self.shift[:, cols] @ A, self.base)

    def highpassed(self, window: float) -> _Extension:
        return self._replace(shift=_residual_highpass(self.shift, window), base=_residual_highpass(self.base, window))


def _extension(fit: _TSLS, Y: np.ndarray, X: np.ndarray, Xk: np.ndarray, Xk_hat: np.ndarray) -> _Extension:
    """The _Extension of fit (on X, targets Y) by the columns Xk, Xk_hat = P_Z Xk: four products over the
    rows for all of Xk's columns at once."""
    N = X.shape[0]
    gamma = fit.G @ (fit.Xh.T @ Xk_hat / N)
    E = Xk_hat - fit.Xh @ gamma
    return _Extension(E, E.T @ Y / N, Xk - X @ gamma, fit.resid)


def _residual_highpass(resid: np.ndarray, window: float) -> np.ndarray:
    """The residuals as the tests' covariances take them: high-passed with window RESIDUAL_WINDOWS x the
    instruments' (window), from 0 (module docstring). Linear in resid."""
    return ema_highpass(resid, RESIDUAL_WINDOWS * window, start=0.0)


def _strongest_target(
    B: np.ndarray, influence: np.ndarray, u: np.ndarray, offsets: np.ndarray, *, max_lag: int
) -> float:
    """log10 p of B (k, R) = 0 (added regressors' coefficients in every equation) as M per-target tests, the
    Bonferroni-adjusted smallest: target site m's block B[:, m's columns] = 0 by the pair tests' Wald (the
    batch-means covariance of influence_t (N, k) (x) u_t[m's columns], u the high-passed residuals; F
    reference). A lag usually matters in a few equations (the site's own, its children's); one test of
    all k R restrictions spread its power over them, and its 2 k R batches were a few rows long."""
    targets, source = _site_columns(offsets), [np.arange(B.shape[0])]
    pairs = [(m, 0) for m in range(len(targets))]
    lrvs = pair_lrvs(influence, u, source, targets, pairs, min_rows=max_lag + 2)
    _, _, log10p, _, _ = _block_walds(B, influence.shape[0], lrvs, pairs, source, targets)
    return float(min(0.0, log10p.min() + np.log10(len(targets))))


def _site_columns(offsets: np.ndarray) -> list[np.ndarray]:
    """Every site's columns of the stacked series, from the sites' offsets (M + 1,)."""
    return [np.arange(offsets[m], offsets[m + 1]) for m in range(len(offsets) - 1)]


class _SourceRefits(NamedTuple):
    """The 2SLS refits for the tests of every source site n, each with n's own regressors among the
    instruments (_source_refits): B (K, R) with rows cols[n] n's coefficients in n's refit; influence (N, K)
    with columns cols[n] their influence series in n's refit; changes[n] n's refit's change to the fit's
    residuals (pair_hac.ResidualChange), high-passed as the tests take them (_residual_highpass)."""

    B: np.ndarray
    influence: np.ndarray
    changes: list[ResidualChange]


def _source_refits(
    fit: _TSLS, Y: np.ndarray, X: np.ndarray, project: Projector, own: np.ndarray, cols: Sequence[np.ndarray],
    window: float,
) -> _SourceRefits:  # fmt: skip
    """The refits of fit (targets Y, regressors X, instruments Z) for every source n with
    own[:, cols[n]] (own (N, K): every regressor high-passed) among the instruments.

    Under "n does not Granger-cause m", m's equations hold none of n's snapshot noise, so n's own past is
    a valid instrument there (module docstring), and a strong one for n's regressors. With
    eps = own_n - P_Z own_n and Q (N, k') an orthonormal basis of it, P_[Z, own_n] = P_Z + Q Q^T: the
    instrumented regressors are Xh + Q C, C = Q^T X (k', K), their scaled Gram A + C^T C / N, a rank-k'
    update of the fit's A = G^-1 (Woodbury, H = (N I + C G C^T)^-1):

        B_n = B + G C^T D,   D = Q^T Y / N - H (C B + C G C^T Q^T Y / N),

    residuals resid - X G C^T D, and the influence series of n's rows (Xh + Q C) V, V = A_n^-1[:, cols[n]] =
    G[:, cols[n]] - G C^T H (G C^T)[cols[n]]^T. Every product over the rows is taken for all sources at once."""
    N = X.shape[0]
    eps = own - project(own)
    bases = []
    for c in cols:  # an orthonormal basis of each source's columns of eps: eps[:, c] @ basis
        w, U = np.linalg.eigh(eps[:, c].T @ eps[:, c])
        keep = w > max(float(w.max()), 1e-300) * 1e-12
        bases.append(U[:, keep] / np.sqrt(w[keep]))
    spans = Blocks.of([basis.shape[1] for basis in bases])
    Q = np.empty((N, spans.total))
    for i, (c, basis) in enumerate(zip(cols, bases, strict=True)):
        np.matmul(eps[:, c], basis, out=Q[:, spans.slice(i)])
    del eps
    C_all, g_all = Q.T @ X, Q.T @ Y / N
    GC_all = fit.G @ C_all.T  # (K, K')
    B = fit.B.copy()
    V_all = np.empty((X.shape[1], X.shape[1]))
    CV = []
    D_all = np.empty((spans.total, Y.shape[1]))
    for i, c in enumerate(cols):
        C, g, GC = C_all[spans.slice(i)], g_all[spans.slice(i)], GC_all[:, spans.slice(i)]
        CGC = C @ GC
        H = np.linalg.inv(N * np.eye(CGC.shape[0]) + CGC)
        D_all[spans.slice(i)] = D = g - H @ (C @ fit.B + CGC @ g)
        B[c] += GC[c] @ D
        V_all[:, c] = V = fit.G[:, c] - GC @ (H @ GC[c].T)
        CV.append(C @ V)
    influence = fit.Xh @ V_all
    for i, c in enumerate(cols):
        influence[:, c] += Q[:, spans.slice(i)] @ CV[i]
    del Q
    shift = _residual_highpass(X @ GC_all, window)
    changes = [ResidualChange(shift[:, spans.slice(i)], D_all[spans.slice(i)]) for i in range(len(cols))]
    return _SourceRefits(B, influence, changes)


def _pair_tests(
    B: np.ndarray, influence: np.ndarray, resid: np.ndarray, cols: Sequence[Sequence[int] | np.ndarray],
    dims: Sequence[int], max_lag: int, changes: Sequence[ResidualChange] | None = None,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """(W, q, log10 p, ||B^{mn}||, batches) [m, n] of B[cols[n], m's columns] = 0 for every ordered pair (m's
    columns: its dims[m] columns of resid, sites in order; resid the high-passed residuals, see the module
    docstring, or source n's: resid - changes[n].shift @ changes[n].D): Wald with the batch-means
    covariance of phi_t = influence_t[cols[n]] (x) resid_t[m's columns] (fedgc.core.pair_hac; batches of
    at least max_lag + 2 rows, as u is MA(max_lag)) and F(q, B - q)."""
    M = len(cols)
    sources = [np.asarray(c, dtype=int) for c in cols]
    targets = _site_columns(np.concatenate([[0], np.cumsum(dims)]).astype(int))
    pairs = [(m, n) for m in range(M) for n in range(M) if n != m]
    lrvs = pair_lrvs(influence, resid, sources, targets, pairs, min_rows=max_lag + 2, changes=changes)
    tests = _block_walds(B, influence.shape[0], lrvs, pairs, sources, targets)
    m_idx, n_idx = np.array(pairs).T
    out = []
    for values, fill in zip(tests, (np.nan, 0, np.nan, np.nan, 0), strict=True):
        matrix = np.full((M, M), fill, dtype=values.dtype)
        matrix[m_idx, n_idx] = values
        out.append(matrix)
    return tuple(out)


def _block_walds(
    B: np.ndarray, N: int, lrvs: Sequence[PairLRV], pairs: Sequence[tuple[int, int]], sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """(W, q, log10 p, ||block||, batches), one entry per pair (m, n) in order: the Wald test of B[sources[n],
    targets[m]] = 0 with the covariance lrvs[p].S / N and F(q, B_p - q), batched by block size."""
    P = len(pairs)
    statistic, log10p, norm = np.empty(P), np.empty(P), np.empty(P)
    dof, batches = np.zeros(P, dtype=int), np.array([lrv.batches for lrv in lrvs], dtype=int)
    by_size: dict[tuple[int, int], list[int]] = {}
    for p, (m, n) in enumerate(pairs):
        by_size.setdefault((sources[n].size, targets[m].size), []).append(p)
    for members in by_size.values():
        m_idx, n_idx = np.array([pairs[p] for p in members]).T
        rows = np.stack([sources[n] for n in n_idx])[:, :, None]
        blocks = B[rows, np.stack([targets[m] for m in m_idx])[:, None, :]]  # (P, k_n, r_m)
        V = np.stack([lrvs[p].S / N for p in members])
        tests = wald_tests(blocks.reshape(len(members), -1), V, nu=batches[members] - 1.0)
        statistic[members], dof[members], log10p[members] = tests.statistic, tests.dof, tests.log10_pvalue
        norm[members] = np.linalg.norm(blocks, axis=(1, 2))
    return statistic, dof, log10p, norm, batches


def _strengths(E: np.ndarray, V: np.ndarray, n_instruments: int) -> tuple[np.ndarray, np.ndarray]:
    """Partial first-stage strengths of a candidate block (descending) and their directions (columns):
    eigen-pairs of Svv^{-1/2} E^T E Svv^{-1/2} / L, E (N, d) the part of the candidate's instrumented fit not
    spanned by the current regressors' fits, V its first-stage residuals, Svv = V^T V / N (a Cragg-Donald F:
    about 1 when the candidate adds nothing the instruments identify)."""
    W = _inv_sqrt(V.T @ V / E.shape[0])
    w, U = np.linalg.eigh(W @ (E.T @ E) @ W / n_instruments)
    order = np.argsort(w)[::-1]
    return w[order], W @ U[:, order]


def select_lags(
    xs: Sequence[np.ndarray], *, max_lag: int = MAX_LAG, min_strength: float = MIN_STRENGTH,
    level: float = LAG_LEVEL, window: float | None = None, parallel_map: Mapper = map,
) -> tuple[LagDirection, ...]:  # fmt: skip
    """Extra lag directions, greedy and most significant first. Start from lag 1 for every site; a
    candidate for site n (lag k = its last added lag + 1 <= max_lag) is the set of directions of x^n_{t-k}
    with partial first-stage strength >= min_strength (an unneeded lag is not identified by the instruments:
    x_{t-1} already spans its instrumented part); it is tested in the refit with it added (Wald over all
    targets); the most significant candidate is added if p < level / M. Instruments stay at lags
    max_lag + 1 .. 2 max_lag + 2 during the selection. The candidates of a step are evaluated through
    parallel_map."""
    x, dims = _stack(xs)
    window = highpass_window(x.shape[0]) if window is None else float(window)
    return _select_lags(
        x, dims, max_lag=max_lag, min_strength=min_strength, level=level, window=window, parallel_map=parallel_map
    )


def _select_lags(
    x: np.ndarray, dims: Sequence[int], *, max_lag: int, min_strength: float, level: float, window: float,
    parallel_map: Mapper,
) -> tuple[LagDirection, ...]:  # fmt: skip
    M = len(dims)
    if max_lag < 2:
        return ()
    d = _design(x, dims, max_lag, window)
    hat = d.project.lagged(d.lagged)
    L = (max_lag + 2) * x.shape[1]  # the instruments' count (Z's columns)
    extra: list[LagDirection] = []
    while True:
        X, _ = _regressors(d.lagged, d.offsets, extra)
        fit = _tsls(d.Y, X, _regressors(hat, d.offsets, extra)[0])
        next_lag = [2 + len({e.lag for e in extra if e.site == n}) for n in range(M)]
        # one extension of the fit per lag by all its candidates' columns, high-passed as the tests take the
        # refits' residuals; site n's candidate is its slice of its lag's extension
        slots: dict[int, tuple[int, _Extension, slice]] = {}
        for k in sorted({k for k in next_lag if k <= max_lag}):
            sites = [n for n in range(M) if next_lag[n] == k]
            cols = np.concatenate([np.arange(d.offsets[n], d.offsets[n + 1]) for n in sites])
            ext = _extension(fit, d.Y, X, d.lagged[k][:, cols], hat[k][:, cols]).highpassed(window)
            starts = np.concatenate([[0], np.cumsum([dims[n] for n in sites])])
            slots.update({n: (k, ext, slice(int(lo), int(hi))) for n, lo, hi in zip(sites, starts[:-1], starts[1:])})

        def candidate(
            n: int, slots: dict[int, tuple[int, _Extension, slice]] = slots
        ) -> tuple[float, list[LagDirection]] | None:
            """(log10 p, its directions) of site n's next lag, or None when it has none or no direction is
            strong enough."""
            if n not in slots:
                return None
            k, ext, own = slots[n]
            site = slice(int(d.offsets[n]), int(d.offsets[n + 1]))
            strength, dirs = _strengths(ext.E[:, own], d.lagged[k][:, site] - hat[k][:, site], L)
            keep = strength >= min_strength
            if not keep.any():
                return None
            A = dirs[:, keep] / np.linalg.norm(dirs[:, keep], axis=0)
            added = ext.add(A, own)
            lp = _strongest_target(added.B, added.influence, added.resid, d.offsets, max_lag=max_lag)
            return lp, [LagDirection(n, k, A[:, j]) for j in range(A.shape[1])]

        best: tuple[float, list[LagDirection]] | None = None
        for found in parallel_map(candidate, range(M)):  # the first of equally significant candidates wins
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        if best is None or best[0] >= np.log10(level / M):
            return tuple(extra)
        extra.extend(best[1])


def _stack(xs: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    if len(xs) < 2:
        raise ValueError(f"SIV tests need at least 2 sites, got {len(xs)}")
    arrays = [np.asarray(x, dtype=np.float64) for x in xs]
    for m, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] < 1:
            raise ValueError(f"site {m}: snapshot series must be (T, r >= 1), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"site {m}: snapshot series must be finite")
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"snapshot series of different lengths {sorted(lengths)}")
    dims = [a.shape[1] for a in arrays]
    T = lengths.pop()
    n_columns = (MAX_LAG + 3) * sum(dims)  # instruments (q = MAX_LAG + 2 lags) and lag-1 regressors of the selection
    if max(2 * n_columns, 100) > T - (2 * MAX_LAG + 2):
        raise ValueError(
            f"{T} steps are too few for SIV tests of {len(dims)} sites with {sum(dims)} snapshot directions"
        )
    x = np.hstack(arrays)
    return x - x.mean(axis=0), dims


def siv_tests(
    xs: Sequence[np.ndarray], *, max_lag: int = MAX_LAG, min_strength: float = MIN_STRENGTH,
    lag_level: float = LAG_LEVEL, window: float | None = None, instruments: str = "both",
    parallel_map: Mapper = map,
) -> SIVResult:  # fmt: skip
    """The SIV Granger test of every ordered pair of sites from their snapshot series xs[m] (T, r_m).
    instruments: 'both' (the lagged-instrument and the source-instrumented tests, twice the smaller p-value)
    or 'lagged' (the first alone; module docstring). parallel_map: map, or a thread pool's map (the same
    result, its independent pieces in parallel)."""
    if not (isinstance(max_lag, int) and max_lag >= 1):
        raise ValueError(f"max_lag must be an integer >= 1, got {max_lag!r}")
    if instruments not in INSTRUMENTS:
        raise ValueError(f"instruments must be one of {INSTRUMENTS}, got {instruments!r}")
    x, dims = _stack(xs)
    window = highpass_window(x.shape[0]) if window is None else float(window)
    recent = x[-SELECTION_ROWS:] - x[-SELECTION_ROWS:].mean(axis=0) if x.shape[0] > SELECTION_ROWS else x
    extra = _select_lags(
        recent, dims, max_lag=max_lag, min_strength=min_strength, level=lag_level, window=window,
        parallel_map=parallel_map,
    )  # fmt: skip
    del recent
    P = max([1, *(e.lag for e in extra)])
    d = _design(x, dims, P, window)
    X, cols = _regressors(d.lagged, d.offsets, extra)
    fit = _tsls(d.Y, X, _regressors(d.project.lagged(d.lagged), d.offsets, extra)[0])
    N, K = X.shape
    sources = [np.asarray(c, dtype=int) for c in cols]
    resid = _residual_highpass(fit.resid, window)
    refits = None
    if instruments == "both":
        own = _regressors(d.highpassed, d.offsets, extra)[0]
        refits = _source_refits(fit, d.Y, X, d.project, own, sources, window)
        del own
    del d, X  # the high-passed series (the instruments) go with the design
    lagged = _pair_tests(fit.B, fit.influence(), resid, sources, dims, P)
    del fit
    if refits is None:
        statistic, dof, log10p, norm, batches = lagged
        via_source = np.zeros(log10p.shape, dtype=bool)
    else:
        own_past = _pair_tests(refits.B, refits.influence, resid, sources, dims, P, refits.changes)
        via_source = own_past[2] < lagged[2]
        statistic, dof, log10p, _, batches = (np.where(via_source, o, g) for o, g in zip(own_past, lagged, strict=True))
        log10p = np.minimum(0.0, log10p + np.log10(2.0))  # Bonferroni over the two tests
        norm = lagged[3]  # the fit's blocks: consistent under either hypothesis
    return SIVResult(statistic, dof, log10p, norm, batches, via_source, tuple(dims), extra, P, window, int(N), int(K))


def siv_gc_result(
    result: SIVResult, *, clients: Sequence[str], blocks: Blocks, A_s: np.ndarray, alpha: float
) -> GCResult:
    """A run's GCResult from a siv_tests result over the same sites, in the same order: its statistic, dof
    and p-values, Benjamini-Hochberg edges at alpha over the M (M - 1) p-values, gc = W / N (the LR's
    ln det ratio is about its statistic / N), test 'siv'; strength the A_s block norms (the server's fit)."""
    if len(result.ranks) != len(blocks.dims) or len(clients) != len(blocks.dims):
        raise ValueError(f"SIV tests of {len(result.ranks)} sites for a result of {len(blocks.dims)}")
    M = len(result.ranks)
    off = ~np.eye(M, dtype=bool)
    pvalue = np.where(off, 10.0**result.log10_pvalue, np.nan)
    edges = np.zeros((M, M), dtype=bool)
    edges[off] = benjamini_hochberg(pvalue[off], alpha=alpha)
    return GCResult(
        tuple(clients), blocks.dims, block_strength(A_s, blocks), result.statistic / result.n_obs, result.statistic,
        result.dof, pvalue, result.log10_pvalue, edges, alpha, A_s, test="siv", via_source=result.via_source,
    )  # fmt: skip
