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

so subtracting the known covariances makes the normal equations unbiased in expectation. It is only
well posed where the signal is identified: when the state noise dominates, sum x~ x~^T / n - V is a
difference of two nearly equal matrices and sampling error makes it indefinite. debias_stats therefore
corrects in the noise-whitened basis (generalised eigenproblem of the Gram against the known noise
covariance, eigenvalues mu_i of V^{-1/2} (gram / n) V^{-1/2}): the signal eigenvalue mu_i - 1 is kept where
it exceeds what noise alone produces, and floored at that level elsewhere. The level is the
Marchenko-Pastur edge tau = (1 + sqrt(D / n))^2 - 1 of a pure-noise Gram, set from n and D only, so the
correction is a ridge whose strength comes from the known noise, never from the truth.

Shrinkage. The noise-aware estimate of each block A_s^{mn} is unbiased but, at small epsilon, has a
sampling variance far above its signal. shrink_blocks multiplies each off-diagonal block by the
positive-part empirical-Bayes (James-Stein) factor

    w_mn = max(0, 1 - tr Cov(B^mn) / ||B^mn||_F^2),

the estimate of ||A^mn||^2 / (||A^mn||^2 + tr Cov) (E||B||^2 = ||A||^2 + tr Cov), with Cov from the
least-squares fit itself: Cov(column j of B^mn) = J^{-1} S J^{-1} [(X^T X)^{-1}]_jj, S = RSS / (n - K),
whose noise part is the privacy noise the server knows of. Blocks indistinguishable from noise go to
zero; strong blocks are kept almost whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedgc.core.regression import regressor_inverse_block, row_fit, shared_inverse
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.privacy.sensitivity import augmentation_bound


@dataclass
class ServerPrivacy:
    """noise_multiplier: sigma of each augmentation release; debias: apply the EIV correction;
    shrink: empirical-Bayes shrinkage of every block of A_s (newton rule);
    rng: the server's Generator; noise_std: filled in per round (for the report)."""

    noise_multiplier: float
    rng: np.random.Generator
    debias: bool = False
    shrink: bool = False
    noise_std: list[float] = field(default_factory=list)


def augmentation_noise_std(
    A_s: np.ndarray, blocks, state_sensitivities: Sequence[float], noise_multiplier: float
) -> float:
    M = len(blocks.dims)
    worst = 0.0
    for n in range(M):
        total = sum(
            augmentation_bound(A_s[blocks.slice(m), blocks.slice(n)], state_sensitivities[n]) ** 2
            for m in range(M)
            if m != n
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


def debias_stats(stats, noises: Sequence[ReleaseNoise | None], blocks):
    """RegressionStats with the known noise covariances removed where identified (module docstring):
    the Gram in the noise-whitened basis, eigenvalues mu_i - 1 floored at the pure-noise edge tau;
    zz (for the residuals) likewise. Both stay positive definite; the cross moments are corrected exactly."""
    gram, cross, zz = stats.gram.copy(), stats.cross.copy(), stats.zz.copy()
    n = stats.n
    V = np.zeros_like(gram)
    Z = np.zeros_like(zz)
    for m, nz in enumerate(noises):
        if nz is None:
            continue
        sl = blocks.slice(m)
        V[sl, sl] = nz.state_cov
        cross[sl, sl] -= n * nz.cross_cov
        Z[sl, sl] = nz.pseudo_obs_cov
    return type(stats)(corrected_moment(gram, V, n), cross, corrected_moment(zz, Z, n), n)


def identified_floor(n: int, dim: int) -> float:
    """tau = (1 + sqrt(dim / n))^2 - 1: the largest eigenvalue excess of a pure-noise whitened Gram of n
    samples in dim dimensions (Marchenko-Pastur edge), below which signal is not identified."""
    return float((1.0 + np.sqrt(dim / max(n, 1))) ** 2 - 1.0)


def corrected_moment(S: np.ndarray, V: np.ndarray, n: int) -> np.ndarray:
    """n * (S / n - V), positive definite: in the basis whitening the noise covariance V, eigenvalues
    mu_i - 1 of the whitened S / n are kept where above tau = identified_floor(n, dim) and set to tau
    elsewhere. Directions without noise (V singular there) are left as they are."""
    S = 0.5 * (S + S.T)
    V = 0.5 * (V + V.T)
    if not np.any(V):
        return S
    wv, Uv = np.linalg.eigh(V)
    scale = max(float(wv[-1]), 1e-300)
    noisy = wv > 1e-12 * scale
    # Whitening L with L V L^T = P (the projector onto the noisy directions), identity elsewhere.
    d = np.where(noisy, 1.0 / np.sqrt(np.where(noisy, wv, 1.0)), 1.0)
    L = (Uv * d).T  # rows: scaled eigenvectors
    Linv = Uv * (1.0 / d)
    M = L @ (S / n) @ L.T
    P = np.diag(noisy.astype(float))
    w, U = np.linalg.eigh(0.5 * (M - P + (M - P).T))
    tau = identified_floor(n, S.shape[0])
    w = np.maximum(w, tau)
    out = n * (Linv @ ((U * w) @ U.T) @ Linv.T)
    return 0.5 * (out + out.T)


def shrink_blocks(
    A_s: np.ndarray, stats, informations: Sequence[np.ndarray], blocks, *, diagonal: str = "fixed"
) -> np.ndarray:
    """Every off-diagonal block A_s^{mn} times w_mn = max(0, 1 - tr Cov / ||A_s^{mn}||_F^2) (module docstring).
    Diagonal blocks ('joint') are left alone. Returns a new matrix."""
    W = shared_inverse(stats.gram)
    out = A_s.copy()
    for m, J in enumerate(informations):
        fit = row_fit(stats, W, blocks, m, diagonal)
        dof = max(stats.n - fit.n_regressors, 1)
        Jinv = np.linalg.inv(0.5 * (J + J.T))
        col_cov = np.trace(Jinv @ (fit.rss / dof) @ Jinv)  # tr Cov of one column of B, per unit (X^T X)^{-1}_jj
        for n in range(len(blocks.dims)):
            if n == m:
                continue
            block = out[blocks.slice(m), blocks.slice(n)]
            power = float(np.sum(block**2))
            if power == 0.0:
                continue
            var = col_cov * float(np.trace(regressor_inverse_block(W, blocks, m, n, diagonal)))
            out[blocks.slice(m), blocks.slice(n)] = max(0.0, 1.0 - var / power) * block
    return out
