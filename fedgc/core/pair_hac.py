"""Batch-means long-run covariances of many Kronecker influence series at once (the SIV tests).

For sources n (column sets I_n of an influence series a (N, K)) and targets m (column sets J_m of a
residual series u (N, R)), the pair (m, n) has the series phi_t = a_t[I_n] (x) u_t[J_m] (N, q = k_n r_m) and
fedgc.core.hac.batch_means_lrv's estimate of its long-run covariance with B_mn = batch_count(N, q) batches.
A batch's sum of every pair's series is a block of one matrix product,

    sum_{t in batch b} a_t u_t^T   (K, R),   block [I_n, J_m] = pair (m, n)'s batch sum,

so all pairs with the same number of batches cost one pass over the rows (N K R flops), then B q^2 each.
When source n's residuals differ from u by a change of low rank, u - s_n D_n (s_n (N, c), D_n (c, R): the
SIV refit of each source, fedgc.core.siv), its batch sums are those of a u^T minus (sum a_t[I_n] s_n,t^T) D_n:
still one pass over the rows, plus N k_n c per source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from fedgc.core.hac import batch_bounds, batch_count

# map(f, items), or a thread pool's map: independent pieces of a computation go through it, results in the order of
# items, so every map gives the same numbers.
Mapper = Callable[..., Iterable[Any]]


class PairLRV(NamedTuple):
    """One pair's long-run covariance: S (k_n r_m, k_n r_m), rows and columns ordered (i, k) row-major as
    (a[:, I_n][:, :, None] * u[:, J_m][:, None, :]).reshape(N, -1); batches: B_mn (nu = B_mn - 1)."""

    S: np.ndarray
    batches: int


class ResidualChange(NamedTuple):
    """Source n's residuals are u - shift @ D: shift (N, c), D (c, R)."""

    shift: np.ndarray
    D: np.ndarray


def _batch_sums(a: np.ndarray, u: np.ndarray, batches: int) -> np.ndarray:
    """(B, K, R) centred, scaled batch sums of a_t u_t^T: (sum_{t in b} a_t u_t^T - n_b mean) / sqrt(n_b)."""
    N = a.shape[0]
    bounds = batch_bounds(N, batches)
    mean = a.T @ u / N
    out = np.empty((batches, a.shape[1], u.shape[1]))
    for b, (lo, hi) in enumerate(pairwise(bounds)):
        out[b] = (a[lo:hi].T @ u[lo:hi] - (hi - lo) * mean) / np.sqrt(hi - lo)
    return out


def pair_lrvs(
    a: np.ndarray, u: np.ndarray, sources: Sequence[Sequence[int] | np.ndarray], targets: Sequence[Sequence[int] | np.ndarray],
    pairs: Sequence[tuple[int, int]], *, min_rows: int = 1, changes: Sequence[ResidualChange] | None = None,
) -> list[PairLRV]:  # fmt: skip
    """batch_means_lrv of phi = a[:, sources[n]] (x) u_n[:, targets[m]] with batch_count(N, q, min_rows=min_rows)
    batches, for every (m, n) in pairs, in that order; u_n = u, or u - changes[n].shift @ changes[n].D."""
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    N = a.shape[0]
    if u.shape[0] != N or N < 3:
        raise ValueError(f"a and u must have the same N >= 3 rows, got {a.shape} and {u.shape}")
    src = [np.asarray(s, dtype=int) for s in sources]
    if changes is not None and len(changes) != len(src):
        raise ValueError(f"{len(changes)} residual changes for {len(src)} sources")
    tgt = [np.asarray(t, dtype=int) for t in targets]
    count = {(m, n): batch_count(N, src[n].size * tgt[m].size, min_rows=min_rows) for m, n in pairs}
    out: list[PairLRV | None] = [None] * len(pairs)
    for batches in sorted(set(count.values())):
        sums = _batch_sums(a, u, batches)
        for n, change in enumerate(changes or ()):
            sums[:, src[n], :] -= _batch_sums(a[:, src[n]], change.shift, batches) @ change.D
        groups: dict[tuple[int, int], list[int]] = {}
        for p, pair in enumerate(pairs):
            if count[pair] == batches:
                groups.setdefault((src[pair[1]].size, tgt[pair[0]].size), []).append(p)
        for members in groups.values():
            m_idx, n_idx = np.array([pairs[p] for p in members]).T
            rows = np.stack([src[n] for n in n_idx])[:, None, :, None]
            cols = np.stack([tgt[m] for m in m_idx])[:, None, None, :]
            dev = sums[np.arange(batches)[None, :, None, None], rows, cols].reshape(len(members), batches, -1)
            S = np.swapaxes(dev, 1, 2) @ dev / (batches - 1)
            for i, p in enumerate(members):
                out[p] = PairLRV(0.5 * (S[i] + S[i].T), batches)
    return [lrv for lrv in out if lrv is not None]
