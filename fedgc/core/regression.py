"""Server side: sufficient statistics, the newton and gd updates of A_s, and augmentation terms.

Server model: s_t^m = sum_{n in I_m} A_s^{mn} h_{t-1}^n, where I_m is every client but m
(diagonal 'fixed': client m keeps its local A^{mm}) or every client ('joint': the
diagonal block of A_s is a correction to the local A^{mm}, which the server never sees).

Client m's loss as a function of its row block B = A_s^{m, I_m} (states held fixed) is

    L^m(B) = const - 2 tr(B^T Z^T X) + tr(J^m B X^T X B^T)

with X = [x_{t-1}] (N, |I_m|) the lagged states and Z = [z_t^m] (N, D_m) the
pseudo-observations, so the newton rule solves J^m B (X^T X) = Z^T X exactly.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import scipy.linalg

Diagonal = Literal["fixed", "joint"]


class Blocks(NamedTuple):
    """Block layout of the stacked state: dims (M,) and offsets (M + 1,)."""

    dims: tuple[int, ...]
    offsets: np.ndarray

    @classmethod
    def of(cls, dims: Sequence[int]) -> Blocks:
        return cls(tuple(int(d) for d in dims), np.concatenate([[0], np.cumsum(dims)]).astype(int))

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def slice(self, m: int) -> slice:
        return slice(int(self.offsets[m]), int(self.offsets[m + 1]))

    def regressors(self, m: int, diagonal: Diagonal) -> np.ndarray:
        """Indices of the stacked state that enter client m's augmentation."""
        idx = np.arange(self.total)
        return idx if diagonal == "joint" else np.delete(idx, np.arange(self.offsets[m], self.offsets[m + 1]))

    def by_dim(self) -> list[tuple[list[int], np.ndarray]]:
        """The clients of each state dimension d, in order of first appearance: (their indices m, (k, d) their
        rows of the stacked state, client after client)."""
        members: dict[int, list[int]] = {}
        for m, d in enumerate(self.dims):
            members.setdefault(d, []).append(m)
        return [
            (ms, np.stack([np.arange(self.offsets[m], self.offsets[m] + d) for m in ms])) for d, ms in members.items()
        ]

    def sources(self, m: int, diagonal: Diagonal) -> list[tuple[int, builtins.slice]]:
        """(client n, columns of n inside client m's regressor set) for every n != m."""
        out: list[tuple[int, builtins.slice]] = []
        pos = 0
        for n, d in enumerate(self.dims):
            if n == m and diagonal == "fixed":
                continue
            if n != m:
                out.append((n, slice(pos, pos + d)))
            pos += d
        return out


class RegressionStats(NamedTuple):
    """Sums over t = burn_in+1..T (n terms) of x = h_{t-1} (stacked, D) and z_t (stacked, D).

    gram:  (D, D) sum x x^T;   cross: (D, D) sum x z^T;   zz: (D, D) sum z z^T;
    n: the number of terms (for weighted sums, fedgc.core.forgetting, the weight or sample size they stand for).
    """

    gram: np.ndarray
    cross: np.ndarray
    zz: np.ndarray
    n: float


class RowFit(NamedTuple):
    """Exact least squares of z^m on its regressors, in stacked-state coordinates.

    coef: (D_m, D) Gamma = J^m B over every stacked state (client m's own block is zero when
    the diagonal is fixed);  rss: (D_m, D_m) residual sum of squares;  n_regressors: K.
    """

    coef: np.ndarray
    rss: np.ndarray
    n_regressors: int


