"""Steady-state Kalman filter (fedgc.core.kalman) against independent references.

References: a naive covariance-form filter written here, statsmodels' KalmanFilter,
the time-varying Riccati recursion, the DARE written in measurement space, and
(for the conditioning checks) an mpmath computation at 50 digits.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal  # the reference of first_order_scan only; fedgc never imports it

from fedgc.core import kalman
from fedgc.core.kalman import filter_scan, information_matrix, kalman_gain, project_measurements, steady_state


def _fedgc_filter(sys, y, u, h0=None):
    """Posterior states h_t = F h_{t-1} + G u_t + Sigma C^T R^{-1} y_t from fedgc's pieces."""
    ss = steady_state(sys.A, information_matrix(sys.C, sys.R), sys.Q)
    drive = u @ ss.input_gain.T + project_measurements(y, sys.C, sys.R) @ ss.posterior_cov.T
    return filter_scan(ss.transition, drive, h0), ss


# ----------------------------------------------------------------------------- against a textbook filter


@pytest.mark.parametrize(
    "seed, D, P, radius",
    [(0, 3, 6, 0.9), (1, 2, 5, 0.5), (2, 4, 8, 0.98), (3, 1, 3, 0.7)],
)
def test_filter_matches_textbook_covariance_filter(gen, seed, D, P, radius):
    rng = np.random.default_rng(seed)
    sys = gen.random_lgss(rng, D, P, radius)
    T = 300
    u = rng.standard_normal((T, D))  # a known input in the prior
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    h0 = rng.standard_normal(D)
    H, ss = _fedgc_filter(sys, y, u, h0)
    ref, gains = gen.textbook_filter(sys, y, u, h0, ss.prior_cov)
    assert gen.rel_err(H, ref) < 1e-10
    # Started at the DARE prior covariance, the textbook filter stays at the steady state:
    # its gain never moves (this is what makes the comparison exact).
    K = kalman_gain(sys.C, sys.R, ss.posterior_cov)
    assert max(gen.rel_err(Kt, K) for Kt in gains) < 1e-10


def test_the_input_enters_through_the_prior(gen):
    """Dropping u from the fedgc filter (but not the reference) must break the agreement."""
    rng = np.random.default_rng(10)
    sys = gen.random_lgss(rng, 3, 6)
    T = 100
    u = rng.standard_normal((T, 3))
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    H_without, ss = _fedgc_filter(sys, y, np.zeros_like(u))
    ref, _ = gen.textbook_filter(sys, y, u, np.zeros(3), ss.prior_cov)
    assert gen.rel_err(H_without, ref) > 1e-3


def test_filter_matches_statsmodels(gen):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    rng = np.random.default_rng(4)
    D, P, T = 3, 6, 250
    sys = gen.random_lgss(rng, D, P)
    u = rng.standard_normal((T, D))
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    h0 = rng.standard_normal(D)
    H, ss = _fedgc_filter(sys, y, u, h0)

    kf = KalmanFilter(k_endog=P, k_states=D)
    kf.bind(np.ascontiguousarray(y))
    kf["design"] = sys.C
    kf["obs_cov"] = sys.R
    kf["transition"] = sys.A
    kf["selection"] = np.eye(D)
    kf["state_cov"] = sys.Q
    # statsmodels: alpha_{t+1} = c_t + T alpha_t + eta_t, so its c_t is our u_{t+1}; the initial
    # state is the first prior, N(A h0 + u_1, P_dare).
    intercept = np.zeros((D, T))
    intercept[:, :-1] = u[1:].T
    kf["state_intercept"] = intercept
    kf.initialize_known(sys.A @ h0 + u[0], ss.prior_cov)
    res = kf.filter()
    assert gen.rel_err(H, res.filtered_state.T) < 1e-10
    # statsmodels' covariances stay at fedgc's steady state.
    assert gen.rel_err(res.filtered_state_cov[:, :, -1], ss.posterior_cov) < 1e-10
    assert gen.rel_err(res.predicted_state_cov[:, :, -1], ss.prior_cov) < 1e-10


