"""A client's window reduced to the state dimension, and the augmented steady-state filter over it.

Augmented client model (client m, local model A, C, Q, R, gain K):

    prior:      h_{t|t-1} = A h_{t-1} + f_theta(s_t)
    posterior:  h_t = h_{t|t-1} + K (y_t - C h_{t|t-1})
    loss:       L = sum_t || R^{-1/2} (y_t - C h_{t|t-1}) ||^2

Raw measurements are touched once, in `prepare_window`, which projects them to
ytil_t = C^T R^{-1} y_t (T, D); every round afterwards works in D dimensions.

Missing measurements (NaN) are handled exactly (fedgc.core.gaps): the filter uses only the observed
sensors o_t (ytil_t = C_o^T R_oo^{-1} y_o, information J_t) with the exact covariance recursion
around the gaps, and the loss counts observed sensors only. The reply keeps its form (states,
pseudo-observations, one J): at gap steps the pseudo-observation is completed with the
prediction of the missing sensors at the client's prior (EM), z_t = ytil_t - J_t A h_{t-1} +
(J - J_t) u_t, so the server's fixed-J least squares J B sum x x^T = sum z x^T has, at its fixed
point u_t = B x_{t-1}, exactly the solution of the observed-data normal equations
sum_t J_t B x x^T = sum_t (ytil_t - J_t A h_{t-1}) x^T.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedgc.core.gaps import (
    FilterPlan,
    Gaps,
    complete_pseudo_obs,
    gapped_scan,
    missing_quadratic,
    plan_filter,
    project_observed,
)
from fedgc.core.kalman import filter_scan, information_matrix, solve_noise
from fedgc.core.local_model import LocalModel, validate
from fedgc.errors import DataError


class ClientWindow(NamedTuple):
    """A client's window, reduced to what the filter needs.

    ytil:        (T, D) C^T R^{-1} y_t of the standardised measurements.
    yRy:         (T,)   y_t^T R^{-1} y_t, for the loss.
    J:           (D, D) C^T R^{-1} C.
    A:           (D, D) local transition.
    Q:           (D, D) local process noise covariance.
    F:           (D, D) (I - K C) A, posterior recursion.
    G:           (D, D) I - K C, gain on the prior input.
    Sigma:       (D, D) steady-state posterior covariance.
    gaps:        steps with missing sensors and their information J_t (None: nothing missing);
                 ytil and yRy then hold the observed sensors' C_o^T R_oo^{-1} y_o and y_o^T R_oo^{-1} y_o.
    plan:        the exact filter's F_t, G_t, Sigma_t around the gaps (None when gaps is None).
    """

    ytil: np.ndarray
    yRy: np.ndarray
    J: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    F: np.ndarray
    G: np.ndarray
    Sigma: np.ndarray
    gaps: Gaps | None = None
    plan: FilterPlan | None = None


def prepare_window(model: LocalModel, raw: np.ndarray, client: str) -> ClientWindow:
    """The window of raw measurements (T, P), NaN for missing ones, reduced to D dimensions."""
    steady = validate(model, client)
    raw = np.asarray(raw, dtype=float)
    # A block of rows at a time (each row's projection is its own): only (block, P) temporaries besides
    # the (T, D) result. Missing values anywhere: the whole window through project_observed instead.
    T = raw.shape[0]
    ytil, yRy = np.empty((T, model.C.shape[1])), np.empty(T)
    gaps: Gaps | None = None
    plan: FilterPlan | None = None
    complete = True
    for a in range(0, T, PROJECTION_BLOCK_ROWS):
        y = raw[a : a + PROJECTION_BLOCK_ROWS] - model.mean
        y /= model.scale  # model.standardise, in place
        if not np.isfinite(y).all():
            if np.isinf(y).any():
                raise DataError(f"client '{client}': the measurements contain infinite values")
            complete = False
        if complete:
            Rinv_y = solve_noise(model.R, y)
            ytil[a : a + len(y)] = Rinv_y @ model.C
            yRy[a : a + len(y)] = np.einsum("tp,tp->t", y, Rinv_y)
    if not complete:
        ytil, yRy, gaps = project_observed(model.standardise(raw), model.C, model.R)
    J = information_matrix(model.C, model.R)
    A = np.asarray(model.A, dtype=float)
    Q = np.asarray(model.Q, dtype=float)
    if gaps is not None:
        plan = plan_filter(A, Q, J, steady, gaps)
    return ClientWindow(ytil, yRy, J, A, Q, steady.transition, steady.input_gain, steady.posterior_cov, gaps, plan)


# Rows per block when projecting a complete window (bounds the (rows, P) temporaries to cache-sized ones;
# each row's projection is its own: the block size moves only the last bits of BLAS's products).
PROJECTION_BLOCK_ROWS = 1 << 13


def run_filter(window: ClientWindow, prior_input: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """Posterior states h_{1:T} (T, D) given the prior input u_t = f_theta(s_t) (T, D)."""
    if window.plan is not None:
        return gapped_scan(window.F, window.G, window.Sigma, window.plan, prior_input, window.ytil, h0)
    drive = prior_input @ window.G.T + window.ytil @ window.Sigma.T
    return filter_scan(window.F, drive, h0)


def lagged(states: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """h_{0:T-1} from h_{1:T}: the states each step's prior is built from."""
    first = np.zeros((1, states.shape[1])) if h0 is None else h0[None, :]
    return np.vstack([first, states[:-1]])


def pseudo_observations(
    window: ClientWindow, prev_states: np.ndarray, prior_input: np.ndarray | None = None
) -> np.ndarray:
    """z_t = ytil_t - J A h_{t-1}, (T, D). At gap steps: without prior_input the observed-data form
    ytil_t - J_t A h_{t-1}; with the prior input u_t (T, D) the completed form (module docstring)
    ytil_t - J_t A h_{t-1} + (J - J_t) u_t."""
    z = window.ytil - prev_states @ (window.J @ window.A).T
    if window.gaps is None:
        return z
    s = window.gaps.steps
    priors = prev_states[s] @ window.A.T
    if prior_input is not None:
        priors = priors + prior_input[s]
    return complete_pseudo_obs(z, window.J, window.gaps, priors)


def prediction_loss(window: ClientWindow, priors: np.ndarray) -> float:
    """sum_t (y_t - C p_t)^T R^{-1} (y_t - C p_t) over the observed sensors, for prior means p_t (T, D)."""
    loss = float(window.yRy.sum() - 2.0 * np.sum(priors * window.ytil) + np.sum((priors @ window.J) * priors))
    if window.gaps is not None:
        loss -= missing_quadratic(window.J, window.gaps, priors[window.gaps.steps])
    return loss
