"""Newey-West long-run covariances of many Kronecker influence series at once (the SIV pair tests).

For sources n (column sets I_n of an influence series a (N, K)) and targets m (column sets J_m of a
residual series u (N, R)), the pair (m, n) has the series phi_t = a_t[I_n] (x) u_t[J_m] (N, k_n r_m) and
fedgc.core.hac.bartlett_lrv's estimate of its long-run covariance: centred, Andrews' bandwidth b_mn
(raised to min_bandwidth, capped at N / 4), Bartlett weights. Computing that per pair costs one pass over
(N, k_n r_m) per lag and pair. Here, for every lag j, one matrix product gives the lag-j cross moments of
every pair at once:

    G_j[(i, i'), (k, k')] = sum_{t >= j} a_{t,i} a_{t-j,i'} u_{t,k} u_{t-j,k'},   i, i' in one I_n, k, k' in one J_m,

i.e. (a[j:, I] * a[:-j, I'])^T (u[j:, J] * u[:-j, J']), with (i, i') over the pairs inside each source
block and (k, k') over the pairs inside each target block. Centring is a rank-one correction from the
means and the partial sums of a_t u_t^T, and the AR(1) coefficients of Andrews' rule are diagonals of
G_0 and G_1. Lags are shared up to the bandwidth of 90 % of the pairs (at most `max_shared_lag`); pairs
with longer bandwidths are computed alone with bartlett_lrv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from fedgc.core.hac import ar1_terms, bartlett_lrv

# map(f, items), or a thread pool's map: independent pieces of a computation go through it, results in the order of
# items, so every map gives the same numbers.
Mapper = Callable[..., Iterable[Any]]

MAX_SHARED_LAG = 12
SHARED_SHARE = 0.9
# Values of the two product series per block of rows in a lag's moment: ~1 MB, so a block's products stay in a
# core's cache for the matrix product (at T = 525600 and 20 sites, 1.6 s per lag with 32 MB blocks, 0.9 s here).
MOMENT_BLOCK_VALUES = 1 << 17


class PairLRV(NamedTuple):
    """One pair's long-run covariance: S (k_n r_m, k_n r_m), rows and columns ordered (i, k) row-major as
    (a[:, I_n][:, :, None] * u[:, J_m][:, None, :]).reshape(N, -1); bandwidth: b_mn."""

    S: np.ndarray
    bandwidth: float


def _inner_pairs(blocks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, offsets): every (c, c') with c, c' in one block, row-major per block; block b's
    pairs are rows offsets[b] .. offsets[b + 1]."""
    first = np.concatenate([np.repeat(b, b.size) for b in blocks])
    second = np.concatenate([np.tile(b, b.size) for b in blocks])
    return first, second, np.concatenate([[0], np.cumsum([b.size**2 for b in blocks])])


