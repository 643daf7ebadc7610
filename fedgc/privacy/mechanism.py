"""Clipping and the Gaussian mechanism (no accounting here: that is fedgc.privacy.accounting).

Every noise draw takes an explicit numpy Generator; nothing touches global seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedgc.errors import ConfigError


def clip_rows(x: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row of x (T, K) to L2 norm at most `clip`."""
    x = np.asarray(x, dtype=float)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-300))


@dataclass(frozen=True)
class GaussianMechanism:
    """Adds N(0, (noise_multiplier * sensitivity)^2) to every entry of a release.

    noise_multiplier: sigma >= 0 (0: no noise);  sensitivity: L2 sensitivity of the whole release.
    """

    noise_multiplier: float
    sensitivity: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"noise multiplier must be finite and >= 0, got {self.noise_multiplier!r}")
        if not (np.isfinite(self.sensitivity) and self.sensitivity >= 0):
            raise ConfigError(f"sensitivity must be finite and >= 0, got {self.sensitivity!r}")

    @property
    def std(self) -> float:
        return float(self.noise_multiplier * self.sensitivity)

    def release(self, value: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        value = np.asarray(value, dtype=float)
        if self.std == 0.0:
            return value.copy()
        return value + self.std * rng.standard_normal(value.shape)


class ReleaseNoise(NamedTuple):
    """What the server needs to know about the privacy noise in one client's reply (no data in it).

    state_cov:        (D, D) stationary covariance of the noise carried by the released states
                      (zero when the client's filter is noise-aware: its states are posterior means).
    cross_cov:        (D, D) Cov(state noise at t-1, pseudo-observation noise at t); the two share
                      the same noisy state h_{t-1} at different lags.
    pseudo_obs_cov:   (D, D) covariance of the pseudo-observation noise.
    state_sensitivity: L2 sensitivity of the state sequence h_{1:T} to one raw time step.
    """

    state_cov: np.ndarray
    cross_cov: np.ndarray
    pseudo_obs_cov: np.ndarray
    state_sensitivity: float