# ----------------------------------------------------------------------------- steady state


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_prior_cov_solves_the_measurement_space_dare(gen, seed):
    """P = A (P - P C^T (C P C^T + R)^{-1} C P) A^T + Q, written with C and R, not J."""
    rng = np.random.default_rng(seed)
    A, C, Q, R = gen.random_lgss(rng, 3, 7)
    ss = steady_state(A, information_matrix(C, R), Q)
    P = ss.prior_cov
    rhs = A @ (P - P @ C.T @ np.linalg.solve(C @ P @ C.T + R, C @ P)) @ A.T + Q
    assert gen.rel_err(P, rhs) < 1e-10
    assert np.linalg.eigvalsh(P).min() > 0
    # The posterior quantities are what they claim to be.
    K = kalman_gain(C, R, ss.posterior_cov)
    Sigma = (np.eye(3) - K @ C) @ P
    assert gen.rel_err(ss.posterior_cov, Sigma) < 1e-10
    assert gen.rel_err(ss.input_gain, np.eye(3) - K @ C) < 1e-10
    assert gen.rel_err(ss.transition, (np.eye(3) - K @ C) @ A) < 1e-10
    assert gen.rel_err(K, P @ C.T @ np.linalg.inv(C @ P @ C.T + R)) < 1e-10


def test_steady_gain_is_the_limit_of_the_time_varying_gain(gen):
    rng = np.random.default_rng(8)
    A, C, Q, R = gen.random_lgss(rng, 3, 5, radius=0.95)
    P = np.eye(3)
    for _ in range(2000):
        K = P @ C.T @ np.linalg.inv(C @ P @ C.T + R)
        Sigma = (np.eye(3) - K @ C) @ P
        P = A @ Sigma @ A.T + Q
    ss = steady_state(A, information_matrix(C, R), Q)
    assert gen.rel_err(kalman_gain(C, R, ss.posterior_cov), K) < 1e-10
    assert gen.rel_err(ss.posterior_cov, Sigma) < 1e-10
    assert gen.rel_err(ss.prior_cov, P) < 1e-10


def test_unstable_but_detectable_system_converges(gen):
    """The DARE solution is the limit of the Riccati recursion also for an unstable A."""
    rng = np.random.default_rng(9)
    A = np.array([[1.05, 0.3], [0.0, 0.6]])
    C = rng.standard_normal((4, 2))
    Q, R = gen.random_spd(2, rng), gen.random_spd(4, rng)
    P = np.eye(2)
    for _ in range(2000):
        K = P @ C.T @ np.linalg.inv(C @ P @ C.T + R)
        P = A @ (np.eye(2) - K @ C) @ P @ A.T + Q
    ss = steady_state(A, information_matrix(C, R), Q)
    assert gen.rel_err(ss.prior_cov, P) < 1e-10
    assert np.max(np.abs(np.linalg.eigvals(ss.transition))) < 1.0


# ----------------------------------------------------------------------------- filter_scan


def _spy_fallback(monkeypatch):
    calls = []
    original = kalman._loop_scan

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(kalman, "_loop_scan", spy)
    return calls


def _jordan(lam: float, D: int) -> np.ndarray:
    return lam * np.eye(D) + np.diag(np.ones(D - 1), 1)


@pytest.mark.parametrize(
    "name, expect_fallback",
    [
        ("diagonalisable", False),
        ("complex_slow", False),
        ("jordan", True),
        ("near_defective", True),
        ("similar_jordan", True),
    ],
)
def test_filter_scan_paths_match_the_loop(gen, monkeypatch, name, expect_fallback):
    rng = np.random.default_rng(11)
    if name == "diagonalisable":
        F = gen.random_stable(4, rng, 0.9)
    elif name == "complex_slow":
        F = gen.random_stable(6, rng, 0.999)  # slowly decaying complex modes over a long window
    elif name == "jordan":
        F = _jordan(0.8, 3)
    elif name == "near_defective":
        F = _jordan(0.8, 3) + np.diag([0.0, 1e-9, 2e-9])
    else:
        S = rng.standard_normal((3, 3))
        F = S @ _jordan(0.7, 3) @ np.linalg.inv(S)
    D = F.shape[0]
    drive = rng.standard_normal((3000, D))
    h0 = rng.standard_normal(D)
    calls = _spy_fallback(monkeypatch)
    out = filter_scan(F, drive, h0)
    assert bool(calls) == expect_fallback
    assert out.dtype == np.float64 and out.shape == drive.shape
    assert gen.rel_err(out, gen.loop_scan(F, drive, h0)) < 1e-10


