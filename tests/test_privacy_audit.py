"""An empirical audit of the client's release, attacking it as the best adversary would.

Worst-case neighbours: one row's measurement vector whose clipped whitened projection is +c e in one
dataset and -c e in the other (e the direction the release is read along), so the releases differ by the
full sensitivity 2c. The release is row-wise (each row clipped and noised on its own), so a window of N
such rows is N independent trials of that one-row mechanism, each with fresh noise from the operating
system. The optimal distinguishing test between two Gaussians with the same covariance is a threshold on
the projection onto their mean difference (Neyman-Pearson); its false-positive and false-negative rates,
bounded by Clopper-Pearson at 99.9 % each, give a lower bound on epsilon:

    epsilon >= log((1 - delta - FNR_upper) / FPR_upper).

The threshold is chosen on half of the trials and the rates are measured on the other half. The audit
must stay below the accountant's epsilon for the real mechanism, and catch two broken ones (half the
noise; noise regenerated from a public seed), which shows the attack has the power to notice.
"""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from fedgc.core.kalman import information_matrix
from fedgc.core.local_model import LocalModel
from fedgc.privacy.accounting import PrivacyAccountant
from fedgc.privacy.local import ClientPrivacy, privatise_window
from fedgc.privacy.sensitivity import inverse_sqrt, sqrt_psd

EPSILON, DELTA, CLIP = 1.0, 1e-5, 2.0
N_TRIALS = 2_000_000  # rows per dataset: independent trials of the one-row mechanism
CONFIDENCE = 0.999


def _model() -> LocalModel:
    C = np.array([[1.0, 0.2], [0.3, 1.0], [0.8, -0.5], [-0.4, 0.6]])
    return LocalModel(A=np.diag([0.7, 0.5]), C=C, Q=0.5 * np.eye(2), R=np.diag([0.5, 0.8, 1.0, 0.6]))


def _neighbours(model: LocalModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rows y_a, y_b whose whitened projections are +k e and -k e with k far beyond the clip, and e."""
    J = information_matrix(model.C, model.R)
    e = np.array([1.0, 0.0])
    # y = C J^{-1/2} e gives J^{-1/2} C^T R^{-1} y = J^{1/2} e: scale it far past the clip norm.
    y = model.C @ inverse_sqrt(J) @ e
    y *= 50 * CLIP / np.linalg.norm(sqrt_psd(J) @ e)
    return y, -y, e


def _releases(model: LocalModel, row: np.ndarray, privacy: ClientPrivacy) -> np.ndarray:
    """The released whitened projections v~ (N, D) of a window of N copies of `row`, read back from what the
    client's filter is built on (everything it sends is post-processing of these)."""
    pw = privatise_window(model, np.tile(row, (N_TRIALS, 1)), privacy, client="audited")
    J = information_matrix(model.C, model.R)
    kappa = 1.0 + pw.noise_std**2 if privacy.noise_aware else 1.0
    return pw.window.ytil * kappa @ inverse_sqrt(J).T  # ytil = v~ J^{1/2} / kappa


def _epsilon_lower_bound(stat0: np.ndarray, stat1: np.ndarray) -> float:
    """Lower bound on epsilon from the statistics under dataset 0 and 1 (dataset 1 has smaller values):
    the test 'say dataset 1 when stat < t', t chosen on the first half, rates on the second half."""
    half = len(stat0) // 2
    candidates = np.quantile(stat0[:half], [5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 3e-3, 1e-2])

    def bound(t: float, s0: np.ndarray, s1: np.ndarray) -> float:
        fp, tp = int((s0 < t).sum()), int((s1 < t).sum())
        fpr_hi = proportion_confint(fp, len(s0), alpha=2 * (1 - CONFIDENCE), method="beta")[1]
        tpr_lo = proportion_confint(tp, len(s1), alpha=2 * (1 - CONFIDENCE), method="beta")[0]
        return float(np.log(max(tpr_lo - DELTA, 1e-300) / max(fpr_hi, 1e-300)))

    best = max(candidates, key=lambda t: bound(t, stat0[:half], stat1[:half]))
    return bound(best, stat0[half:], stat1[half:])


@pytest.fixture(scope="module")
def setting():
    acc = PrivacyAccountant(EPSILON, DELTA)
    sigma = acc.noise_multiplier(steps=1)
    model = _model()
    ya, yb, e = _neighbours(model)
    return acc, sigma, model, ya, yb, e


def test_audit_stays_below_the_claimed_epsilon(setting):
    acc, sigma, model, ya, yb, e = setting
    claimed = acc.spent(noise_multiplier=sigma, steps=1)
    assert claimed <= EPSILON + 1e-9
    privacy = ClientPrivacy(sigma, CLIP)  # fresh operating-system noise for every release
    v0, v1 = _releases(model, ya, privacy), _releases(model, yb, privacy)
    # Both rows are clipped to the ball's edge, +c e and -c e: the releases differ by the full sensitivity.
    assert abs(np.median(v0 @ e) - CLIP) < 0.05 * sigma * 2 * CLIP
    lower = _epsilon_lower_bound(v0 @ e, v1 @ e)
    assert lower < claimed, (lower, claimed)


def test_audit_catches_half_the_noise(setting):
    acc, sigma, model, ya, yb, e = setting
    claimed = acc.spent(noise_multiplier=sigma, steps=1)
    broken = ClientPrivacy(sigma / 2, CLIP)  # claims the epsilon of sigma, adds half the noise
    lower = _epsilon_lower_bound(_releases(model, ya, broken) @ e, _releases(model, yb, broken) @ e)
    assert lower > claimed, (lower, claimed)


def test_audit_catches_noise_regenerated_from_a_public_seed(setting):
    """With the seed known (it is in result.json), the attacker regenerates the noise and removes it."""
    acc, sigma, model, ya, yb, e = setting
    claimed = acc.spent(noise_multiplier=sigma, steps=1)
    public = ClientPrivacy(sigma, CLIP, seed=(0, 1, 0), reproducible=True)
    noise = np.random.default_rng((0, 1, 0)).standard_normal((N_TRIALS, 2)) * sigma * 2 * CLIP
    v0, v1 = _releases(model, ya, public) - noise, _releases(model, yb, public) - noise
    lower = _epsilon_lower_bound(v0 @ e, v1 @ e)
    assert lower > 5 * claimed, (lower, claimed)
