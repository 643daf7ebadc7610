"""Differential privacy: sensitivity bounds hold and are tight, noise is calibrated, accounting matches
opacus, the errors-in-variables correction helps, and bad settings fail before any data is touched."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant, create_accountant

from fedgc.app.config import PrivacySettings, parse_config
from fedgc.core.kalman import information_matrix
from fedgc.core.regression import Blocks, RegressionStats, newton_update
from fedgc.core.window import lagged, prepare_window
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError
from fedgc.privacy.accounting import PrivacyAccountant, plan_privacy, privacy_report
from fedgc.privacy.local import ClientPrivacy, privatise_window
from fedgc.privacy.mechanism import GaussianMechanism, ReleaseNoise, clip_rows
from fedgc.privacy.sensitivity import (
    augmentation_bound,
    augmentation_sensitivity,
    gradient_sensitivity,
    inverse_sqrt,
    pseudo_obs_sensitivity,
    sequence_sensitivity,
    state_sensitivity,
)
from fedgc.privacy.server import debias_stats
from fedgc.protocol.rules import RULES
from fedgc.protocol.session import ClientSession

T = 300
CLIP = 5.0


@pytest.fixture(scope="module")
def system():
    return simulate(
        SystemSpec(n_clients=3, state_dims=2, obs_dims=6, edge_density=0.5, n_steps=T), np.random.default_rng(3)
    )


def _session(data, m, y, sigma, *, noise_aware=True, space="whitened", seed=11):
    priv = ClientPrivacy(sigma, CLIP, space, noise_aware, seed=seed)
    return ClientSession(f"c{m}", data.system.local_model(m), y, privacy=priv)


def _bounds(sess, sigma, *, noise_aware=True, space="whitened"):
    model = sess.model
    pw = privatise_window(model, np.zeros((5, model.obs_dim)), ClientPrivacy(sigma, CLIP, space, noise_aware, seed=0),
                          client=sess.name)  # fmt: skip
    w = pw.window
    JA = w.J @ w.A
    kw = dict(transition=w.F, drive=pw.drive, input_sensitivity=pw.input_sensitivity)
    return pw, {
        "states": state_sensitivity(**kw),
        "pseudo_obs": pseudo_obs_sensitivity(lag0=pw.lag0, JA=JA, **kw),
        "gradient": gradient_sensitivity(lag0=pw.lag0, JA=JA, theta=np.eye(w.J.shape[0]), **kw),
    }


def _releases(sess, u):
    rn = sess.round(u, "newton")
    rg = sess.round(u, "gd")
    return {"states": rn.states, "pseudo_obs": rn.pseudo_obs, "gradient": rg.gradient}


@pytest.mark.parametrize("noise_aware", [True, False])
@pytest.mark.parametrize("space", ["whitened", "measurement"])
def test_every_release_moves_less_than_its_sensitivity(system, noise_aware, space):
    """Neighbours differ in one y_t of client 1; the same noise draw (same seed) on both sides, so the
    difference of each release is the filter's response to the change. Random changes stay under the
    bound; the worst-case change (top eigenvector, opposite signs at t = 0) reaches most of it."""
    m, sigma = 1, 0.8
    data = system
    y = data.y[m]
    rng = np.random.default_rng(5)
    base = _session(data, m, y, sigma, noise_aware=noise_aware, space=space)
    pw, bound = _bounds(base, sigma, noise_aware=noise_aware, space=space)
    D = base.state_dim
    u = 0.3 * rng.standard_normal((T, D))  # a fixed augmentation from the server
    ref = _releases(base, u)
    worst = dict.fromkeys(bound, 0.0)
    for _trial in range(6):
        t0 = int(rng.integers(0, T // 2))
        y2 = y.copy()
        y2[t0] = rng.standard_normal(y.shape[1]) * rng.choice([0.1, 1.0, 100.0])
        got = _releases(_session(data, m, y2, sigma, noise_aware=noise_aware, space=space), u)
        for k in bound:
            d = float(np.linalg.norm(got[k] - ref[k]))
            assert d <= bound[k] * (1 + 1e-9), (k, d, bound[k])
            worst[k] = max(worst[k], d)
    # The worst case: v_0 = +c e vs -c e along the top eigenvector of each release's Gramian.
    Jm = inverse_sqrt(information_matrix(base.model.C, base.model.R))
    C = base.model.C
    w = pw.window
    for k, (E0, H) in {
        "states": (pw.drive, w.F),
        "pseudo_obs": (pw.lag0, -w.J @ w.A),
        "gradient": (-2 * pw.lag0, 2 * w.J @ w.A),
    }.items():
        import scipy.linalg

        W = scipy.linalg.solve_discrete_lyapunov(w.F.T, H.T @ H)
        _vals, vecs = np.linalg.eigh(E0.T @ E0 + pw.drive.T @ W @ pw.drive)
        e = vecs[:, -1]
        direction = C @ Jm @ e  # raw y whose whitened projection is along e
        if space == "measurement":
            # the largest y-direction change: top right singular vector of J^{-1/2} C^T R^{-1} composed with e
            proj = Jm @ np.linalg.solve(base.model.R, C).T
            direction = proj.T @ e
        ya, yb = y.copy(), y.copy()
        ya[0] = 1e4 * direction / np.linalg.norm(direction)
        yb[0] = -ya[0]
        ra = _releases(_session(data, m, ya, sigma, noise_aware=noise_aware, space=space), u)[k]
        rb = _releases(_session(data, m, yb, sigma, noise_aware=noise_aware, space=space), u)[k]
        d = float(np.linalg.norm(ra - rb))
        assert d <= bound[k] * (1 + 1e-9)
        assert d >= bound[k] / 3, (k, d, bound[k])  # the bound is tight up to a small factor


def test_augmentation_sensitivity(system):
    """s^m_t = A_s^{mn} h^n_{t-1}: the change stays under the exact Gramian bound, which stays under the
    server's ||A_s^{mn}||_2 * Delta_h bound."""
    m, sigma = 0, 0.5
    y = system.y[m]
    base = _session(system, m, y, sigma)
    pw, bound = _bounds(base, sigma)
    block = np.array([[0.3, -0.2], [0.1, 0.25]])
    exact = augmentation_sensitivity(
        block=block, transition=pw.window.F, drive=pw.drive, input_sensitivity=pw.input_sensitivity
    )
    server = augmentation_bound(block, bound["states"])
    assert exact <= server * (1 + 1e-12)
    u = np.zeros((T, 2))
    h = base.round(u).states
    y2 = y.copy()
    y2[10] = -50 * y2[10]
    h2 = _session(system, m, y2, sigma).round(u).states
    d = float(np.linalg.norm((lagged(h2) - lagged(h)) @ block.T))
    assert d <= exact * (1 + 1e-9)
    assert server <= 5 * exact