def _lagged_moment(a: np.ndarray, u: np.ndarray, pairs_a: tuple[np.ndarray, np.ndarray],
                   pairs_u: tuple[np.ndarray, np.ndarray], lag: int) -> np.ndarray:  # fmt: skip
    """sum_{t >= lag} (a_t[i] a_{t-lag}[i']) (u_t[k] u_{t-lag}[k'])  over (i, i') in pairs_a, (k, k') in
    pairs_u, by blocks of rows (memory: a block of both product series, not N of them)."""
    (i1, i2), (k1, k2) = pairs_a, pairs_u
    N = a.shape[0]
    rows = max(64, MOMENT_BLOCK_VALUES // (i1.size + k1.size))
    G = np.zeros((i1.size, k1.size))
    for t in range(lag, N, rows):
        e = min(N, t + rows)
        G += (a[t:e, i1] * a[t - lag : e - lag, i2]).T @ (u[t:e, k1] * u[t - lag : e - lag, k2])
    return G


def pair_lrvs(
    a: np.ndarray, u: np.ndarray, sources: Sequence[Sequence[int] | np.ndarray], targets: Sequence[Sequence[int] | np.ndarray],
    pairs: Sequence[tuple[int, int]], *, min_bandwidth: float = 1.0, max_shared_lag: int = MAX_SHARED_LAG,
    parallel_map: Mapper = map,
) -> list[PairLRV]:  # fmt: skip
    """bartlett_lrv of phi = a[:, sources[n]] (x) u[:, targets[m]] for every (m, n) in pairs, in that order.
    The lags' moments (and the pairs computed alone) go through parallel_map (map or a thread pool's)."""
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    N = a.shape[0]
    if u.shape[0] != N or N < 3:
        raise ValueError(f"a and u must have the same N >= 3 rows, got {a.shape} and {u.shape}")
    src = [np.asarray(s, dtype=int) for s in sources]
    tgt = [np.asarray(t, dtype=int) for t in targets]
    i1, i2, off_a = _inner_pairs(src)
    k1, k2, off_u = _inner_pairs(tgt)

    total = a.T @ u  # sum_t a_t u_t^T
    mean = total / N

    def centred_moment(lag: int) -> np.ndarray:
        """sum_{t >= lag} (phi_t - mu)(phi_{t-lag} - mu)^T in the (i, i'), (k, k') layout."""
        G = _lagged_moment(a, u, (i1, i2), (k1, k2), lag)
        head = total - a[N - lag :].T @ u[N - lag :]  # sum over t - lag = 0 .. N - 1 - lag
        tail = total - a[:lag].T @ u[:lag]  # sum over t = lag .. N - 1
        mu1, mu2 = mean[np.ix_(i1, k1)], mean[np.ix_(i2, k2)]
        return G - mu1 * head[np.ix_(i2, k2)] - tail[np.ix_(i1, k1)] * mu2 + (N - lag) * mu1 * mu2

    C = list(parallel_map(centred_moment, [0, 1]))
    # Andrews' AR(1) rule per column (i, k) of phi, from the diagonals of the lag-0 and lag-1 moments
    diag_a, diag_u = np.flatnonzero(i1 == i2), np.flatnonzero(k1 == k2)
    col_a, col_u = i1[diag_a], k1[diag_u]
    c0, c1 = C[0][np.ix_(diag_a, diag_u)], C[1][np.ix_(diag_a, diag_u)]
    first = np.outer(a[0, col_a], u[0, col_u]) - mean[np.ix_(col_a, col_u)]
    last = np.outer(a[-1, col_a], u[-1, col_u]) - mean[np.ix_(col_a, col_u)]
    s00, s11 = c0 - last**2, c0 - first**2
    num, den = ar1_terms(s00, c1, s11, N)
    pos_a = {c: p for p, c in enumerate(col_a)}
    pos_u = {c: p for p, c in enumerate(col_u)}
    sel_a = np.zeros((len(src), col_a.size))
    sel_u = np.zeros((len(tgt), col_u.size))
    for n, s in enumerate(src):
        sel_a[n, [pos_a[c] for c in s]] = 1.0
    for m, t in enumerate(tgt):
        sel_u[m, [pos_u[c] for c in t]] = 1.0
    a1 = (sel_u @ num.T @ sel_a.T) / np.maximum(sel_u @ den.T @ sel_a.T, 1e-300)  # [m, n]
    bandwidth = np.minimum(np.maximum(1.1447 * (a1 * N) ** (1.0 / 3.0), float(min_bandwidth)), N / 4.0)

    lags_needed = {(m, n): int(np.ceil(bandwidth[m, n])) - 1 for m, n in pairs}
    # a lag's shared product costs as much for all pairs as for one: shared lags cover 90 % of the pairs
    shared = min(int(np.quantile(list(lags_needed.values()), SHARED_SHARE, method="higher")), max_shared_lag)
    C.extend(parallel_map(centred_moment, range(2, shared + 1)))

    def alone(pair: tuple[int, int]) -> PairLRV:
        m, n = pair
        phi = (a[:, src[n]][:, :, None] * u[:, tgt[m]][:, None, :]).reshape(N, -1)
        return PairLRV(bartlett_lrv(phi, bandwidth=float(bandwidth[m, n])).S, float(bandwidth[m, n]))

    out: list[PairLRV | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    long = [p for p, pair in enumerate(pairs) if lags_needed[pair] > shared]
    for p, lrv in zip(long, parallel_map(alone, [pairs[p] for p in long])):
        out[p] = lrv
    for p, (m, n) in enumerate(pairs):
        if lags_needed[(m, n)] <= shared:
            groups.setdefault((src[n].size, tgt[m].size), []).append(p)
    for (k, r), members in groups.items():
        m_idx, n_idx = np.array([pairs[p] for p in members]).T
        rows = off_a[n_idx][:, None, None] + np.arange(k * k)[None, :, None]
        cols = off_u[m_idx][:, None, None] + np.arange(r * r)[None, None, :]
        b = bandwidth[m_idx, n_idx]

        def blocks(j: int, rows: np.ndarray = rows, cols: np.ndarray = cols, k: int = k, r: int = r) -> np.ndarray:
            """The members' lag-j moments as (P, k r, k r) matrices indexed [(i, k), (i', k')]."""
            return C[j][rows, cols].reshape(-1, k, k, r, r).transpose(0, 1, 3, 2, 4).reshape(-1, k * r, k * r)

        S = blocks(0)
        for j in range(1, shared + 1):
            Gj = blocks(j)
            S = S + np.where(j < b, 1.0 - j / b, 0.0)[:, None, None] * (Gj + np.swapaxes(Gj, 1, 2))
        S = S / N
        S = 0.5 * (S + np.swapaxes(S, 1, 2))
        for i, p in enumerate(members):
            out[p] = PairLRV(S[i], float(b[i]))
    return [lrv for lrv in out if lrv is not None]