def lagged_stack(states: Sequence[np.ndarray], h0: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """x_{t-1} for t = 1..T from per-client posterior states (T, D_m): (T, D) with h_0 first."""
    H = np.hstack(states)
    first = np.zeros((1, H.shape[1])) if h0 is None else np.concatenate(h0)[None, :]
    return np.vstack([first, H[:-1]])


# Rows per block when the server's sums and augmentations run over the stacked states (bounds the
# (rows, D) temporaries; a window of at most this many rows is one block, the whole-window products).
STACK_BLOCK_ROWS = 1 << 15


def side_by_side(parts: Sequence[np.ndarray], a: int, b: int, first: np.ndarray | None = None) -> np.ndarray:
    """Rows a..b-1 of the (T, D_m) arrays side by side, (b - a, D), after the row `first` (D,) if given. The
    result is column-major: it is written through its transpose, a few long rows per part, which took a
    fifth of hstack's time for (rows, 3) parts (hstack copies a few values per row and part)."""
    lead = 0 if first is None else 1
    out = np.empty((sum(part.shape[1] for part in parts), lead + b - a))
    if first is not None:
        out[:, 0] = first
    col = 0
    for part in parts:
        out[col : col + part.shape[1], lead:] = part[a:b].T
        col += part.shape[1]
    return out.T


def _lagged_rows(states: Sequence[np.ndarray], first: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows a..b-1 of lagged_stack(states, h0) (x_{t-1} stacked; `first` is its row 0), (b - a, D)."""
    return side_by_side(states, a - 1, b - 1) if a > 0 else side_by_side(states, 0, b - 1, first)


def regression_stats(
    states: Sequence[np.ndarray],
    pseudo_obs: Sequence[np.ndarray],
    *,
    burn_in: int = 1,
    h0: Sequence[np.ndarray] | None = None,
) -> RegressionStats:
    """The sums over t = burn_in+1..T, accumulated over blocks of STACK_BLOCK_ROWS rows of the stacked
    lagged states X and pseudo-observations Z, never stacking all T rows."""
    T = states[0].shape[0]
    D = int(sum(s.shape[1] for s in states))
    first = np.zeros(D) if h0 is None else np.concatenate(h0)
    gram, cross, zz = np.zeros((D, D)), np.zeros((D, D)), np.zeros((D, D))
    for a in range(burn_in, T, STACK_BLOCK_ROWS):
        b = min(a + STACK_BLOCK_ROWS, T)
        X = _lagged_rows(states, first, a, b)
        Z = side_by_side(pseudo_obs, a, b)
        gram += X.T @ X
        cross += X.T @ Z
        zz += Z.T @ Z
    return RegressionStats(gram, cross, zz, max(T - burn_in, 0))


def shared_inverse(gram: np.ndarray) -> np.ndarray:
    """(sum x x^T)^{-1} of all stacked states, factorised once per round for every target: Cholesky and
    its inverse (LAPACK potrf, potri), exactly symmetric. np.linalg.LinAlgError when gram is not positive
    definite, ValueError when it is not finite."""
    gram = np.asarray(gram, dtype=np.float64)
    if not np.isfinite(gram).all():
        raise ValueError("array must not contain infs or NaNs")
    factor, info = scipy.linalg.lapack.dpotrf(gram, lower=1, clean=0)
    if info == 0:
        inverse, info = scipy.linalg.lapack.dpotri(factor, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"{info}-th leading minor of the states' Gram matrix not positive definite")
    lower = np.tril(inverse)
    return lower + np.tril(lower, -1).T


def row_fit(stats: RegressionStats, W: np.ndarray, blocks: Blocks, m: int, diagonal: Diagonal) -> RowFit:
    """Least squares for target m from the shared inverse W = (sum x x^T)^{-1}.

    With the diagonal fixed, dropping client m's own states is least squares with their
    coefficients constrained to zero: beta = beta_u - W[:, m] W_mm^{-1} beta_u[m], a rank-D_m
    correction of the unconstrained fit, so no per-target factorisation is needed.
    """
    own = blocks.slice(m)
    H = stats.cross[:, own]  # (D, D_m) = X^T Z
    coef = H.T @ W
    if diagonal == "fixed":
        coef = coef - coef[:, own] @ np.linalg.solve(W[own, own], W[own, :])
        coef[:, own] = 0.0
    rss = stats.zz[own, own] - coef @ H
    n_regressors = blocks.total - (blocks.dims[m] if diagonal == "fixed" else 0)
    return RowFit(coef, 0.5 * (rss + rss.T), n_regressors)


def regressor_inverse_block(W: np.ndarray, blocks: Blocks, m: int, n: int, diagonal: Diagonal) -> np.ndarray:
    """Block (n, n) of the inverse Gram matrix of target m's regressors: W_nn, less (fixed diagonal)
    W_nm W_mm^{-1} W_mn, the Schur complement that removes client m's own states."""
    own, src = blocks.slice(m), blocks.slice(n)
    block = W[src, src]
    if diagonal == "fixed":
        block = block - W[src, own] @ np.linalg.solve(W[own, own], W[own, src])
    return 0.5 * (block + block.T)


def newton_update(
    stats: RegressionStats,
    informations: Sequence[np.ndarray],
    blocks: Blocks,
    *,
    diagonal: Diagonal = "fixed",
    penalty: float = 0.0,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """The A_s minimising sum_m L^m / n (+ penalty * sum_{m != n} ||A_s^{mn}||_F) for fixed states.

    Without a penalty, row block m is (J^m)^{-1} times row_fit's coefficients, for every target at once:
    (cross^T W)[m's rows] is H^T W, and the targets of one state dimension share one stacked solve (the
    fixed-diagonal correction and J^m's). With a penalty, group_lasso_row per target."""
    W = shared_inverse(stats.gram)
    A_s = np.zeros((blocks.total, blocks.total))
    if penalty > 0:
        for m, J in enumerate(informations):
            idx = blocks.regressors(m, diagonal)
            B = np.linalg.solve(J, row_fit(stats, W, blocks, m, diagonal).coef[:, idx])
            G = stats.gram[np.ix_(idx, idx)] / stats.n
            Hz = stats.cross[idx, blocks.slice(m)].T / stats.n
            x0 = B if start is None else start[blocks.slice(m)][:, idx]
            A_s[blocks.slice(m), idx] = group_lasso_row(J, G, Hz, blocks.sources(m, diagonal), penalty, start=x0)
        return A_s
    coef = stats.cross.T @ W  # row block m: row_fit's unconstrained H^T W
    for members, rows in blocks.by_dim():
        d = rows.shape[1]
        C = coef[rows]  # (k, d, D)
        own = (np.arange(len(members))[:, None, None], np.arange(d)[None, :, None], rows[:, None, :])
        if diagonal == "fixed":  # C - C_own W_own^{-1} W[own, :]: solves with d right-hand sides, not D
            W_own = W[rows[:, :, None], rows[:, None, :]]
            C = C - np.swapaxes(np.linalg.solve(W_own, np.swapaxes(C[own], 1, 2)), 1, 2) @ W[rows]
        # (J^m)^{-1} by a stacked inverse: a stacked solve with D right-hand sides is ten times slower
        B = np.linalg.inv(np.stack([informations[m] for m in members])) @ C
        if diagonal == "fixed":
            B[own] = 0.0
        A_s[rows.ravel()] = B.reshape(-1, blocks.total)
    return A_s


def group_lasso_row(
    J: np.ndarray,
    G: np.ndarray,
    Hz: np.ndarray,
    groups: list[tuple[int, slice]],
    penalty: float,
    *,
    start: np.ndarray,
    max_iter: int = 5000,
    tol: float = 1e-10,
) -> np.ndarray:
    """FISTA on tr(J B G B^T) - 2 tr(B^T Hz) + penalty * sum_groups ||B[:, g]||_F (per-step scale)."""
    step = 1.0 / (2.0 * np.linalg.eigvalsh(J)[-1] * np.linalg.eigvalsh(G)[-1])
    B = start.copy()
    Y, t = B.copy(), 1.0
    for _ in range(max_iter):
        grad = 2.0 * (J @ Y @ G - Hz)
        B_new = group_soft_threshold(Y - step * grad, groups, step * penalty)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        Y = B_new + ((t - 1.0) / t_new) * (B_new - B)
        done = np.linalg.norm(B_new - B) <= tol * max(float(np.linalg.norm(B_new)), 1e-12)
        B, t = B_new, t_new
        if done:
            break
    return B


def group_soft_threshold(B: np.ndarray, groups: list[tuple[int, slice]], threshold: float) -> np.ndarray:
    """Proximal map of threshold * sum_g ||B[:, g]||_F."""
    out = B.copy()
    for _, cols in groups:
        norm = np.linalg.norm(B[:, cols])
        out[:, cols] = 0.0 if norm <= threshold else B[:, cols] * (1.0 - threshold / norm)
    return out


def gd_update(
    A_s: np.ndarray,
    states: Sequence[np.ndarray],
    gradients: Sequence[np.ndarray],
    informations: Sequence[np.ndarray],
    blocks: Blocks,
    *,
    diagonal: Diagonal = "fixed",
    learning_rate: float | None = None,
    penalty: float = 0.0,
    burn_in: int = 1,
    h0: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The paper's rule: A_s^{mn} -= eta * (1/n) sum_t g_t^m (h_{t-1}^n)^T, then the group-lasso prox.

    Default eta per target: 1 / (2 lambda_max(J^m) lambda_max(X^T X / n)), the inverse Lipschitz
    constant of the per-step loss, the largest step that cannot diverge for fixed states. X holds
    all stacked states: by interlacing its lambda_max bounds that of every target's regressor subset.
    """
    X = lagged_stack(states, h0)[burn_in:]
    Gm = np.hstack(gradients)[burn_in:]
    n = X.shape[0]
    cross = X.T @ Gm / n  # (D, D): [source coords, target coords]
    gram_max = np.linalg.eigvalsh(X.T @ X / n)[-1] if learning_rate is None else None
    A_new = A_s.copy()
    for m, J in enumerate(informations):
        idx = blocks.regressors(m, diagonal)
        own = blocks.slice(m)
        if learning_rate is None:
            eta = 1.0 / (2.0 * np.linalg.eigvalsh(J)[-1] * gram_max)
        else:
            eta = learning_rate
        row = A_s[own][:, idx] - eta * cross[idx, own].T
        if penalty > 0:
            row = group_soft_threshold(row, blocks.sources(m, diagonal), eta * penalty)
        A_new[own, idx] = row
    return A_new


def augmentations(
    A_s: np.ndarray, states: Sequence[np.ndarray], blocks: Blocks, h0: Sequence[np.ndarray] | None = None
) -> list[np.ndarray]:
    """s_{1:T}^m = A_s^{m, .} x_{t-1} for every client, from the states of the last round (in blocks of
    STACK_BLOCK_ROWS rows of the stacked lagged states)."""
    T = states[0].shape[0]
    first = np.zeros(blocks.total) if h0 is None else np.concatenate(h0)
    out = [np.empty((T, d)) for d in blocks.dims]
    for a in range(0, T, STACK_BLOCK_ROWS):
        b = min(a + STACK_BLOCK_ROWS, T)
        S = A_s @ _lagged_rows(states, first, a, b).T  # (D, rows): each client's rows are contiguous
        for m, part in enumerate(out):
            part[a:b] = S[blocks.slice(m)].T
    return out


MIN_RELAXATION = 1.0 / 64.0


def next_relaxation(omega: float, change: float, previous_change: float) -> float:
    """Step size of the relaxed fixed-point iteration A <- A + omega (T(A) - A).

    Clients' states respond to A_s through their own filters, which the states-held-fixed
    least squares T ignores; with persistent local dynamics that feedback makes T overshoot and
    the plain iteration (omega = 1) oscillate and diverge. omega halves whenever a round fails to
    contract, so well-behaved runs keep omega = 1 and their exact iterates.
    """
    return max(omega / 2.0, MIN_RELAXATION) if change > previous_change else omega


def relative_change(new: np.ndarray, old: np.ndarray) -> float:
    return float(np.linalg.norm(new - old) / max(float(np.linalg.norm(new)), 1e-12))