def test_sequence_sensitivity_matches_brute_force_sum():
    rng = np.random.default_rng(0)
    F = 0.6 * np.linalg.qr(rng.standard_normal((3, 3)))[0]
    B, E0, H = rng.standard_normal((3, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    M = E0.T @ E0
    P = B.copy()
    for _ in range(400):
        M += (H @ P).T @ (H @ P)
        P = F @ P
    expected = 2.0 * np.sqrt(np.linalg.eigvalsh(M)[-1])
    assert sequence_sensitivity(transition=F, drive=B, lag0=E0, output=H, input_sensitivity=2.0) == pytest.approx(
        expected, rel=1e-9
    )


def test_noise_variance_matches_calibration(system):
    mech = GaussianMechanism(1.7, 0.4)
    x = mech.release(np.zeros((200_000, 2)), rng=np.random.default_rng(1))
    assert x.var() == pytest.approx((1.7 * 0.4) ** 2, rel=0.02)
    assert abs(x.mean()) < 0.01
    # The client's privatisation: v~ - v has std sigma * 2c in the whitened space.
    sess = _session(system, 2, system.y[2], 0.9)
    w0 = prepare_window(sess.model, system.y[2], sess.name)
    pw = privatise_window(
        sess.model, system.y[2], ClientPrivacy(0.9, CLIP, "whitened", False, seed=4), client=sess.name
    )
    Jm = inverse_sqrt(w0.J)
    v = clip_rows(w0.ytil @ Jm.T, CLIP)
    noise = pw.window.ytil @ Jm.T - v
    assert noise.std() == pytest.approx(0.9 * 2 * CLIP, rel=0.1)
    assert pw.noise_std == pytest.approx(0.9 * 2 * CLIP)
    assert clip_rows(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0) == pytest.approx(np.array([[0.6, 0.8], [0.3, 0.4]]))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_accountant_matches_opacus(accountant):
    acc = PrivacyAccountant(epsilon=8.0, delta=1e-5, accountant=accountant)
    plan = plan_privacy(
        acc, rounds=4, augmentations=RULES["newton"].data_dependent_augmentations(4), augmentation_noise=True
    )
    assert (plan.client_releases, plan.server_releases) == (1, 3)
    # Independently: opacus' own accountant, one step per release, sample rate 1.
    ref = create_accountant(mechanism=accountant)
    for _ in range(plan.steps):
        ref.step(noise_multiplier=plan.noise_multiplier, sample_rate=1.0)
    eps = ref.get_epsilon(delta=1e-5)
    assert eps <= 8.0 + 1e-9 and eps > 8.0 * 0.97
    report = privacy_report(
        acc,
        plan,
        clients=["a", "b"],
        rounds_run=4,
        augmentations_run=RULES["newton"].data_dependent_augmentations(4),
        clip=1.0,
        clip_space="whitened",
        debias="client",
        client_noise_std={},
        server_noise_std=[],
    )
    assert report["per_client"]["a"]["whole_run"]["epsilon"] == pytest.approx(eps, rel=1e-9)
    single = create_accountant(mechanism=accountant)
    single.step(noise_multiplier=plan.noise_multiplier, sample_rate=1.0)
    assert report["per_client"]["b"]["client_to_server"]["epsilon"] == pytest.approx(
        single.get_epsilon(delta=1e-5), rel=1e-9
    )


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_post_processing_plan_is_one_release(accountant):
    """Without augmentation noise the augmentations are post-processing: one Gaussian mechanism per client
    for the whole run, whatever the rounds, and both directions report that mechanism's epsilon."""
    acc = PrivacyAccountant(epsilon=8.0, delta=1e-5, accountant=accountant)
    plan = plan_privacy(acc, rounds=20, augmentations=RULES["newton"].data_dependent_augmentations(20))
    assert (plan.client_releases, plan.server_releases) == (1, 0) and not plan.augmentation_noise
    assert plan_privacy(acc, rounds=20, augmentations=RULES["gd"].data_dependent_augmentations(20)).steps == 1
    ref = create_accountant(mechanism=accountant)
    ref.step(noise_multiplier=plan.noise_multiplier, sample_rate=1.0)
    eps = ref.get_epsilon(delta=1e-5)
    assert 8.0 * 0.97 < eps <= 8.0 + 1e-9
    assert (
        plan.noise_multiplier
        < plan_privacy(
            acc, rounds=2, augmentations=RULES["newton"].data_dependent_augmentations(2), augmentation_noise=True
        ).noise_multiplier
    )
    report = privacy_report(
        acc,
        plan,
        clients=["a"],
        rounds_run=20,
        augmentations_run=RULES["newton"].data_dependent_augmentations(20),
        clip=1.0,
        clip_space="whitened",
        debias="client",
        client_noise_std={},
        server_noise_std=[],
    )
    a = report["per_client"]["a"]
    assert a["whole_run"]["epsilon"] == pytest.approx(eps, rel=1e-9) and a["whole_run"]["releases"] == 1
    assert a["server_to_clients"]["post_processing"] and a["server_to_clients"]["epsilon"] == pytest.approx(
        eps, rel=1e-9
    )
    assert report["noise_multiplier"]["server_to_clients"] == 0.0


def test_rdp_composition_is_history_based():
    rdp = RDPAccountant()
    rdp.history = [(1.3, 1.0, 5)]
    acc = PrivacyAccountant(epsilon=1.0, delta=1e-6)
    assert acc.spent(noise_multiplier=1.3, steps=5) == pytest.approx(rdp.get_epsilon(delta=1e-6), rel=1e-12)


def test_errors_in_variables_correction_reduces_error():
    """States observed with known additive noise: subtracting the noise covariance (with the shared-lag
    cross term of the pseudo-observations) cuts the error of the least-squares fit."""
    rng = np.random.default_rng(2)
    D, N = 4, 40_000
    blocks = Blocks.of([2, 2])
    A = np.array([[0.5, 0, 0.4, 0], [0, 0.5, 0, -0.3], [0, 0, 0.6, 0], [0, 0, 0, 0.4]])
    h = np.zeros((N + 1, D))
    for t in range(1, N + 1):
        h[t] = A @ h[t - 1] + rng.standard_normal(D)
    As_true = A.copy()
    for m in range(2):
        As_true[blocks.slice(m), blocks.slice(m)] = 0.0
    Aloc = A - As_true
    np.eye(D)
    z = h[1:] - h[:-1] @ Aloc.T + 0.3 * rng.standard_normal((N, D))
    V = 0.8 * np.eye(2)
    a = rng.standard_normal((N + 1, D)) * np.sqrt(0.8)
    hn = h + a
    zn = z - a[:-1] @ Aloc.T  # the pseudo-observation reuses the noisy lagged state
    X = hn[:-1]
    stats = RegressionStats(X.T @ X, X.T @ zn, zn.T @ zn, N)
    noises = [
        ReleaseNoise(
            V,
            -V @ Aloc[blocks.slice(m), blocks.slice(m)].T,
            Aloc[blocks.slice(m), blocks.slice(m)] @ V @ Aloc[blocks.slice(m), blocks.slice(m)].T,
            1.0,
        )
        for m in range(2)
    ]
    Js = [np.eye(2), np.eye(2)]
    naive = newton_update(stats, Js, blocks)
    fixed = newton_update(debias_stats(stats, noises, blocks), Js, blocks)
    err = lambda B: np.linalg.norm(B - As_true) / np.linalg.norm(As_true)
    assert err(fixed) < 0.5 * err(naive)
    assert err(fixed) < 0.1


BASE = {"synthetic": {"n_clients": 3, "n_steps": 50}, "server": {"max_rounds": 3}}


@pytest.mark.parametrize(
    "privacy, message",
    [
        ({"epsilon": 0, "delta": 1e-5, "clip": 1.0}, "epsilon"),
        ({"epsilon": -1, "delta": 1e-5, "clip": 1.0}, "epsilon"),
        ({"epsilon": 1, "delta": 0, "clip": 1.0}, "delta"),
        ({"epsilon": 1, "delta": 1.0, "clip": 1.0}, "delta"),
        ({"epsilon": 1, "delta": 2.0, "clip": 1.0}, "delta"),
        ({"epsilon": 1, "delta": 1e-5, "clip": 0}, "clip"),
        ({"epsilon": 1, "delta": 1e-5, "clip": 1.0, "accountant": "gdp2"}, "accountant"),
        ({"epsilon": 1, "delta": 1e-5, "clip": "sometimes"}, "clip"),
        ({"epsilon": 1, "delta": 1e-5, "event_steps": 0}, "event_steps"),
        ({"epsilon": 1, "delta": 1e-5, "budget": -2}, "budget"),
        ({"epsilon": 1, "delta": 1e-5, "clip": 1.0, "sigma": 3}, "unknown"),
    ],
)
def test_bad_privacy_settings_are_config_errors(privacy, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "privacy": privacy})


def test_absurd_target_fails_before_data_is_touched(monkeypatch):
    import fedgc.app.clients as clients
    from fedgc.app.runner import run_local

    cfg = parse_config({**BASE, "privacy": {"epsilon": 1e-3, "delta": 1e-5, "clip": 1.0}})

    def touched(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("data was touched")

    monkeypatch.setattr(clients, "simulate_scenario", touched)
    with pytest.raises(ConfigError, match="noise multiplier above"):
        run_local(cfg, mode="simulate", out_dir=None)


def test_privacy_off_by_default_and_inf_is_noise_free():
    assert parse_config(BASE).privacy is None
    assert parse_config({**BASE, "privacy": "off"}).privacy is None
    p = parse_config({**BASE, "privacy": {"epsilon": float("inf"), "delta": 1e-5, "clip": 2}}).privacy
    assert isinstance(p, PrivacySettings) and math.isinf(p.epsilon)
    assert PrivacyAccountant(epsilon=math.inf, delta=1e-5).noise_multiplier(steps=3) == 0.0


@pytest.mark.parametrize("augmentation_noise", [False, True])
def test_private_run_reports_figures(augmentation_noise):
    from fedgc.app.runner import run_local

    cfg = parse_config(
        {
            "seed": 1,
            "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 400},
            "server": {"max_rounds": 3},
            "privacy": {"epsilon": 5, "delta": 1e-5, "clip": 5.0, "augmentation_noise": augmentation_noise},
        }
    )
    res = run_local(cfg, mode="simulate", out_dir=None)
    p = res.privacy
    rounds = res.fit.rounds  # 3, or 1 when the shrinkage zeroes every block of a very noisy first round
    assert (
        p["enabled"]
        and p["private"]
        and p["rounds_run"] == rounds
        and len(p["server_noise_std_per_round"]) == rounds - 1
    )
    assert rounds == 1 or (min(p["server_noise_std_per_round"]) > 0) == augmentation_noise
    assert p["augmentation_noise"] == augmentation_noise and p["shrink"] is True
    for c in p["per_client"].values():
        assert c["whole_run"]["epsilon"] <= 5.0 + 1e-9
        assert c["whole_run"]["releases"] == (rounds if augmentation_noise else 1)
    assert "one time step" in p["neighbouring_relation"]
    assert np.isfinite(res.fit.A_s).all()


def test_corrected_moment_stays_positive_definite_and_unbiased_where_identified():
    """Noise-dominated Gram: subtracting n V outright is indefinite; the whitened positive-part correction is
    positive definite, keeps the strong (identified) direction's signal and floors the rest at the pure-noise edge."""
    from fedgc.privacy.server import corrected_moment, identified_floor

    rng = np.random.default_rng(0)
    n, D = 2000, 6
    V = np.diag([4.0, 4.0, 9.0, 9.0, 1.0, 1.0])
    signal = np.zeros((n, D))
    signal[:, 0] = 3.0 * rng.standard_normal(n)  # one identified direction: signal variance 9 vs noise 4
    X = signal + rng.standard_normal((n, D)) * np.sqrt(np.diag(V))
    S = X.T @ X
    assert np.linalg.eigvalsh(S - n * V)[0] < 0  # the naive correction is indefinite
    C = corrected_moment(S, V, n)
    assert np.allclose(C, C.T)
    w = np.linalg.eigvalsh(C)
    assert w[0] > 0
    # In the whitened basis no eigenvalue is below the floor; the identified direction keeps its signal.
    Lw = np.diag(1 / np.sqrt(np.diag(V)))
    assert np.linalg.eigvalsh(Lw @ (C / n) @ Lw)[0] >= identified_floor(n, D) * (1 - 1e-9)
    assert C[0, 0] / n == pytest.approx(9.0, rel=0.15)
    assert corrected_moment(S, np.zeros((D, D)), n) == pytest.approx(0.5 * (S + S.T))


def test_shrinkage_reduces_error_of_noisy_fit():
    """A fixed-seed noisy regression with 2 true edges out of 12 blocks: the empirical-Bayes factor, computed
    from the fit's own noise level only, cuts the error of the unbiased least-squares estimate."""
    from fedgc.privacy.server import shrink_blocks

    rng = np.random.default_rng(4)
    dims, N = [2, 2, 2, 2], 3000
    blocks = Blocks.of(dims)
    D = blocks.total
    A_true = np.zeros((D, D))
    A_true[blocks.slice(0), blocks.slice(1)] = [[0.3, 0.1], [0.0, 0.25]]
    A_true[blocks.slice(2), blocks.slice(3)] = [[-0.2, 0.0], [0.1, 0.3]]
    X = rng.standard_normal((N, D))
    Z = X @ A_true.T + 8.0 * rng.standard_normal((N, D))  # J = I, noise far above the signal
    stats = RegressionStats(X.T @ X, X.T @ Z, Z.T @ Z, N)
    Js = [np.eye(2)] * 4
    raw = newton_update(stats, Js, blocks)
    shrunk = shrink_blocks(raw, stats, Js, blocks)
    from fedgc.analysis.metrics import relative_error

    e_raw, e_shrunk = relative_error(raw, A_true, blocks), relative_error(shrunk, A_true, blocks)
    assert e_raw > 1.0  # unbiased, but noisier than the signal
    assert e_shrunk < 0.75 * e_raw and e_shrunk < 1.0
    # Every block moves toward zero by a factor in [0, 1]; most null blocks are set to zero.
    for m in range(4):
        for k in range(4):
            if m != k:
                b, r = shrunk[blocks.slice(m), blocks.slice(k)], raw[blocks.slice(m), blocks.slice(k)]
                f = np.sum(b * r) / np.sum(r * r)
                assert -1e-12 <= f <= 1 + 1e-12 and np.allclose(b, f * r)


def test_debias_with_shrinkage_beats_no_debias_in_a_private_run():
    """Fixed seed, small system, epsilon = 20, noise from the seed (a comparison of three runs needs the same draws): the noise-aware client filter with shrinkage is closer to the
    non-private oracle than the naive filter, and shrinkage helps the noise-aware estimate."""
    from fedgc.app.runner import run_local

    base = {
        "seed": 2,
        "synthetic": {"n_clients": 4, "state_dims": 2, "obs_dims": 8, "n_steps": 6000, "edge_density": 0.35},
        "server": {"max_rounds": 4},
    }
    err = {}
    for debias, shrink in (("client", True), ("client", False), ("none", True)):
        cfg = parse_config(
            {
                **base,
                "privacy": {
                    "epsilon": 20,
                    "delta": 1e-5,
                    "clip": 5.0,
                    "debias": debias,
                    "shrink": shrink,
                    "reproducible_noise": True,
                },
            }
        )
        err[debias, shrink] = run_local(cfg, mode="simulate", out_dir=None).evaluation.error_vs_oracle
    assert err["client", True] < err["client", False]
    assert err["client", True] < 0.9 * err["none", True]


@pytest.mark.parametrize("noise_scale", [3.0, 30.0])
def test_server_debias_stays_finite(noise_scale):
    """The errors-in-variables correction with a noise covariance far above the signal stays well posed
    (the former floor made the Gram near singular and the fit blew up)."""
    rng = np.random.default_rng(1)
    blocks = Blocks.of([2, 2])
    N = 5000
    x = rng.standard_normal((N, 4))
    A = np.zeros((4, 4))
    A[0:2, 2:4] = [[0.4, 0.0], [0.0, 0.3]]
    z = x @ A.T + rng.standard_normal((N, 4))
    V = noise_scale**2 * np.eye(2)
    xn = x + noise_scale * rng.standard_normal((N, 4))
    stats = RegressionStats(xn.T @ xn, xn.T @ z, z.T @ z, N)
    noises = [ReleaseNoise(V, np.zeros((2, 2)), np.zeros((2, 2)), 1.0)] * 2
    fixed = newton_update(debias_stats(stats, noises, blocks), [np.eye(2)] * 2, blocks)
    assert np.isfinite(fixed).all()
    assert np.linalg.norm(fixed) < 5 * np.linalg.norm(A)


def test_privacy_refuses_models_identified_from_the_protected_data(tmp_path):
    from fedgc.app.config import parse_config
    from fedgc.app.privacy import privacy_plan
    from fedgc.errors import ConfigError

    privacy = {"epsilon": 10.0, "delta": 1e-5, "clip": 7.0}
    sim = parse_config({"synthetic": {"n_clients": 3}, "local_models": "identify", "privacy": privacy})
    with pytest.raises(ConfigError, match="privacy needs local_models: given"):
        privacy_plan(sim)
    real = parse_config({"clients": [{"name": "feed", "data": "feed.csv"}, {"name": "reactor", "data": "r.csv",
                                      "model": "r.npz"}], "privacy": privacy})  # fmt: skip
    with pytest.raises(ConfigError, match=r"clients \['feed'\] would identify"):
        privacy_plan(real)
