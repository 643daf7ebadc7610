"""Exact Kalman filtering with missing measurements (NaN entries of y), around a steady-state filter.

At step t only the observed sensors o_t enter the update. In information form

    ytil_t = C_o^T R_oo^{-1} y_o        (D,)    projected observed measurements
    J_t    = C_o^T R_oo^{-1} C_o        (D, D)  information of the step (0 for a fully missing row)

and the exact filter runs the covariance recursion

    P_t     = A Sigma_{t-1} A^T + Q
    Sigma_t = (P_t^{-1} + J_t)^{-1},    G_t = Sigma_t P_t^{-1},    F_t = G_t A
    h_t     = F_t h_{t-1} + G_t u_t + Sigma_t ytil_t

(u_t the known prior input). The covariances depend on the missing pattern only, never on the
data, so they are computed once per window (`plan_filter`): from the steady state Sigma before
the first gap, through every step with missing entries, and on after each gap until Sigma_t is
back at the steady state within a relative tolerance. Every other step uses the steady-state
F, G, Sigma and the vectorised scan (`fedgc.core.kalman.filter_scan`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedgc.core.kalman import SteadyState, filter_scan, information_matrix, solve_noise

# Relative distance max|Sigma_t - Sigma| / max|Sigma| below which a step after a gap is back at steady state.
STEADY_TOL = 1e-13
# Steady runs shorter than this go through the plain loop (filter_scan's eigendecomposition costs more).
SHORT_RUN = 64


class Gaps(NamedTuple):
    """The steps of a window with missing measurements.

    steps: (K,) sorted 0-based step indices with at least one missing sensor;
    info:  (K, D, D) J_t = C_o^T R_oo^{-1} C_o at those steps;
    n_missing: (K,) number of missing sensors at those steps;
    n_steps: T, the window length.
    """

    steps: np.ndarray
    info: np.ndarray
    n_missing: np.ndarray
    n_steps: int


class FilterPlan(NamedTuple):
    """Per-step filter matrices where the covariance is off its steady state.

    steps: (L,) sorted step indices (every gap step and the transient after it);
    transition: (L, D, D) F_t;  input_gain: (L, D, D) G_t;  posterior_cov: (L, D, D) Sigma_t.
    """

    steps: np.ndarray
    transition: np.ndarray
    input_gain: np.ndarray
    posterior_cov: np.ndarray


class ObservedWindow(NamedTuple):
    """ytil: (T, D) C_o^T R_oo^{-1} y_o;  yRy: (T,) y_o^T R_oo^{-1} y_o;  gaps: the steps with missing sensors."""

    ytil: np.ndarray
    yRy: np.ndarray
    gaps: Gaps


def project_observed(y: np.ndarray, C: np.ndarray, R: np.ndarray) -> ObservedWindow:
    """Project measurements y (T, P) with NaN for missing entries, one missing pattern at a time
    (a general R needs R_oo^{-1}, not the rows of R^{-1})."""
    T, _P = y.shape
    D = C.shape[1]
    missing = np.isnan(y)
    ytil = np.empty((T, D))
    yRy = np.empty(T)
    rows = missing.any(axis=1)
    full = ~rows
    if full.any():
        Rinv_y = solve_noise(R, y[full])
        ytil[full] = Rinv_y @ C
        yRy[full] = np.einsum("tp,tp->t", y[full], Rinv_y)
    steps = np.flatnonzero(rows)
    info = np.zeros((steps.size, D, D))
    if steps.size:
        patterns, which = np.unique(missing[steps], axis=0, return_inverse=True)
        which = which.reshape(-1)
        for k, pattern in enumerate(patterns):
            at = np.flatnonzero(which == k)
            obs = np.flatnonzero(~pattern)
            if obs.size == 0:  # a fully missing row: a pure prediction step
                ytil[steps[at]] = 0.0
                yRy[steps[at]] = 0.0
                continue
            Roo = R[np.ix_(obs, obs)]
            yo = y[np.ix_(steps[at], obs)]
            Rinv_y = solve_noise(Roo, yo)
            ytil[steps[at]] = Rinv_y @ C[obs]
            yRy[steps[at]] = np.einsum("tp,tp->t", yo, Rinv_y)
            info[at] = information_matrix(C[obs], Roo)
    return ObservedWindow(ytil, yRy, Gaps(steps, info, missing[steps].sum(axis=1), T))


def plan_filter(
    A: np.ndarray, Q: np.ndarray, J: np.ndarray, steady: SteadyState, gaps: Gaps, *, tol: float = STEADY_TOL
) -> FilterPlan:
    """The exact covariance recursion over the gap steps and the transients after them (module docstring);
    J is the full information C^T R^{-1} C of the steps without gaps. The window starts at the steady
    state, as the steady-state filter assumes."""
    D = A.shape[0]
    Sigma_ss = steady.posterior_cov
    scale = np.max(np.abs(Sigma_ss))
    gap_at = {int(t): k for k, t in enumerate(gaps.steps)}
    steps, Fs, Gs, Ss = [], [], [], []
    eye = np.eye(D)
    k_next = 0  # the next gap step not yet planned
    Sigma = Sigma_ss
    t = int(gaps.steps[0]) if gaps.steps.size else gaps.n_steps
    while t < gaps.n_steps:
        k = gap_at.get(t)
        P = A @ Sigma @ A.T + Q
        Sigma, G = _update(0.5 * (P + P.T), J if k is None else gaps.info[k], eye)
        steps.append(t)
        Fs.append(G @ A)
        Gs.append(G)
        Ss.append(Sigma)
        if k is not None:
            k_next = k + 1
            t += 1
        elif np.max(np.abs(Sigma - Sigma_ss)) <= tol * scale:  # back at steady state: jump to the next gap
            Sigma = Sigma_ss
            t = int(gaps.steps[k_next]) if k_next < gaps.steps.size else gaps.n_steps
        else:
            t += 1
    if not steps:
        return FilterPlan(np.zeros(0, dtype=int), *(np.zeros((0, D, D)) for _ in range(3)))
    return FilterPlan(np.array(steps, dtype=int), np.array(Fs), np.array(Gs), np.array(Ss))


def _update(P: np.ndarray, J: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fedgc.core.kalman.measurement_update in plain numpy calls (this runs once per step of a plan):
    with P = L L^T, Sigma = L (I + L^T J L)^{-1} L^T and G = Sigma P^{-1} = L (I + L^T J L)^{-1} L^{-1}."""
    L = np.linalg.cholesky(P)
    S = L.T @ J @ L
    Minv = np.linalg.inv(eye + 0.5 * (S + S.T))
    LM = L @ Minv
    Sigma = LM @ L.T
    return 0.5 * (Sigma + Sigma.T), LM @ np.linalg.inv(L)


