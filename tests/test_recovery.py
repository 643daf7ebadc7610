"""End-to-end recovery on small synthetic systems: run_protocol over LocalTransport / ClientSession.

"moderate" = the generator's default client shape (3 states, 20 sensors, SNR 1), 4 clients, T = 2000.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from fedgc.analysis.oracle import oracle_fit
from fedgc.core.local_model import identify
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.protocol.settings import ServerConfig

MODERATE = dict(n_clients=4, state_dims=3, obs_dims=20, edge_density=0.25, n_steps=2000)
MODERATE_SEEDS = (0, 1, 2)


def _truth_scores(result, data):
    off = ~np.eye(len(data.y), dtype=bool)
    return -result.gc.log10_pvalue[off], data.system.edges[off]


@pytest.fixture(scope="module")
def moderate(gen):
    """(data, newton FitResult, sessions) per seed, newton with the true local models."""
    runs = []
    for seed in MODERATE_SEEDS:
        data = simulate(SystemSpec(**MODERATE), np.random.default_rng(seed))
        result, sessions = gen.run_federated(data, ServerConfig(max_rounds=10, tol=1e-6))
        runs.append((data, result, sessions))
    return runs


# ----------------------------------------------------------------------------- recovery


def test_auroc_of_federated_pvalues(gen, moderate):
    scores, labels = [], []
    for data, result, _ in moderate:
        s, truth = _truth_scores(result, data)
        assert gen.auroc(s, truth) >= 0.97
        scores.append(s)
        labels.append(truth)
    assert gen.auroc(np.concatenate(scores), np.concatenate(labels)) >= 0.97


def test_auroc_helper_is_mann_whitney(gen):
    rng = np.random.default_rng(0)
    s, truth = rng.standard_normal(40), rng.random(40) < 0.3
    u = scipy.stats.mannwhitneyu(s[truth], s[~truth]).statistic
    assert gen.auroc(s, truth) == pytest.approx(u / (truth.sum() * (~truth).sum()))
    assert gen.auroc(np.r_[1.0, 2.0, 3.0], np.r_[False, False, True]) == 1.0
    assert gen.auroc(np.r_[3.0, 2.0, 1.0], np.r_[False, False, True]) == 0.0
    assert gen.auroc(np.r_[1.0, 1.0], np.r_[False, True]) == 0.5


def test_newton_converges_within_ten_rounds(moderate):
    for _, result, _ in moderate:
        assert result.converged, [h.change for h in result.history]
        assert result.rounds <= 10
        changes = [h.change for h in result.history]
        assert changes[-1] < 1e-6
        assert all(b < a for a, b in itertools.pairwise(changes))  # linear convergence, no oscillation


def test_federated_close_to_oracle(gen, moderate):
    for data, result, sessions in moderate:
        A_oracle, history = oracle_fit([s.window for s in sessions], ServerConfig(max_rounds=10, tol=1e-6))
        assert history[-1].change < 1e-6
        mask = gen.off_block_mask(data.system.dims)
        gap = np.linalg.norm((result.A_s - A_oracle)[mask]) / np.linalg.norm(A_oracle[mask])
        assert gap < 0.02
        # and both are estimates of the truth, not of something else
        truth = data.system.A[mask]
        assert np.linalg.norm(result.A_s[mask] - truth) / np.linalg.norm(truth) < 0.5


def test_edges_match_truth(moderate):
    """BH edges at 5 %: every true edge found, at most one false discovery over the three systems."""
    false_pos = 0
    for data, result, _ in moderate:
        truth = data.system.edges
        assert np.all(result.gc.edges[truth])
        false_pos += int(np.sum(result.gc.edges & ~truth))
    assert false_pos <= 1


def test_gd_moves_toward_newton(gen, moderate):
    data, newton, _ = moderate[0]
    seen = []

    def record(A_s):
        seen.append(A_s.copy())
        return False

    gd, _ = gen.run_federated(data, ServerConfig(rule="gd", max_rounds=30), stop_when=record)
    assert len(seen) == 30 and not gd.converged
    err = [np.linalg.norm(A - newton.A_s) / np.linalg.norm(newton.A_s) for A in seen]
    assert all(b < a for a, b in itertools.pairwise(err))
    assert err[-1] < 0.1 * err[0]
    s, truth = _truth_scores(gd, data)
    assert gen.auroc(s, truth) >= 0.97


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
def test_identified_local_models_still_recover_the_graph(gen, moderate, diagonal):
    scores, labels = [], []
    for seed, (data, _, _) in zip(MODERATE_SEEDS, moderate):
        rng = np.random.default_rng(100 + seed)
        models = [identify(y, client=f"c{m}", rng=rng) for m, y in enumerate(data.y)]
        assert [mdl.state_dim for mdl in models] == list(data.system.dims)  # parallel analysis finds D_m
        result, _ = gen.run_federated(data, ServerConfig(max_rounds=20, diagonal=diagonal), models=models)
        s, truth = _truth_scores(result, data)
        scores.append(s)
        labels.append(truth)
        assert gen.auroc(s, truth) >= 0.95
    assert gen.auroc(np.concatenate(scores), np.concatenate(labels)) >= 0.95


# ----------------------------------------------------------------------------- calibration under the null


def _null_pvalues(gen, seeds, **spec):
    out = []
    for seed in seeds:
        data = simulate(SystemSpec(n_clients=4, state_dims=2, obs_dims=10, edge_density=0.0, n_steps=2000, **spec),
                        np.random.default_rng(seed))  # fmt: skip
        assert not data.system.edges.any()
        result, _ = gen.run_federated(data, ServerConfig(max_rounds=10))
        out.append(result.gc.pvalue[gen.off_diagonal(4)])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def null_pvalues(gen):
    return _null_pvalues(gen, range(1000, 1030))


@pytest.mark.slow
def test_false_positive_rate_under_the_null(null_pvalues):
    assert null_pvalues.size == 30 * 12
    fpr = np.mean(null_pvalues < 0.05)
    assert 0.02 <= fpr <= 0.08, fpr


_CONSERVATIVE = (
    "granger_tests ignores the fixed point's own-state feedback (z^m depends on A_s through client m's "
    "augmented states): the LR statistic is shrunk, p-values pile up near 1; worse the more persistent A^{mm}"
)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=_CONSERVATIVE)
def test_null_pvalues_are_uniform(null_pvalues):
    assert scipy.stats.kstest(null_pvalues, "uniform").pvalue > 0.01
    assert abs(np.mean(null_pvalues) - 0.5) < 3 * np.sqrt(1 / 12 / null_pvalues.size)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=_CONSERVATIVE)
def test_false_positive_rate_with_persistent_local_dynamics(gen):
    p = _null_pvalues(gen, range(2000, 2020), self_eig_range=(0.8, 0.9))
    fpr = np.mean(p < 0.05)
    assert 0.02 <= fpr <= 0.08, fpr


# ----------------------------------------------------------------------------- known limits (documented)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2001, 2002, 2003])
def test_newton_converges_with_persistent_local_dynamics(gen, seed):
    """Slow local dynamics make the plain fixed-point iteration oscillate and diverge (own-state
    feedback); the relaxed iteration must still converge, for the federated run and the oracle."""
    spec = SystemSpec(n_clients=5, state_dims=2, obs_dims=10, edge_density=0.3, n_steps=2000, self_eig_range=(0.8, 0.9))
    data = simulate(spec, np.random.default_rng(seed))
    config = ServerConfig(max_rounds=40)
    result, sessions = gen.run_federated(data, config)
    mask = gen.off_block_mask(data.system.dims)
    err = np.linalg.norm((result.A_s - data.system.A)[mask]) / np.linalg.norm(data.system.A[mask])
    assert result.converged and err < 0.35, (result.rounds, err)
    A_oracle, history = oracle_fit([s.window for s in sessions], config)
    assert history[-1].change < config.tol
    assert np.linalg.norm((A_oracle - data.system.A)[mask]) / np.linalg.norm(data.system.A[mask]) < 0.35


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the federated fixed point has an errors-in-variables bias relative to the oracle (local gains ignore "
    "the neighbours' estimation error): ~4 % here at any T, not sampling noise",
)
def test_federated_approaches_oracle_with_less_informative_sensors(gen):
    spec = SystemSpec(n_clients=5, state_dims=2, obs_dims=10, edge_density=0.3, n_steps=8000)
    data = simulate(spec, np.random.default_rng(1))
    config = ServerConfig(max_rounds=40, tol=1e-8)
    result, sessions = gen.run_federated(data, config)
    A_oracle, _ = oracle_fit([s.window for s in sessions], config)
    mask = gen.off_block_mask(data.system.dims)
    assert np.linalg.norm((result.A_s - A_oracle)[mask]) / np.linalg.norm(A_oracle[mask]) < 0.02
