"""L2 sensitivities of the sequences a client releases, from the filter (Gramian bounds).

Privacy unit: one time step. Client m privatises its whitened projected measurements

    v_t = J^{-1/2} C^T R^{-1} y_t          (D, standardised y; measurement noise part ~ N(0, I))

after clipping (either ||v_t|| <= c, or ||y_t|| <= c before projecting). Changing one
y_{t0} (within the clip) changes only v_{t0}, by a vector delta with ||delta|| <= Delta_v:

    Delta_v = 2 c                                  (clip_space 'whitened')
    Delta_v = 2 c ||J^{-1/2} C^T R^{-1}||_2        (clip_space 'measurement')

The filter sees v through its drive, h_t = F h_{t-1} + G u_t + B v_t (B = Sigma_f J^{1/2} / kappa,
kappa = 1 + s^2 for a noise-aware filter, 1 otherwise), so with the augmentation u held fixed
(it comes from the server, i.e. from earlier releases) a change delta at t0 moves

    h_{t0+k} by F^k B delta                    (k >= 0)
    z_{t0}   by E delta,  z_{t0+k} by -J_f A F^{k-1} B delta   (E = J^{1/2} / kappa, k >= 1)
    g_t      by -2 theta^T (change of z_t)     (gd rule, linear f_theta)
    s^m_{t0+k} by A_s^{mn} F^{k-1} B delta     (augmentation of client m, source n, k >= 1)

Each is a sequence r with r_{t0} = E0 delta and r_{t0+k} = H F^{k-1} B delta, whose squared
norm summed over all k is delta^T (E0^T E0 + B^T W B) delta with W = sum_k (F^k)^T H^T H F^k,
the solution of W = F^T W F + H^T H (scipy.linalg.solve_discrete_lyapunov). Hence

    sensitivity = Delta_v * sqrt(lambda_max(E0^T E0 + B^T W B)),

an upper bound for any window (the window truncates the sum) and attained, up to the
truncation, by delta along the top eigenvector at t0 = 1. For the states (E0 = B, H = F) this
is the design's 2c sqrt(lambda_max(sum_k (F^k K)^T (F^k K))).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def sequence_sensitivity(
    *, transition: np.ndarray, drive: np.ndarray, lag0: np.ndarray, output: np.ndarray, input_sensitivity: float
) -> float:
    """Delta_v sqrt(lambda_max(E0^T E0 + B^T W B)) for r_{t0} = E0 delta, r_{t0+k} = H F^{k-1} B delta.

    transition F (D, D) stable;  drive B (D, K);  lag0 E0 (Q0, K);  output H (Q, D).
    """
    F, B, E0, H = (np.atleast_2d(np.asarray(x, dtype=float)) for x in (transition, drive, lag0, output))
    if np.max(np.abs(np.linalg.eigvals(F))) >= 1.0:
        raise ValueError("the filter's posterior recursion F is not stable; no finite sensitivity")
    W = scipy.linalg.solve_discrete_lyapunov(F.T, H.T @ H)
    Mx = E0.T @ E0 + B.T @ (0.5 * (W + W.T)) @ B
    lam = float(np.linalg.eigvalsh(0.5 * (Mx + Mx.T))[-1])
    return float(input_sensitivity) * float(np.sqrt(max(lam, 0.0)))


def input_sensitivity(
    *,
    clip: float,
    clip_space: str,
    J: np.ndarray | None = None,
    C: np.ndarray | None = None,
    R: np.ndarray | None = None,
) -> float:
    """Delta_v: the largest change of one whitened projected measurement v_t between neighbours."""
    if clip_space == "whitened":
        return 2.0 * float(clip)
    if clip_space == "measurement":
        proj = inverse_sqrt(J) @ np.linalg.solve(R, C).T  # (D, P)
        return 2.0 * float(clip) * float(np.linalg.norm(proj, 2))
    raise ValueError(f"clip_space must be 'whitened' or 'measurement', got {clip_space!r}")


def state_sensitivity(*, transition: np.ndarray, drive: np.ndarray, input_sensitivity: float) -> float:
    """Posterior states h_{1:T}: E0 = B, H = F."""
    return sequence_sensitivity(
        transition=transition, drive=drive, lag0=drive, output=transition, input_sensitivity=input_sensitivity
    )


def pseudo_obs_sensitivity(
    *, transition: np.ndarray, drive: np.ndarray, lag0: np.ndarray, JA: np.ndarray, input_sensitivity: float
) -> float:
    """Pseudo-observations z_t = ytil_t - J A h_{t-1}: E0 = lag0 (v -> ytil), H = -J A."""
    return sequence_sensitivity(
        transition=transition, drive=drive, lag0=lag0, output=-JA, input_sensitivity=input_sensitivity
    )


def gradient_sensitivity(
    *,
    transition: np.ndarray,
    drive: np.ndarray,
    lag0: np.ndarray,
    JA: np.ndarray,
    theta: np.ndarray,
    input_sensitivity: float,
) -> float:
    """gd gradients g_t = -2 theta^T (z_t - J u_t) for a linear f_theta: E0 = -2 theta^T E, H = 2 theta^T J A."""
    T2 = 2.0 * np.asarray(theta, dtype=float).T
    return sequence_sensitivity(
        transition=transition, drive=drive, lag0=-T2 @ lag0, output=T2 @ JA, input_sensitivity=input_sensitivity
    )


def augmentation_sensitivity(
    *, block: np.ndarray, transition: np.ndarray, drive: np.ndarray, input_sensitivity: float
) -> float:
    """Exact Gramian bound for s^m_t = A_s^{mn} h^n_{t-1} w.r.t. client n's data: E0 = 0, H = A_s^{mn}.
    Needs client n's filter (F, B); the server uses augmentation_bound instead."""
    block = np.asarray(block, dtype=float)
    return sequence_sensitivity(
        transition=transition,
        drive=drive,
        lag0=np.zeros((1, drive.shape[1])),
        output=block,
        input_sensitivity=input_sensitivity,
    )


def augmentation_bound(block: np.ndarray, source_state_sensitivity: float) -> float:
    """||A_s^{mn}||_2 * (sensitivity of client n's states): the lagged states are a truncation of
    h^n_{1:T}, and ||(I (x) A) d|| <= ||A||_2 ||d||. Needs only the scalar client n reports."""
    return float(np.linalg.norm(np.asarray(block, dtype=float), 2)) * float(source_state_sensitivity)


def inverse_sqrt(J: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh(0.5 * (J + J.T))
    if w[0] <= 0:
        raise ValueError(
            "the information matrix J must be positive definite for privacy (C must have full column rank)"
        )
    return (U / np.sqrt(w)) @ U.T


def sqrt_psd(J: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh(0.5 * (J + J.T))
    return (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T
