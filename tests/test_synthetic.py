"""The synthetic generator: known truth, requested SNR and dimensions, perturbation schedule."""

from __future__ import annotations

import numpy as np
import pytest

from fedgc.data.synthetic import Perturbation, SystemSpec, make_system, simulate
from fedgc.errors import ConfigError


def test_dimensions_edges_and_stability():
    spec = SystemSpec(n_clients=6, state_dims=[2, 3, 2, 4, 1, 2], obs_dims=[5, 9, 7, 12, 3, 6], edge_density=0.3)
    system = make_system(spec, np.random.default_rng(0))
    assert system.dims == (2, 3, 2, 4, 1, 2)
    assert [c.shape for c in system.C] == [(5, 2), (9, 3), (7, 2), (12, 4), (3, 1), (6, 2)]
    assert system.edges.sum() == round(0.3 * 30)
    assert not system.edges.diagonal().any()
    for m in range(6):
        for n in range(6):
            nonzero = np.any(system.block(system.A, m, n) != 0)
            assert nonzero == (m == n or system.edges[m, n])
    assert np.max(np.abs(np.linalg.eigvals(system.A))) <= spec.max_spectral_radius + 1e-9


def test_measurement_snr_matches_the_request():
    spec = SystemSpec(n_clients=3, state_dims=2, obs_dims=30, snr=2.5, n_steps=40000)
    data = simulate(spec, np.random.default_rng(1))
    o = data.system.offsets
    for m in range(3):
        signal = data.states[:, o[m] : o[m + 1]] @ data.system.C[m].T
        noise = data.y[m] - signal
        assert signal.var(axis=0).sum() / noise.var(axis=0).sum() == pytest.approx(2.5, rel=0.1)


def test_states_follow_the_transition():
    spec = SystemSpec(n_clients=3, state_dims=2, obs_dims=6, n_steps=20000)
    data = simulate(spec, np.random.default_rng(2))
    X, Y = data.states[:-1], data.states[1:]
    A_hat = np.linalg.lstsq(X, Y, rcond=None)[0].T
    assert np.abs(A_hat - data.system.A).max() < 0.05


def test_perturbations_switch_blocks_at_the_given_times():
    spec = SystemSpec(
        n_clients=4, state_dims=2, obs_dims=6, edge_density=0.0, edge_strength=0.5, n_steps=30000,
        perturbations=(Perturbation(10000, target=0, source=1, action="on"),
                       Perturbation(20000, target=0, source=1, action="scale", factor=-1.0)),
    )  # fmt: skip
    data = simulate(spec, np.random.default_rng(3))
    assert data.segment_starts.tolist() == [0, 10000, 20000]
    assert not data.edges_over_time[0].any()
    assert data.edges_over_time[1][0, 1] and data.edges_over_time[1].sum() == 1
    assert data.edges_over_time[2][0, 1]
    pattern = data.system.block(data.system.patterns, 0, 1)
    h = data.states
    for (start, end), sign in (((0, 10000), 0.0), ((10000, 20000), 1.0), ((20000, 30000), -1.0)):
        X, Y = h[start : end - 1], h[start + 1 : end]
        A_hat = np.linalg.lstsq(X, Y, rcond=None)[0].T
        np.testing.assert_allclose(A_hat[0:2, 2:4], sign * pattern, atol=0.06)


def test_same_seed_same_data_and_spec_errors():
    spec = SystemSpec(n_clients=3, state_dims=2, obs_dims=5, n_steps=100)
    a, b = simulate(spec, np.random.default_rng(9)), simulate(spec, np.random.default_rng(9))
    for ya, yb in zip(a.y, b.y):
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ConfigError, match="n_clients must be >= 2"):
        SystemSpec(n_clients=1)
    with pytest.raises(ConfigError, match="list of 3 positive ints"):
        SystemSpec(n_clients=3, state_dims=[2, 2])
    with pytest.raises(ConfigError, match="outside the system"):
        SystemSpec(n_clients=3, n_steps=100, perturbations=(Perturbation(200, 0, 1, "on"),))


def test_a_perturbation_that_makes_the_system_unstable_is_a_config_error():
    spec = SystemSpec(
        n_clients=3, state_dims=2, obs_dims=5, n_steps=200, edge_density=1.0,
        perturbations=(Perturbation(100, target=0, source=1, action="scale", factor=1000.0),),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="perturbation at t=100 makes the system unstable"):
        simulate(spec, np.random.default_rng(0))