def gapped_scan(
    F: np.ndarray,
    G: np.ndarray,
    Sigma: np.ndarray,
    plan: FilterPlan,
    u: np.ndarray,
    ytil: np.ndarray,
    h0: np.ndarray | None = None,
) -> np.ndarray:
    """Posterior states h_{1:T} (T, D) of the exact filter: h_t = F_t h_{t-1} + G_t u_t + Sigma_t ytil_t,
    with the plan's matrices at its steps and the steady-state F, G, Sigma elsewhere."""
    T, D = ytil.shape
    h = np.zeros(D) if h0 is None else np.asarray(h0, dtype=float)
    drive = u @ G.T + ytil @ Sigma.T
    s = plan.steps
    drive[s] = np.einsum("kij,kj->ki", plan.input_gain, u[s]) + np.einsum("kij,kj->ki", plan.posterior_cov, ytil[s])
    varying = np.zeros(T, dtype=bool)
    varying[s] = True
    F_at = np.full(T, -1)  # index into plan.transition, -1 for the steady F
    F_at[s] = np.arange(s.size)
    out = np.empty((T, D))
    edges = np.flatnonzero(np.diff(varying.astype(np.int8))) + 1
    for a, b in zip(np.r_[0, edges], np.r_[edges, T]):
        if not varying[a] and b - a >= SHORT_RUN:
            out[a:b] = filter_scan(F, drive[a:b], h)
            h = out[b - 1]
            continue
        for t in range(a, b):
            h = (F if F_at[t] < 0 else plan.transition[F_at[t]]) @ h + drive[t]
            out[t] = h
    return out


def complete_pseudo_obs(z: np.ndarray, J: np.ndarray, gaps: Gaps, priors: np.ndarray) -> np.ndarray:
    """z_t + (J - J_t) p_t at the gap steps (a new (T, D) array), p_t (K, D) the prior means there.

    The missing sensors' share of C^T R^{-1} y_t is replaced by its prediction at the prior mean: the
    E-step of EM for the measurement loss, with E[y_m | y_o] = C_m p + R_mo R_oo^{-1} (y_o - C_o p). Then
    C^T R^{-1} yhat_t = ytil_t + (J - J_t) p_t exactly, for any R."""
    out = z.copy()
    out[gaps.steps] += np.einsum("kij,kj->ki", J - gaps.info, priors)
    return out


def missing_quadratic(J: np.ndarray, gaps: Gaps, priors: np.ndarray) -> float:
    """sum over gap steps of p_t^T (J - J_t) p_t: what the full-information quadratic of a loss counts
    for sensors that were not observed."""
    return float(np.einsum("ki,kij,kj->", priors, J - gaps.info, priors))


def stack_gaps(parts: list[Gaps | None], infos: list[np.ndarray], n_steps: int) -> Gaps | None:
    """The joint gaps of several stacked blocks (the oracle's joint filter): J_t = blockdiag(J_t^m), the
    full J^m for blocks observed at t. parts[m] None: block m has no gaps. None if no block has gaps."""
    if all(g is None for g in parts):
        return None
    steps = np.unique(np.concatenate([g.steps for g in parts if g is not None]))
    dims = [J.shape[0] for J in infos]
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    info = np.zeros((steps.size, off[-1], off[-1]))
    n_missing = np.zeros(steps.size, dtype=int)
    for m, (g, J) in enumerate(zip(parts, infos)):
        block = slice(off[m], off[m + 1])
        info[:, block, block] = J
        if g is not None:
            at = np.searchsorted(steps, g.steps)
            info[at, block, block] = g.info
            n_missing[at] += g.n_missing
    return Gaps(steps, info, n_missing, n_steps)