@pytest.mark.parametrize(
    "kind, T", [("stable", 1000), ("slow", 4001), ("non_normal", 999), ("zero_start", 130), ("short", 127)]
)
def test_large_state_scan_is_the_plain_recursion(gen, kind, T):
    """Above LOOP_ABOVE_DIM the scan runs in chunks as matrix products: the plain recursion to rounding, for
    windows that are not a whole number of chunks, a slowly decaying F, a strongly non-normal F (transient
    growth of ||F^j||) and h_0 = 0; a window shorter than 4 chunks is the plain loop, bit for bit."""
    rng = np.random.default_rng(2)
    D = kalman.LOOP_ABOVE_DIM + 13
    F = rng.standard_normal((D, D))
    F *= {"slow": 0.999}.get(kind, 0.9) / np.abs(np.linalg.eigvals(F)).max()
    if kind == "non_normal":
        F = np.triu(F) * 0.3 + np.diag(np.full(D, 0.8)) + np.diag(np.full(D - 1, 2.0), 1)
    drive = rng.standard_normal((T, D))
    h0 = np.zeros(D) if kind == "zero_start" else rng.standard_normal(D)
    got, plain = kalman.filter_scan(F, drive, h0), gen.loop_scan(F, drive, h0)
    assert got.shape == drive.shape and got.dtype == np.float64
    if T < 4 * kalman.SCAN_CHUNK:
        assert np.array_equal(got, plain)
    else:
        assert np.abs(got - plain).max() <= 1e-12 * np.abs(plain).max()


def test_large_state_scan_of_an_exploding_recursion_is_not_finite_or_huge():
    """An unstable F: the blocked scan's states blow up as the loop's do (callers test finiteness and size)."""
    rng = np.random.default_rng(3)
    D = kalman.LOOP_ABOVE_DIM + 2
    F = rng.standard_normal((D, D))
    F *= 3.0 / np.abs(np.linalg.eigvals(F)).max()
    with np.errstate(over="ignore", invalid="ignore"):
        got = kalman.filter_scan(F, rng.standard_normal((2000, D)), rng.standard_normal(D))
    assert not np.all(np.isfinite(got)) or np.abs(got).max() > 1e300


def test_filter_scan_default_start_and_empty_window(gen):
    rng = np.random.default_rng(12)
    F = gen.random_stable(3, rng)
    drive = rng.standard_normal((50, 3))
    assert gen.rel_err(filter_scan(F, drive), gen.loop_scan(F, drive, np.zeros(3))) < 1e-12
    assert filter_scan(F, np.zeros((0, 3))).shape == (0, 3)
    one = filter_scan(F, drive[:1], np.ones(3))
    np.testing.assert_allclose(one[0], F @ np.ones(3) + drive[0], rtol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 500])
def test_first_order_scan_is_lfilter_bit_for_bit(T):
    """The eigenbasis recursions run in LAPACK's tridiagonal solve, not scipy.signal (a second to import):
    the same numbers, bit for bit, as the lfilter calls they replace, and the plain recursion to rounding."""
    rng = np.random.default_rng(T)
    lam = rng.uniform(-0.95, 0.95, 4) + 1j * rng.uniform(-0.3, 0.3, 4)
    g = (rng.standard_normal((T, 4)) + 1j * rng.standard_normal((T, 4))) * 10.0 ** rng.uniform(-3, 3, 4)
    x0 = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    out = kalman.first_order_scan(lam, g, x0)
    for i in range(4):
        ref, _ = scipy.signal.lfilter([1.0], [1.0, -lam[i]], g[:, i], zi=np.array([lam[i] * x0[i]]))
        assert np.array_equal(out[:, i], ref)
    x, loop = x0.copy(), np.empty_like(g)
    for t in range(T):
        x = lam * x + g[t]
        loop[t] = x
    np.testing.assert_allclose(out, loop, rtol=1e-12, atol=1e-12 * np.abs(loop).max())


def test_real_first_order_sweep_is_lfilter_bit_for_bit():
    """The real path's sweeps (dgttrs) give lfilter's numbers in real arithmetic, bit for bit."""
    rng = np.random.default_rng(9)
    g = rng.standard_normal(700) * 1e3
    for lam in (0.999, -0.5, 0.0):
        ref, _ = scipy.signal.lfilter([1.0], [1.0, -lam], g, zi=np.array([lam * 0.7]))
        out = kalman.first_order_sweep(lam, g, 0.7)
        assert out.dtype == np.float64 and np.array_equal(out, ref)


