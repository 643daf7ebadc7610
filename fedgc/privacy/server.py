"""Server side of privacy: Gaussian noise on the augmentations, and the errors-in-variables correction.

Augmentation noise. s^m_t = sum_n A_s^{mn} h^n_{t-1}. Its sensitivity to client n's data is at most
||A_s^{mn}||_2 Delta_h^n (fedgc.privacy.sensitivity.augmentation_bound), Delta_h^n being the state
sensitivity client n reports. The server calibrates one noise level per round to the stacked
augmentations of all clients but n, maximised over n:

    std = sigma * max_n sqrt(sum_{m != n} (||A_s^{mn}||_2 Delta_h^n)^2),

so the release protects every client n even against all other clients pooling what they receive.
A_s is computed from earlier releases, so choosing the noise from it is adaptive composition.

Errors in variables. When released states carry additive noise (a noise-unaware client filter),
x~_{t-1} = x_{t-1} + a_{t-1} and z~_t = z_t + b_t, with a, b independent across clients and zero mean:

    E[sum x~ x~^T] = sum x x^T + n Cov(a)                        (block diagonal: V^m)
    E[sum x~ z~^T] = sum x z^T + n Cov(a_{t-1}, b_t)             (own blocks: z~^m_t = ytil~ - J A h~^m_{t-1}
                                                                  reuses the noisy state at lag t-1, so
                                                                  Cov = -V^m (J A)^T; other blocks 0)
    E[sum z~ z~^T] = sum z z^T + n Cov(b)

so subtracting the known covariances makes the normal equations unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.privacy.sensitivity import augmentation_bound


@dataclass
class ServerPrivacy:
    """noise_multiplier: sigma of each augmentation release; debias: apply the EIV correction;
    rng: the server's Generator; noise_std: filled in per round (for the report)."""

    noise_multiplier: float
    rng: np.random.Generator
    debias: bool = False
    noise_std: list[float] = field(default_factory=list)


def augmentation_noise_std(A_s: np.ndarray, blocks, state_sensitivities: Sequence[float], noise_multiplier: float) -> float:
    M = len(blocks.dims)
    worst = 0.0
    for n in range(M):
        total = sum(
            augmentation_bound(A_s[blocks.slice(m), blocks.slice(n)], state_sensitivities[n]) ** 2 for m in range(M) if m != n
        )
        worst = max(worst, float(np.sqrt(total)))
    return float(noise_multiplier) * worst


def privatise_augmentations(
    clean: Sequence[np.ndarray], A_s: np.ndarray, blocks, noises: Sequence[ReleaseNoise | None], privacy: ServerPrivacy
) -> list[np.ndarray]:
    sens = [0.0 if nz is None else nz.state_sensitivity for nz in noises]
    std = augmentation_noise_std(A_s, blocks, sens, privacy.noise_multiplier)
    privacy.noise_std.append(std)
    if std == 0.0:
        return [np.array(s, dtype=float) for s in clean]
    return [s + std * privacy.rng.standard_normal(s.shape) for s in clean]


def debias_stats(stats, noises: Sequence[ReleaseNoise | None], blocks, *, floor: float = 1e-3):
    """RegressionStats with the known noise covariances removed (see the module docstring).
    The corrected Gram and zz are projected back to positive definite (eigenvalues floored at
    `floor` times their mean), since sampling error can push a corrected matrix indefinite."""
    gram, cross, zz = stats.gram.copy(), stats.cross.copy(), stats.zz.copy()
    n = stats.n
    for m, nz in enumerate(noises):
        if nz is None:
            continue
        sl = blocks.slice(m)
        gram[sl, sl] -= n * nz.state_cov
        cross[sl, sl] -= n * nz.cross_cov
        zz[sl, sl] -= n * nz.pseudo_obs_cov
    return type(stats)(_floor_psd(gram, floor), cross, _floor_psd(zz, floor), n)


def _floor_psd(X: np.ndarray, floor: float) -> np.ndarray:
    X = 0.5 * (X + X.T)
    w, U = np.linalg.eigh(X)
    lo = floor * max(float(np.mean(np.abs(w))), 1e-300)
    if w[0] >= lo:
        return X
    return (U * np.maximum(w, lo)) @ U.T
