"""A client's snapshot series for the SIV Granger test (fedgc.core.siv): its own data, one release.

Under the local model y_t = C h_t + w_t (w white, any covariance R) the lagged covariances are
E[y_t y_{t-j}^T] = C G_j C^T for j >= 1: the noise drops out. The directions of y_t that are
correlated with the site's own past therefore span R^{-1} col(C), and projecting on them gives

    x_t = L z_t = S h_t + e_t,   z_t the standardised y_t,  S (r, D_m) of full rank,  e_t white,

a noisy but unfiltered snapshot of the state: no Kalman filter, no R, no A^{mm} needed. L holds the
leading canonical directions of z_t against (z_{t-1}, ..., z_{t-k}) (canonical correlations
rho_1 >= rho_2 >= ...); r is the number of them that Bartlett's sequential test finds nonzero:

    -(N - 1 - (P + kP + 1) / 2) sum_{i > j} ln(1 - rho_i^2) ~ chi2((P - j)(kP - j))  under rho_{j+1..} = 0,

r = the first j not rejected at `level` (at least 1). Shapes: y (T, P) -> x (T, r).

Held (sampled) analyser columns repeat a delayed value between samples: they are not snapshots of the
current state, so the caller names them in `drop` (they are left out while at least 2 columns remain).
Missing cells are set to the column mean (0 after standardising); with cells missing independently of
the process this keeps x_t = S' h_t + e_t with e_t uncorrelated over time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fedgc.core.granger import chi2_log10_sf

PAST_LAGS = 3
RANK_LEVEL = 1e-3
MIN_COLUMNS_AFTER_DROP = 2


class Snapshot(NamedTuple):
    """series: (T, r) x_t = L z_t, what the client sends;  directions: (r, P') L on the standardised kept
    columns;  correlations: (P',) canonical correlations with the past;  columns: indices of the kept
    columns of y;  dropped: indices left out (held columns)."""

    series: np.ndarray
    directions: np.ndarray
    correlations: np.ndarray
    columns: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def rank(self) -> int:
        return int(self.series.shape[1])


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh(0.5 * (S + S.T))
    w = np.maximum(w, 1e-10 * max(float(w.max()), 1e-300))
    return (U / np.sqrt(w)) @ U.T


def stacked_lag_gram(z: np.ndarray, lags: int) -> np.ndarray:
    """sum_{t=lags}^{T-1} w_t w_t^T for w_t = (z_t, z_{t-1}, ..., z_{t-lags}) ((lags + 1) P square; z (T, P)),
    without the (T, (lags + 1) P) stacked table: block (a, b), b = a + d, sums z_s z_{s-d}^T over
    s = lags - a .. T - 1 - a, which is the whole-series product M_d = z[d:]^T z[:T-d] less at most `lags`
    rows at each end. lags + 1 products of (T, P) tables instead of one of (T, (lags + 1) P)."""
    T, P = z.shape
    G = np.empty(((lags + 1) * P, (lags + 1) * P))
    for d in range(lags + 1):
        whole = z[d:].T @ z[: T - d]
        for a in range(lags + 1 - d):
            head, tail = z[d : lags - a], z[T - a : T]  # rows s = d .. lags-a-1 and T-a .. T-1
            block = whole - head.T @ z[: lags - a - d] - tail.T @ z[T - a - d : T - d]
            G[a * P : (a + 1) * P, (a + d) * P : (a + d + 1) * P] = block
            G[(a + d) * P : (a + d + 1) * P, a * P : (a + 1) * P] = block.T
    return G


def snapshot_rank(correlations: np.ndarray, *, n: int, n_past: int, level: float = RANK_LEVEL) -> int:
    """Bartlett's sequential test: the number of canonical correlations (of P = len(correlations)
    present directions against n_past past ones, n samples) that are nonzero at `level` (>= 1)."""
    rho = np.clip(np.asarray(correlations, dtype=np.float64), 0.0, 1.0 - 1e-12)
    P = rho.size
    for j in range(P):
        stat = -(n - 1 - 0.5 * (P + n_past + 1)) * float(np.sum(np.log1p(-(rho[j:] ** 2))))
        log10p = float(chi2_log10_sf(np.array([stat]), np.array([(P - j) * (n_past - j)]))[0])
        if log10p > np.log10(level):
            return max(j, 1)
    return P


def snapshot(
    y: np.ndarray, *, drop: Sequence[int] = (), rank: int | None = None, past_lags: int = PAST_LAGS,
    level: float = RANK_LEVEL, client: str = "client",
) -> Snapshot:  # fmt: skip
    """The snapshot series of one client's measurements y (T, P) (NaN: missing). drop: held columns to
    leave out (ignored if fewer than 2 columns would remain); rank: r when the client knows D_m (None: the
    sequential test at `level`); past_lags: k. ValueError naming `client` for unusable data."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"client '{client}': measurements must be a (T, P) table, got shape {y.shape}")
    if not (isinstance(past_lags, int) and past_lags >= 1):
        raise ValueError(f"client '{client}': past_lags must be an integer >= 1, got {past_lags!r}")
    if not 0 < level < 1:
        raise ValueError(f"client '{client}': level must lie in (0, 1), got {level!r}")
    T, P_all = y.shape
    bad = [j for j in drop if not 0 <= int(j) < P_all]
    if bad:
        raise ValueError(f"client '{client}': held column index(es) {bad} outside its {P_all} columns")
    dropped = tuple(sorted({int(j) for j in drop}))
    if P_all - len(dropped) < MIN_COLUMNS_AFTER_DROP:
        dropped = ()
    columns = tuple(j for j in range(P_all) if j not in dropped)
    z = np.take(y, columns, axis=1)  # a copy (indexing a row-major table's columns with a list is ~5x slower)
    P = z.shape[1]
    n = T - past_lags
    if n < 5 * P * (past_lags + 1) + 10:
        raise ValueError(
            f"client '{client}': {T} steps are too few for snapshot directions of {P} columns with {past_lags} past "
            f"lags (need at least {5 * P * (past_lags + 1) + 10 + past_lags})"
        )
    missing = ~np.isfinite(z)
    complete = not missing.any()
    if not complete and np.any(T - missing.sum(axis=0) < 2):
        raise ValueError(f"client '{client}': a column has fewer than 2 observed values")
    # equal extremes, not sd == 0: the mean of a constant 0.1 is not exactly 0.1, nor its deviations 0
    constant = np.fmax.reduce(z, axis=0) == np.fmin.reduce(z, axis=0)
    if np.any(constant):
        flat = [columns[j] for j in np.flatnonzero(constant)]
        raise ValueError(f"client '{client}': column(s) {flat} are constant; a snapshot needs varying sensors")
    if complete:
        z -= z.mean(axis=0)
        z /= np.sqrt(np.einsum("tj,tj->j", z, z) / T)  # z.std(axis=0) without its (T, P) temporaries
    else:
        sd = np.nanstd(z, axis=0)
        z -= np.nanmean(z, axis=0)
        z /= sd
        z[missing] = 0.0  # the column mean
    G = stacked_lag_gram(z, past_lags) / n
    S_ff, S_pp, S_fp = G[:P, :P], G[P:, P:], G[:P, P:]
    W_f = _inv_sqrt(S_ff)
    U, rho, _ = np.linalg.svd(W_f @ S_fp @ _inv_sqrt(S_pp))
    if rank is None:
        r = snapshot_rank(rho, n=n, n_past=past_lags * P, level=level)
    elif isinstance(rank, (int, np.integer)) and rank >= 1:
        r = min(int(rank), P)
    else:
        raise ValueError(f"client '{client}': rank must be None or a positive integer, got {rank!r}")
    L = (W_f @ U[:, :r]).T
    return Snapshot(np.ascontiguousarray(z @ L.T), L, rho, columns, dropped)