@pytest.mark.parametrize("D", [1, 2, 3, 5, 8])
def test_real_modal_scan_matches_the_complex_path(gen, monkeypatch, D):
    """Long windows (>= REAL_SCAN_MIN_STEPS) run in real arithmetic; on the same small data, forced
    onto each path, the two agree to rounding, and both with the loop."""
    rng = np.random.default_rng(40 + D)
    for trial in range(4):
        F = gen.random_stable(D, rng, 0.999 if trial == 0 else 0.9)
        drive = rng.standard_normal((3000, D))
        h0 = rng.standard_normal(D)
        monkeypatch.setattr(kalman, "REAL_SCAN_MIN_STEPS", 1)
        real = filter_scan(F, drive, h0)
        monkeypatch.setattr(kalman, "REAL_SCAN_MIN_STEPS", 10**9)
        complex_ = filter_scan(F, drive, h0)
        assert real.dtype == np.float64 and real.flags.c_contiguous and real.shape == drive.shape
        assert gen.rel_err(real, complex_) < 1e-13
        assert gen.rel_err(real, gen.loop_scan(F, drive, h0)) < 1e-10


def test_real_basis_pairs_conjugate_eigenvalues():
    F = np.array([[0.5, -0.6, 0.0], [0.6, 0.5, 0.0], [0.0, 0.0, 0.3]])
    lam, V = np.linalg.eig(F)
    W, modes = kalman._real_basis(lam, V)
    pair = [lam for _, lam in modes if lam.imag != 0]
    assert len(modes) == 2 and len(pair) == 1 and pair[0].imag > 0
    i = next(i for i, lam in modes if lam.imag != 0)
    a, b = pair[0].real, pair[0].imag
    # F acts on the pair's plane as [[a, b], [-b, a]] in the basis (Re v, Im v)
    B = np.linalg.solve(W, F @ W)
    np.testing.assert_allclose(B[i : i + 2, i : i + 2], [[a, b], [-b, a]], atol=1e-14)


# ----------------------------------------------------------------------------- information form


@pytest.mark.parametrize("D, P", [(3, 200), (2, 120), (3, 1), (4, 2)])
def test_information_form_for_many_or_few_sensors(gen, D, P):
    """P >> D (the filter never forms a P x P gain) and P < D (J singular) both match the textbook filter."""
    rng = np.random.default_rng(13 + P)
    sys = gen.random_lgss(rng, D, P)
    T = 150
    u = rng.standard_normal((T, D))
    _, y = gen.simulate_lgss(sys, T, rng, inputs=u)
    J = information_matrix(sys.C, sys.R)
    assert J.shape == (D, D)
    assert gen.rel_err(J, sys.C.T @ np.linalg.inv(sys.R) @ sys.C) < 1e-10
    assert gen.rel_err(project_measurements(y, sys.C, sys.R), y @ np.linalg.inv(sys.R) @ sys.C) < 1e-10
    H, ss = _fedgc_filter(sys, y, u)
    ref, _ = gen.textbook_filter(sys, y, u, np.zeros(D), ss.prior_cov)
    assert gen.rel_err(H, ref) < 1e-10


def _mp_steady_state(A, J, Q, P_start, iters=80):
    """Riccati iteration at 50 digits from a float start, in information form: exact for the given (A, J, Q)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    Am, Jm, Qm = mp.matrix(A.tolist()), mp.matrix(J.tolist()), mp.matrix(Q.tolist())
    Pm = mp.matrix(P_start.tolist())
    for _ in range(iters):
        Sm = mp.inverse(mp.inverse(Pm) + Jm)
        Pm = Am * Sm * Am.T + Qm
    Sm = mp.inverse(mp.inverse(Pm) + Jm)
    Gm = mp.eye(A.shape[0]) - Sm * Jm

    def f(X):
        return np.array(X.tolist(), dtype=float)

    return f(Pm), f(Sm), f(Gm)


@pytest.mark.parametrize(
    "r_scale",
    [
        1.0,
        1e-2,
        1e-4,
        1e-6,
    ],
)
def test_posterior_quantities_accurate_for_informative_sensors(gen, r_scale):
    """Many precise sensors (P = 200, small R: an identified R is floored at 1e-6) make J large.
    Sigma and G = I - K C must still be accurate to near machine precision."""
    rng = np.random.default_rng(14)
    D, P = 3, 200
    A, Q = gen.random_stable(D, rng, 0.9), gen.random_spd(D, rng)
    C = rng.standard_normal((P, D))
    R = r_scale * np.diag(rng.uniform(0.5, 2.0, P))
    J = information_matrix(C, R)
    ss = steady_state(A, J, Q)
    P_ref, Sigma_ref, G_ref = _mp_steady_state(A, J, Q, ss.prior_cov)
    assert gen.rel_err(ss.prior_cov, P_ref) < 1e-10
    assert gen.rel_err(ss.posterior_cov, Sigma_ref) < 1e-10
    assert gen.rel_err(ss.input_gain, G_ref) < 1e-9
    assert gen.rel_err(ss.transition, G_ref @ A) < 1e-9
