"""Steady-state Kalman filtering: gains from the Riccati equation and a vectorised scan.

Model (one client, or the joint system):

    h_t = A h_{t-1} + u_t + v_t,    v_t ~ N(0, Q)
    y_t = C h_t + w_t,              w_t ~ N(0, R)

with a known input u_t (the augmentation term). Only ``J = C^T R^{-1} C`` and
the projected measurements ``C^T R^{-1} y_t`` enter the filter, so everything
here works in the state dimension D, never in the measurement dimension P.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.linalg.lapack import dgttrs, zgttrs

# State dimension above which the blocked scan (matrix products) beats the eigenbasis scan (an eigendecomposition
# and two complex (T, D) x (D, D) products).
LOOP_ABOVE_DIM = 48
# Steps per chunk of the blocked scan (_blocked_scan).
SCAN_CHUNK = 32


class SteadyState(NamedTuple):
    """Steady-state filter quantities.

    prior_cov:     (D, D) P = lim Cov(h_t | y_{1:t-1}), solution of the DARE.
    posterior_cov: (D, D) Sigma = (P^{-1} + J)^{-1}.
    transition:    (D, D) F = (I - K C) A = Sigma P^{-1} A, the posterior recursion matrix.
    input_gain:    (D, D) G = I - K C = Sigma P^{-1}, applied to the prior input u_t.
    """

    prior_cov: np.ndarray
    posterior_cov: np.ndarray
    transition: np.ndarray
    input_gain: np.ndarray


def solve_noise(R: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R^{-1} y_t for every row of y (T, P): a division when R is diagonal, else one Cholesky solve."""
    d = np.diagonal(R)
    if np.count_nonzero(R - np.diag(d)) == 0:
        return y / d
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(R), y.T).T


def information_matrix(C: np.ndarray, R: np.ndarray) -> np.ndarray:
    """J = C^T R^{-1} C, (D, D)."""
    return C.T @ solve_noise(R, C.T).T


def project_measurements(y: np.ndarray, C: np.ndarray, R: np.ndarray) -> np.ndarray:
    """C^T R^{-1} y_t for every row of y (T, P) -> (T, D)."""
    return solve_noise(R, y) @ C


def steady_state(A: np.ndarray, J: np.ndarray, Q: np.ndarray) -> SteadyState:
    """Solve the filter DARE for (A, Q) and information matrix J.

    The measurement model only enters through J, so the DARE is solved with the
    equivalent square observation L with L^T L = J and unit noise.
    """
    D = A.shape[0]
    L = _symmetric_root(J)
    P = scipy.linalg.solve_discrete_are(A.T, L.T, Q, np.eye(D))
    P = 0.5 * (P + P.T)
    Sigma, G = measurement_update(P, J)
    return SteadyState(P, Sigma, G @ A, G)


