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
from scipy.linalg.lapack import zgttrs


# State dimension above which the plain loop beats the eigenbasis scan (two complex (T, D) x (D, D) products).
LOOP_ABOVE_DIM = 48


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
    For large D the two complex basis changes cost more than the loop's matvecs.
    """
    T, D = drive.shape
    if h0 is None:
        h0 = np.zeros(D)
    if T == 0:
        return np.zeros((0, D))
    if D > LOOP_ABOVE_DIM:
        return _loop_scan(F, drive, h0)
    lam, V = np.linalg.eig(F)
    if np.linalg.cond(V) > 1e6:
        return _loop_scan(F, drive, h0)
    Vinv = np.linalg.inv(V)
    g = drive.astype(complex) @ Vinv.T  # drive in eigen-coordinates, (T, D)
    g0 = Vinv @ h0
    h = first_order_scan(lam, g, g0) @ V.T
    return np.ascontiguousarray(h.real)


def first_order_scan(lam: np.ndarray, g: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """x_t[i] = lam[i] x_{t-1}[i] + g_t[i] for t = 1..T from x_0 = x0, for every column i of g (T, D), complex.

    Column i is the unit lower-bidiagonal system (I - lam[i] S) x = g[:, i] + lam[i] x0[i] e_1. LAPACK's
    tridiagonal solve zgttrs, handed the identity's pivots and that matrix as its own LU factor, runs it as
    one forward sweep x_t = g_t - (-lam) x_{t-1} in compiled code: the same operations, bit for bit, as
    scipy.signal.lfilter([1], [1, -lam], g, zi=[lam x0]) (whose package costs a second to import); its
    backward sweep with U = I divides by 1 and subtracts 0 x_{t+1}, which changes no finite value."""
    T, D = g.shape
    out = np.empty((T, D), dtype=complex)
    if T == 0:
        return out
    n = max(T, 3)  # zgttrs needs a second superdiagonal (n - 2 entries); rows past T change none before them
    ones, zeros = np.ones(n, dtype=complex), np.zeros(n - 1, dtype=complex)
    pivots = np.arange(1, n + 1, dtype=np.int32)
    for i in range(D):
        rhs = np.zeros(n, dtype=complex)
        rhs[:T] = g[:, i]
        rhs[0] += lam[i] * x0[i]  # scalar products, as lfilter's zi (numpy's vector product may round otherwise)
        x, info = zgttrs(np.full(n - 1, -lam[i]), ones, zeros, zeros[1:], pivots, rhs, overwrite_b=1)
        if info != 0:
            raise ValueError(f"zgttrs failed (info {info})")
        out[:, i] = x[:T]
    return out


def _loop_scan(F: np.ndarray, drive: np.ndarray, h0: np.ndarray) -> np.ndarray:
    out = np.empty_like(drive, dtype=float)
    h = h0.astype(float)
    for t in range(drive.shape[0]):
        h = F @ h + drive[t]
        out[t] = h
    return out


def _symmetric_root(J: np.ndarray) -> np.ndarray:
    """L with L^T L = J for a symmetric positive semi-definite J."""
    w, U = np.linalg.eigh(0.5 * (J + J.T))
    w = np.clip(w, 0.0, None)
    return (U * np.sqrt(w)).T
