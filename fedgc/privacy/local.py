"""Client side of privacy: clip, privatise the projected measurements once, build the filter on them.

Input perturbation. Client m privatises v_t = J^{-1/2} C^T R^{-1} y_t (clipped) ONCE per run:

    v~_t = v_t + e_t,  e_t ~ N(0, s^2 I),  s = sigma * Delta_v,

and from then on works only with ytil~_t = J^{1/2} v~_t = ytil_t + J^{1/2} e_t. Everything it
releases afterwards (states, pseudo-observations, gradients, in every round) is a function of
ytil~ and of what the server sent, i.e. post-processing: the client->server direction costs one
Gaussian mechanism per run, however many rounds. J = C^T R^{-1} C depends on the local model
only, never on the data, so releasing it costs nothing (when the model is given, or identified
from other data than the window it protects).

Since ytil_t = J h_t + C^T R^{-1} w_t has noise covariance J, the privatised ytil~_t has noise
covariance (1 + s^2) J: exactly the original model with R scaled by kappa = 1 + s^2. The
noise-aware filter (debias 'client') therefore runs with J_f = J / kappa on ytil~ / kappa, and its
states are again posterior means, so the server's regression needs no errors-in-variables
correction. The naive filter (J_f = J on ytil~) carries filtered noise in its states, with
stationary covariance V = sum_k F^k (s^2 Sigma J Sigma) F^k^T, which the server can subtract
(debias 'server', fedgc.privacy.debias_stats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from fedgc.core.window import ClientWindow
from fedgc.core.kalman import steady_state
from fedgc.core.local_model import LocalModel
from fedgc.privacy.mechanism import GaussianMechanism, ReleaseNoise, clip_rows
from fedgc.privacy.sensitivity import input_sensitivity, inverse_sqrt, sqrt_psd, state_sensitivity


@dataclass(frozen=True)
class ClientPrivacy:
    """noise_multiplier: sigma of the client's one mechanism; clip: c; clip_space: 'whitened' (||v_t|| <= c)
    or 'measurement' (||y_t|| <= c on standardised y); noise_aware: the filter accounts for the noise;
    rng: the client's own Generator; noisy_augmentation: the server noises the augmentations (then the
    client learns theta to shrink them; otherwise they are exact functions of released data and theta
    stays the identity unless asked for: learning it on noisy data amplifies weak blocks and destabilises
    the rounds)."""

    noise_multiplier: float
    clip: float
    clip_space: str = "whitened"
    noise_aware: bool = True
    rng: np.random.Generator | None = None
    noisy_augmentation: bool = False


@dataclass(frozen=True)
class PrivateWindow:
    window: ClientWindow           # what the filter and every release use from now on
    noise: ReleaseNoise            # told to the server in every reply
    input_sensitivity: float       # Delta_v
    drive: np.ndarray              # B (D, D): v -> state drive
    lag0: np.ndarray               # E (D, D): v -> pseudo-observation at the same step
    noise_std: float               # s


def whitened_projection(model: LocalModel, raw: np.ndarray, window: ClientWindow, *, clip: float, clip_space: str) -> np.ndarray:
    """v_t (T, D): clipped whitened projected measurements."""
    Jm = inverse_sqrt(window.J)
    if clip_space == "whitened":
        return clip_rows(window.ytil @ Jm.T, clip)
    y = clip_rows(model.standardise(np.asarray(raw, dtype=float)), clip)
    return (y @ np.linalg.solve(model.R, model.C)) @ Jm.T


def privatise_window(model: LocalModel, raw: np.ndarray, window: ClientWindow, settings: ClientPrivacy) -> PrivateWindow:
    if settings.rng is None:
        raise ValueError("client privacy needs an explicit numpy Generator")
    J = window.J
    delta_v = input_sensitivity(clip=settings.clip, clip_space=settings.clip_space, J=J, C=model.C, R=model.R)
    v = whitened_projection(model, raw, window, clip=settings.clip, clip_space=settings.clip_space)
    mech = GaussianMechanism(settings.noise_multiplier, delta_v)
    v_noisy = mech.release(v, rng=settings.rng)
    s2 = mech.std**2
    Jh = sqrt_psd(J)
    ytil = v_noisy @ Jh.T
    kappa = 1.0 + s2 if settings.noise_aware else 1.0
    J_f = J / kappa
    ss = steady_state(window.A, J_f, window.Q)
    D = J.shape[0]
    new = window._replace(
        ytil=ytil / kappa, yRy=np.zeros(ytil.shape[0]), J=J_f, F=ss.transition, G=ss.input_gain, Sigma=ss.posterior_cov
    )
    B = ss.posterior_cov @ Jh / kappa
    E = Jh / kappa
    JA = J_f @ window.A
    if settings.noise_aware or s2 == 0.0:
        V = np.zeros((D, D))
        cross = np.zeros((D, D))
        zcov = s2 * J / kappa**2
    else:
        V = scipy.linalg.solve_discrete_lyapunov(ss.transition, s2 * ss.posterior_cov @ J @ ss.posterior_cov)
        V = 0.5 * (V + V.T)
        cross = -V @ JA.T
        zcov = s2 * J + JA @ V @ JA.T
    sens_h = state_sensitivity(transition=ss.transition, drive=B, input_sensitivity=delta_v)
    return PrivateWindow(new, ReleaseNoise(V, cross, zcov, sens_h), delta_v, B, E, float(np.sqrt(s2)))
