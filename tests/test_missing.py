"""Missing measurements (NaN) in the filter, the client's reply, the oracle and identification.

References: a textbook covariance-form filter that skips the missing rows of C, R (written here),
statsmodels' KalmanFilter (which treats NaN as missing), the observed-data loss and normal
equations written directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from fedgc.analysis.oracle import oracle_fit
from fedgc.core.gaps import STEADY_TOL, project_observed
from fedgc.core.kalman import steady_state
from fedgc.core.local_model import LocalModel, identify, second_moments
from fedgc.core.regression import Blocks, lagged_stack
from fedgc.core.window import prediction_loss, prepare_window, pseudo_observations, run_filter
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import DataError
from fedgc.protocol.loop import run_protocol
from fedgc.protocol.session import ClientSession
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.transport import LocalTransport


def textbook_missing(sys, y, u, h0, P1):
    """Covariance-form filter using only the observed rows of C and R at each step (a fully missing
    row: prediction only). Returns posterior means (T, D) and covariances (T, D, D)."""
    A, C, Q, R = sys
    D = A.shape[0]
    h, P = np.asarray(h0, dtype=float), P1
    means, covs = np.empty((len(y), D)), np.empty((len(y), D, D))
    for t in range(len(y)):
        m = A @ h + u[t]
        o = ~np.isnan(y[t])
        if o.any():
            Co, Ro = C[o], R[np.ix_(o, o)]
            K = P @ Co.T @ np.linalg.inv(Co @ P @ Co.T + Ro)
            h = m + K @ (y[t, o] - Co @ m)
            Sigma = (np.eye(D) - K @ Co) @ P
        else:
            h, Sigma = m, P
        means[t], covs[t] = h, Sigma
        P = A @ Sigma @ A.T + Q
    return means, covs


def punch_holes(y, rng, *, cells=0.05, rows=(), block=None):
    """NaN in a fraction of cells, in whole rows, and in a block (rows, columns)."""
    y = y.copy()
    y[rng.random(y.shape) < cells] = np.nan
    y[list(rows)] = np.nan
    if block is not None:
        y[block] = np.nan
    return y


def _window_for(sys, y):
    model = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R)
    return model, prepare_window(model, y, "c0")


@pytest.mark.parametrize("seed, D, P, radius", [(0, 3, 6, 0.9), (1, 2, 5, 0.5), (2, 4, 8, 0.98)])
def test_filter_with_gaps_matches_textbook(gen, seed, D, P, radius):
    rng = np.random.default_rng(seed)
    sys = gen.random_lgss(rng, D, P, radius)  # dense R: needs R_oo^{-1}, not rows of R^{-1}
    T = 400
    u = rng.standard_normal((T, D))
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    y = punch_holes(y, rng, cells=0.04, rows=(0, 50, 51, 52, T - 1), block=(slice(200, 230), slice(0, P - 1)))
    _, window = _window_for(sys, y)
    h0 = rng.standard_normal(D)
    H = run_filter(window, u, h0)
    ss = steady_state(sys.A, window.J, sys.Q)
    ref, covs = textbook_missing(sys, y, u, h0, ss.prior_cov)
    assert gen.rel_err(H, ref) < 1e-10
    # The plan's covariances are the textbook ones; off the plan the textbook is at the steady state.
    plan = window.plan
    assert gen.rel_err(plan.posterior_cov, covs[plan.steps]) < 1e-10
    off = np.setdiff1d(np.arange(T), plan.steps)
    assert off.size > 0
    assert max(gen.rel_err(covs[t], ss.posterior_cov) for t in off) < 1e-10


def test_filter_with_gaps_matches_statsmodels(gen):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    rng = np.random.default_rng(4)
    D, P, T = 3, 6, 300
    sys = gen.random_lgss(rng, D, P)
    u = rng.standard_normal((T, D))
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    y = punch_holes(y, rng, cells=0.1, rows=(10, 11, 150))
    _, window = _window_for(sys, y)
    h0 = rng.standard_normal(D)
    H = run_filter(window, u, h0)
    ss = steady_state(sys.A, window.J, sys.Q)

    kf = KalmanFilter(k_endog=P, k_states=D)
    kf.bind(np.ascontiguousarray(y))
    kf["design"], kf["obs_cov"], kf["transition"] = sys.C, sys.R, sys.A
    kf["selection"], kf["state_cov"] = np.eye(D), sys.Q
    intercept = np.zeros((D, T))
    intercept[:, :-1] = u[1:].T  # statsmodels' c_t is our u_{t+1}
    kf["state_intercept"] = intercept
    kf.initialize_known(sys.A @ h0 + u[0], ss.prior_cov)
    res = kf.filter()
    assert gen.rel_err(H, res.filtered_state.T) < 1e-10
    plan = window.plan
    assert gen.rel_err(plan.posterior_cov, np.moveaxis(res.filtered_state_cov, -1, 0)[plan.steps]) < 1e-10


def test_plan_returns_to_steady_state_after_a_gap(gen):
    """One gap: the exact recursion runs from the gap until Sigma_t is back within tolerance, then stops."""
    rng = np.random.default_rng(5)
    sys = gen.random_lgss(rng, 3, 6, 0.8)
    T = 500
    _, y = gen.simulate_lgss(sys, T, rng)
    y[100] = np.nan
    _, window = _window_for(sys, y)
    steps = window.plan.steps
    assert steps[0] == 100 and np.array_equal(steps, np.arange(100, 100 + steps.size))
    assert 1 < steps.size < 200
    last = window.plan.posterior_cov[-1]
    assert np.max(np.abs(last - window.Sigma)) <= STEADY_TOL * np.max(np.abs(window.Sigma))
    # Without gaps: the steady-state fast path, no plan.
    _, clean = _window_for(sys, np.nan_to_num(y))
    assert clean.gaps is None and clean.plan is None


def test_projection_with_general_noise_uses_the_observed_block(gen):
    rng = np.random.default_rng(6)
    sys = gen.random_lgss(rng, 2, 5)
    y = rng.standard_normal((4, 5))
    y[1, [0, 3]] = np.nan
    y[2] = np.nan
    obs = project_observed(y, sys.C, sys.R)
    o = ~np.isnan(y[1])
    Ro = sys.R[np.ix_(o, o)]
    assert gen.rel_err(obs.ytil[1], sys.C[o].T @ np.linalg.solve(Ro, y[1, o])) < 1e-12
    assert gen.rel_err(obs.gaps.info[0], sys.C[o].T @ np.linalg.solve(Ro, sys.C[o])) < 1e-12
    assert np.array_equal(obs.gaps.steps, [1, 2]) and np.all(obs.gaps.info[1] == 0) and obs.ytil[2].tolist() == [0, 0]
    assert obs.yRy[1] == pytest.approx(y[1, o] @ np.linalg.solve(Ro, y[1, o]))
    np.testing.assert_array_equal(obs.gaps.n_missing, [2, 5])


def test_loss_counts_observed_sensors_only(gen):
    rng = np.random.default_rng(7)
    sys = gen.random_lgss(rng, 3, 6)
    _, y = gen.simulate_lgss(sys, 60, rng)
    y = punch_holes(y, rng, cells=0.2, rows=(5,))
    _, window = _window_for(sys, y)
    priors = rng.standard_normal((60, 3))
    direct = 0.0
    for t in range(60):
        o = ~np.isnan(y[t])
        e = y[t, o] - sys.C[o] @ priors[t]
        direct += e @ np.linalg.solve(sys.R[np.ix_(o, o)], e)
    assert prediction_loss(window, priors) == pytest.approx(direct, rel=1e-10)


def _gappy_system(seed, *, cells, rows_frac, n_steps=1500):
    data = simulate(
        SystemSpec(n_clients=3, state_dims=2, obs_dims=8, edge_density=0.5, n_steps=n_steps),
        np.random.default_rng(seed),
    )
    rng = np.random.default_rng(seed + 100)
    ys = []
    for y in data.y:
        rows = np.flatnonzero(rng.random(len(y)) < rows_frac)
        ys.append(punch_holes(y, rng, cells=cells, rows=rows))
    return data, ys


def test_server_fixed_point_solves_the_observed_data_normal_equations(gen):
    """With the EM-completed pseudo-observations, the newton rule's fixed point B satisfies
    sum_t J_t B x x^T = sum_t (ytil_t - J_t A h_{t-1}) x^T for every target: the exact least squares
    of the observed-data loss, which the fixed-J regression alone would not give."""
    data, ys = _gappy_system(1, cells=0.15, rows_frac=0.05)
    sessions = [ClientSession(f"c{m}", data.system.local_model(m), y) for m, y in enumerate(ys)]
    cfg = ServerConfig(max_rounds=60, tol=1e-11)
    fit = run_protocol(LocalTransport(sessions), cfg)
    assert fit.converged
    blocks = Blocks.of(data.system.dims)
    # The clients' states for the final A_s (one more round with it).
    from fedgc.core.regression import augmentations

    states = [s.states for s in sessions]
    replies = [s.round(a) for s, a in zip(sessions, augmentations(fit.A_s, states, blocks))]
    X = lagged_stack([r.states for r in replies])[1:]
    for m, s in enumerate(sessions):
        w = s.window
        others = blocks.regressors(m, "fixed")
        B = fit.A_s[blocks.slice(m)][:, others]
        z_obs = pseudo_observations(w, np.vstack([np.zeros((1, 2)), s.states[:-1]]))[1:]
        Jt = np.repeat(w.J[None], len(ys[m]), axis=0)
        Jt[w.gaps.steps] = w.gaps.info
        Jt = Jt[1:]
        x = X[:, others]
        lhs = np.einsum("tij,jk,tk,tl->il", Jt, B, x, x)
        rhs = z_obs.T @ x
        assert gen.rel_err(lhs, rhs) < 1e-6
        # The plain fixed-J solution differs: the completion matters.
        B_naive = np.linalg.solve(w.J, rhs) @ np.linalg.inv(x.T @ x)
        assert gen.rel_err(B_naive, B) > 1e-2


def test_federated_matches_oracle_and_recovers_edges_with_missing_data(gen):
    data, ys = _gappy_system(2, cells=0.1, rows_frac=0.03, n_steps=2000)
    sessions = [ClientSession(f"c{m}", data.system.local_model(m), y) for m, y in enumerate(ys)]
    cfg = ServerConfig(max_rounds=30, tol=1e-8)
    fit = run_protocol(LocalTransport(sessions), cfg)
    assert fit.converged
    A_oracle, _ = oracle_fit([s.window for s in sessions], cfg)
    off = gen.off_block_mask(data.system.dims)
    assert gen.rel_err(fit.A_s[off], A_oracle[off]) < 0.05
    truth = data.system.edges
    assert truth.sum() >= 1 and np.array_equal(fit.gc.edges, truth)


def test_privacy_refuses_missing_data(gen):
    from fedgc.privacy.local import ClientPrivacy

    rng = np.random.default_rng(8)
    sys = gen.random_lgss(rng, 2, 4)
    _, y = gen.simulate_lgss(sys, 50, rng)
    y[3, 1] = np.nan
    model = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R)
    with pytest.raises(DataError, match=r"client 'plant'.*missing measurements"):
        ClientSession("plant", model, y, privacy=ClientPrivacy(1.0, 1.0))


# ----------------------------------------------------------------------------- identification


def test_pairwise_second_moments():
    rng = np.random.default_rng(9)
    y = rng.standard_normal((40, 3))
    y[[1, 5, 7], 0] = np.nan
    y[[5, 9], 2] = np.nan
    S = second_moments(y)
    for i in range(3):
        for j in range(3):
            both = ~np.isnan(y[:, i]) & ~np.isnan(y[:, j])
            assert S[i, j] == pytest.approx(np.mean(y[both, i] * y[both, j]), rel=1e-12)
    clean = rng.standard_normal((40, 3))
    np.testing.assert_array_equal(second_moments(clean), clean.T @ clean / 40)


def test_identify_tolerates_missing_values():
    data = simulate(SystemSpec(n_clients=2, state_dims=3, obs_dims=20, n_steps=3000), np.random.default_rng(0))
    y = data.y[0]
    full = identify(y, client="a", rng=np.random.default_rng(0))
    holes = punch_holes(y, np.random.default_rng(1), cells=0.2, rows=range(100, 110))
    gappy = identify(holes, client="a", state_dim=full.state_dim, rng=np.random.default_rng(0))
    assert np.isfinite(gappy.A).all() and np.isfinite(gappy.mean).all()
    eig = lambda A: np.sort(np.abs(np.linalg.eigvals(A)))
    np.testing.assert_allclose(eig(gappy.A), eig(full.A), atol=0.03)
    assert np.degrees(scipy.linalg.subspace_angles(gappy.C, full.C)).max() < 5.0
    np.testing.assert_allclose(np.diag(gappy.R), np.diag(full.R), rtol=0.1)
    np.testing.assert_allclose(np.trace(gappy.Q), np.trace(full.Q), rtol=0.05)
    # The gappy data's model filters the gappy data.
    assert np.isfinite(ClientSession("a", gappy, holes).states).all()