def measurement_update(P: np.ndarray, J: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior covariance Sigma = (P^{-1} + J)^{-1} and input gain G = I - K C = Sigma P^{-1}
    from a prior covariance P (D, D, positive definite) and information J (D, D, may be singular)."""
    D = P.shape[0]
    # Sigma = (P^{-1} + J)^{-1} = Lp (I + Lp^T J Lp)^{-1} Lp^T with P = Lp Lp^T (P >= Q > 0): no cancellation
    # when J is large, unlike P - P (I + J P)^{-1} J P.
    Lp = np.linalg.cholesky(P)
    S = Lp.T @ J @ Lp
    Minv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(np.eye(D) + 0.5 * (S + S.T)), np.eye(D))
    Sigma = Lp @ Minv @ Lp.T
    Sigma = 0.5 * (Sigma + Sigma.T)
    # G = I - K C = Sigma P^{-1}: a product, not the difference I - Sigma J (which cancels when J is large).
    G = scipy.linalg.cho_solve((Lp, True), Sigma).T
    return Sigma, G


def kalman_gain(C: np.ndarray, R: np.ndarray, posterior_cov: np.ndarray) -> np.ndarray:
    """K = Sigma C^T R^{-1}, (D, P)."""
    return posterior_cov @ np.linalg.solve(R, C).T


def filter_scan(F: np.ndarray, drive: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """h_t = F h_{t-1} + drive_t for t = 1..T, from h_0 (default 0); returns (T, D).

    The recursion is linear and time invariant, so it runs as D scalar first-order
    recursions in F's eigenbasis (compiled loops: first_order_scan). When F is close
    to defective the eigenbasis is ill-conditioned; then a plain loop is exact.
    For large D the eigendecomposition and basis changes cost more than the recursion itself, which then
    runs in chunks as matrix products (`_blocked_scan`; the plain loop's T matrix-vector products reread F
    from memory at every step).
    Windows of REAL_SCAN_MIN_STEPS steps or more run in real arithmetic (`_real_modal_scan`, ~5x
    faster); shorter ones in complex eigen-coordinates, exactly as before that path existed (the two
    agree to rounding, but every later statistic inherits the last bits of the states).
    """
    T, D = drive.shape
    if h0 is None:
        h0 = np.zeros(D)
    if T == 0:
        return np.zeros((0, D))
    if D > LOOP_ABOVE_DIM:
        return _blocked_scan(F, drive, h0) if T >= 4 * SCAN_CHUNK else _loop_scan(F, drive, h0)
    lam, V = np.linalg.eig(F)
    if np.linalg.cond(V) > MODAL_MAX_COND:
        return _loop_scan(F, drive, h0)
    if T >= REAL_SCAN_MIN_STEPS:
        basis = _real_basis(lam, V)
        if basis is not None:
            return _real_modal_scan(basis, drive, h0)
    return _complex_modal_scan(lam, V, drive, h0)


# Eigenvector matrices with a larger condition number are treated as defective (filter_scan loops instead).
MODAL_MAX_COND = 1e6
# Steps from which filter_scan runs in real arithmetic.
REAL_SCAN_MIN_STEPS = 1 << 15


def _complex_modal_scan(lam: np.ndarray, V: np.ndarray, drive: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """filter_scan in complex eigen-coordinates: one complex first-order sweep per eigenvalue."""
    Vinv = np.linalg.inv(V)
    g = drive.astype(complex) @ Vinv.T  # drive in eigen-coordinates, (T, D)
    g0 = Vinv @ h0
    h = first_order_scan(lam, g, g0) @ V.T
    return np.ascontiguousarray(h.real)


def first_order_scan(lam: np.ndarray, g: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """x_t[i] = lam[i] x_{t-1}[i] + g_t[i] for t = 1..T from x_0 = x0, for every column i of g (T, D), complex."""
    T, D = g.shape
    out = np.empty((T, D), dtype=complex)
    for i in range(D):
        out[:, i] = first_order_sweep(complex(lam[i]), g[:, i], complex(x0[i]))
    return out


def first_order_sweep(lam: complex | float, g: np.ndarray, x0: complex | float) -> np.ndarray:
    """x_t = lam x_{t-1} + g_t for t = 1..T from x_0 = x0, for one series g (T,), real or complex (as g).

    This is the unit lower-bidiagonal system (I - lam S) x = g + lam x0 e_1. LAPACK's tridiagonal solve
    (dgttrs / zgttrs), handed the identity's pivots and that matrix as its own LU factor, runs it as one
    forward sweep x_t = g_t - (-lam) x_{t-1} in compiled code: the same operations, bit for bit, as
    scipy.signal.lfilter([1], [1, -lam], g, zi=[lam x0]) (whose package costs a second to import); its
    backward sweep with U = I divides by 1 and subtracts 0 x_{t+1}, which changes no finite value."""
    T = g.shape[0]
    real = not np.iscomplexobj(g) and not isinstance(lam, complex) and not isinstance(x0, complex)
    dtype = float if real else complex
    if T == 0:
        return np.empty(0, dtype=dtype)
    n = max(T, 3)  # ?gttrs needs a second superdiagonal (n - 2 entries); rows past T change none before them
    ones, zeros = np.ones(n, dtype=dtype), np.zeros(n - 1, dtype=dtype)
    pivots = np.arange(1, n + 1, dtype=np.int32)
    rhs = np.zeros(n, dtype=dtype)
    rhs[:T] = g
    rhs[0] += lam * x0  # a scalar product, as lfilter's zi (numpy's vector product may round otherwise)
    solve = dgttrs if real else zgttrs
    x, info = solve(np.full(n - 1, -lam, dtype=dtype), ones, zeros, zeros[1:], pivots, rhs, overwrite_b=1)
    if info != 0:
        raise ValueError(f"?gttrs failed (info {info})")
    return x[:T]


def _real_modal_scan(
    basis: tuple[np.ndarray, list[tuple[int, complex]]], drive: np.ndarray, h0: np.ndarray
) -> np.ndarray:
    """filter_scan in the real basis of `_real_basis`: a real sweep per real eigenvalue, one complex
    sweep per conjugate pair, real (T, D) x (D, D) basis changes, every filter on a contiguous row."""
    W, modes = basis
    Winv = np.linalg.inv(W)
    g = Winv @ np.asarray(drive, dtype=float).T  # (D, T): the drive in modal coordinates, one row each
    g0 = Winv @ np.asarray(h0, dtype=float)
    x = np.empty_like(g)
    for i, lam in modes:
        if lam.imag == 0.0:
            x[i] = first_order_sweep(float(lam.real), g[i], float(g0[i]))
        else:
            # Coordinates (i, i + 1) span the pair's real invariant plane, where F acts as
            # [[a, b], [-b, a]] (lam = a + ib): w = x_i + i x_{i+1} obeys w_t = conj(lam) w_{t-1} + g_t.
            mu = np.conj(lam)
            w = first_order_sweep(complex(mu), g[i] + 1j * g[i + 1], complex(g0[i] + 1j * g0[i + 1]))
            x[i], x[i + 1] = w.real, w.imag
    return x.T @ W.T


def _real_basis(lam: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, list[tuple[int, complex]]] | None:
    """From F's eigenvalues and eigenvectors (np.linalg.eig of a real F): a real basis W (a real
    eigenvalue: its eigenvector; a conjugate pair lam, conj(lam) with eigenvector v: the columns
    Re v, Im v) and (first column, lam) per mode; None if the pairs are not where LAPACK puts them."""
    W = np.empty(V.shape)
    modes: list[tuple[int, complex]] = []
    i, D = 0, len(lam)
    while i < D:
        if lam[i].imag == 0.0:
            W[:, i] = V[:, i].real
            modes.append((i, complex(lam[i].real, 0.0)))
            i += 1
            continue
        # LAPACK returns a real matrix's complex eigenvalues in conjugate pairs, positive imaginary part first.
        if i + 1 >= D or lam[i].imag < 0 or lam[i + 1] != np.conj(lam[i]):
            return None
        W[:, i], W[:, i + 1] = V[:, i].real, V[:, i].imag
        modes.append((i, complex(lam[i])))
        i += 2
    return W, modes


def _loop_scan(F: np.ndarray, drive: np.ndarray, h0: np.ndarray) -> np.ndarray:
    # h = F @ h + drive[t], written into preallocated rows (no temporaries per step; the same numbers).
    out = np.empty_like(drive, dtype=float)
    product = np.empty(drive.shape[1])
    h = h0.astype(float)
    for t in range(drive.shape[0]):
        h = np.add(np.dot(F, h, out=product), drive[t], out=out[t])
    return out


def _blocked_scan(F: np.ndarray, drive: np.ndarray, h0: np.ndarray, chunk: int = SCAN_CHUNK) -> np.ndarray:
    """h_t = F h_{t-1} + drive_t in chunks of L = `chunk` steps, as matrix products. With s_k the state before
    chunk k's first step (s_0 = h_0) and c_{k,j} chunk k's recursion from zero (c_{k,0} = drive_{kL},
    c_{k,j} = F c_{k,j-1} + drive_{kL+j}), run for every chunk side by side:

        h_{kL+j} = c_{k,j} + F^{j+1} s_k,      s_{k+1} = c_{k,L-1} + F^L s_k   (one matrix-vector product per chunk).

    The same recursion as the loop, summed in another order: equal to rounding for a stable F. An F whose
    powers overflow gives non-finite states, where the loop's would be huge (callers treat both as an
    exploding recursion)."""
    T, D = drive.shape
    n = -(-T // chunk)
    padded = np.zeros((n * chunk, D))
    padded[:T] = drive
    out = padded.reshape(n, chunk, D)  # out[k, j]: step kL + j; filled in place
    Ft = np.ascontiguousarray(F.T)
    for j in range(1, chunk):
        out[:, j] += out[:, j - 1] @ Ft
    F_chunk = np.linalg.matrix_power(F, chunk)
    starts = np.empty((n, D))
    s = np.asarray(h0, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(n):
            starts[k] = s
            s = F_chunk @ s + out[k, -1]
        carry = starts
        for j in range(chunk):
            carry = carry @ Ft
            out[:, j] += carry
    return padded[:T]


def _symmetric_root(J: np.ndarray) -> np.ndarray:
    """L with L^T L = J for a symmetric positive semi-definite J."""
    w, U = np.linalg.eigh(0.5 * (J + J.T))
    w = np.clip(w, 0.0, None)
    return (U * np.sqrt(w)).T
