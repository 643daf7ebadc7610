"""Local models: validation errors that name the client, .npz files, identification from data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.linalg

from fedgc.core.kalman import information_matrix, steady_state
from fedgc.core.local_model import (
    MAX_NOISE_CORRECTION,
    LocalModel,
    corrected_process_noise,
    identify,
    is_detectable,
    load_npz,
    save_npz,
    validate,
)
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ModelError

CLIENT = "boiler-3"


def _model(rng, D=2, P=5, **override) -> LocalModel:
    parts = dict(
        A=np.diag(rng.uniform(0.3, 0.8, D)),
        C=rng.standard_normal((P, D)),
        Q=np.eye(D),
        R=np.diag(rng.uniform(0.5, 1.5, P)),
    )
    parts.update(override)
    return LocalModel(**parts)


def _fails(model, *fragments):
    with pytest.raises(ModelError) as info:
        validate(model, CLIENT)
    msg = str(info.value)
    for fragment in (CLIENT, *fragments):
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


# ----------------------------------------------------------------------------- validate


def test_valid_model_returns_its_steady_state():
    model = _model(np.random.default_rng(0))
    ss = validate(model, CLIENT)
    ref = steady_state(model.A, information_matrix(model.C, model.R), model.Q)
    np.testing.assert_allclose(ss.prior_cov, ref.prior_cov, rtol=1e-12)
    np.testing.assert_allclose(ss.transition, ref.transition, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("A", [np.diag([1.1, 0.5]), np.diag([1.0, 0.5]), np.array([[0.0, -1.02], [1.02, 0.0]])])
def test_unstable_A_names_client(A):
    _fails(_model(np.random.default_rng(1), A=A), "not stable", "spectral radius")


def test_non_positive_definite_R_names_client():
    rng = np.random.default_rng(2)
    R = np.diag([1.0, 1.0, -0.1, 1.0, 1.0])
    _fails(_model(rng, R=R), "R", "not positive definite")
    _fails(_model(rng, R=np.diag([1.0, 1.0, 0.0, 1.0, 1.0])), "R", "not positive definite")


def test_non_positive_definite_Q_names_client():
    rng = np.random.default_rng(3)
    _fails(_model(rng, Q=np.array([[1.0, 2.0], [2.0, 1.0]])), "Q", "not positive definite")


def test_non_symmetric_covariance_names_client():
    rng = np.random.default_rng(4)
    _fails(_model(rng, Q=np.array([[1.0, 0.5], [0.0, 1.0]])), "Q", "not symmetric")


def test_undetectable_marginal_mode_names_client():
    """A mode within is_detectable's tolerance of the unit circle that C does not see: validate must not
    accept it as a stable, detectable model (a stable A is always detectable, so this is the only way
    validate can reach its detectability check)."""
    rng = np.random.default_rng(5)
    A = np.diag([1.0 - 1e-11, 0.5])
    C = np.column_stack([np.zeros(5), rng.standard_normal(5)])
    _fails(_model(rng, A=A, C=C), "not detectable")


def test_is_detectable_pbh():
    unstable = np.diag([1.2, 0.5])
    assert not is_detectable(unstable, np.array([[0.0, 1.0]]))  # unstable mode invisible
    assert is_detectable(unstable, np.array([[1.0, 0.0]]))  # unstable mode seen
    assert is_detectable(unstable, np.array([[1.0, 1.0]]))
    assert is_detectable(np.diag([0.9, 0.5]), np.zeros((1, 2)))  # stable: always detectable
    # Complex unstable pair (a growing rotation) observed through one coordinate, or not at all.
    rot = 1.1 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    A = scipy.linalg.block_diag(rot, 0.4)
    assert is_detectable(A, np.array([[1.0, 0.0, 0.0]]))
    assert not is_detectable(A, np.array([[0.0, 0.0, 1.0]]))
    # Unobservable unstable mode hidden by a similarity transform.
    S = np.random.default_rng(6).standard_normal((3, 3))
    assert not is_detectable(S @ A @ np.linalg.inv(S), np.array([[0.0, 0.0, 1.0]]) @ np.linalg.inv(S))
    assert is_detectable(S @ A @ np.linalg.inv(S), np.array([[1.0, 0.0, 0.0]]) @ np.linalg.inv(S))


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"A": np.zeros((2, 3))}, "A must be square"),
        ({"A": np.zeros(2)}, "A must be square"),
        ({"C": np.zeros((5, 3))}, "C must be (P, 2)"),
        ({"Q": np.eye(3)}, "Q must be (2, 2)"),
        ({"R": np.eye(4)}, "R must be (5, 5)"),
        ({"mean": np.zeros(4)}, "mean and scale"),
        ({"scale": np.ones(6)}, "mean and scale"),
        ({"scale": np.array([1.0, 1.0, 0.0, 1.0, 1.0])}, "scale must be positive"),
        ({"Q": np.array([[1.0, np.nan], [np.nan, 1.0]])}, "Q has non-finite"),
    ],
)
def test_wrong_shapes_and_values_name_client(override, fragment):
    _fails(_model(np.random.default_rng(7), **override), fragment)


# ----------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    model = _model(rng, mean=rng.standard_normal(5), scale=rng.uniform(0.5, 2.0, 5))
    path = tmp_path / "boiler3.npz"
    save_npz(path, model)
    back = load_npz(path, CLIENT)
    for name in ("A", "C", "Q", "R", "mean", "scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
        assert getattr(back, name).dtype == np.float64


def test_npz_without_mean_and_scale_defaults(tmp_path):
    model = _model(np.random.default_rng(9))
    path = tmp_path / "m.npz"
    np.savez(path, A=model.A, C=model.C, Q=model.Q, R=model.R)
    back = load_npz(path, CLIENT)
    np.testing.assert_array_equal(back.mean, np.zeros(5))
    np.testing.assert_array_equal(back.scale, np.ones(5))


def _load_fails(path, *fragments):
    with pytest.raises(ModelError) as info:
        load_npz(path, CLIENT)
    msg = str(info.value)
    for fragment in (CLIENT, *fragments):
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_npz_missing_file(tmp_path):
    _load_fails(tmp_path / "nope.npz", "nope.npz", "does not exist")


def test_npz_missing_arrays(tmp_path):
    model = _model(np.random.default_rng(10))
    path = tmp_path / "m.npz"
    np.savez(path, A=model.A, C=model.C)
    _load_fails(path, "lacks arrays", "'Q'", "'R'")


def test_npz_unknown_arrays(tmp_path):
    model = _model(np.random.default_rng(11))
    path = tmp_path / "m.npz"
    np.savez(path, A=model.A, C=model.C, Q=model.Q, R=model.R, K=np.eye(2))
    _load_fails(path, "unknown arrays", "'K'")


def test_npz_invalid_model_and_corrupt_file(tmp_path):
    model = _model(np.random.default_rng(12), A=np.diag([1.5, 0.2]))
    path = tmp_path / "m.npz"
    save_npz(path, model)
    _load_fails(path, "not stable")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    _load_fails(bad, "cannot read")


# ----------------------------------------------------------------------------- identify


def _client_data(D, seed, snr=4.0, T=3000, P=20):
    spec = SystemSpec(n_clients=2, state_dims=D, obs_dims=P, edge_density=0.0, n_steps=T, snr=snr)
    return simulate(spec, np.random.default_rng(seed))


@pytest.mark.parametrize("D, seed", [(2, 0), (3, 1), (4, 2)])
def test_identify_recovers_subspace_and_dimension(D, seed):
    data = _client_data(D, seed)
    raw = 5.0 + 3.0 * data.y[0]  # arbitrary units: identify standardises
    model = identify(raw, client=CLIENT, rng=np.random.default_rng(100 + seed))
    assert model.state_dim == D  # Horn's parallel analysis
    np.testing.assert_allclose(model.mean, raw.mean(axis=0))
    np.testing.assert_allclose(model.scale, raw.std(axis=0))
    # True C in the standardised coordinates the model lives in: y_std = (raw - mean) / scale.
    C_true = 3.0 * data.system.C[0] / model.scale[:, None]
    angles = scipy.linalg.subspace_angles(C_true, model.C)
    assert np.degrees(angles.max()) < 6.0  # a random D-plane in R^20 sits near 90 degrees
    validate(model, CLIENT)  # identify returns only valid models


def test_identify_explained_variance_and_given_dimension():
    data = _client_data(3, 3)
    assert identify(data.y[0], client=CLIENT, state_dim=2).state_dim == 2
    full = identify(data.y[0], client=CLIENT, explained_variance=0.999)
    assert full.state_dim == 19  # capped at P - 1
    assert identify(data.y[0], client=CLIENT, explained_variance=0.05).state_dim == 1


def test_identify_local_dynamics_are_consistent():
    """With T large the identified A^{mm} has the true spectrum (up to the similarity PCA cannot fix)."""
    data = _client_data(3, 5, snr=1.0, T=30000)
    model = identify(data.y[0], client=CLIENT, state_dim=3)
    true = np.sort(np.abs(np.linalg.eigvals(data.system.A[:3, :3])))
    got = np.sort(np.abs(np.linalg.eigvals(model.A)))
    np.testing.assert_allclose(got, true, atol=0.05)


def test_identify_too_few_rows():
    raw = np.random.default_rng(13).standard_normal((8, 10))
    with pytest.raises(ModelError, match=rf"{CLIENT}.*8 rows are too few"):
        identify(raw, client=CLIENT, state_dim=3)


@pytest.mark.parametrize("value", [0.0, -3.0, 4.2, 0.1])
def test_identify_constant_columns(value):
    raw = np.random.default_rng(14).standard_normal((200, 6))
    raw[:, 2] = value
    raw[:, 5] = value
    try:
        identify(raw, client=CLIENT, state_dim=2)
        msg = "no error"
    except ModelError as exc:
        msg = str(exc)
    assert re.search(rf"{CLIENT}.*columns \[2, 5\] are constant", msg), msg


def test_identify_state_dim_out_of_range():
    raw = np.random.default_rng(15).standard_normal((200, 6))
    with pytest.raises(ModelError, match=rf"{CLIENT}.*state dimension 6"):
        identify(raw, client=CLIENT, state_dim=6)


@pytest.mark.parametrize("kwargs", [{}, {"state_dim": 2}, {"explained_variance": 0.9}])
def test_long_tables_identify_from_block_moments_like_the_whole_table(monkeypatch, kwargs):
    """Tables of LONG_ROWS rows or more are identified from moments summed over blocks of rows
    (fedgc.core.moments); on the same small table, forced onto each path, the models agree to rounding."""
    from fedgc.core import local_model, moments

    data = _client_data(3, 21, T=3000)
    raw = 40.0 + 2.5 * data.y[0]
    monkeypatch.setattr(moments, "BLOCK_ROWS", 128)  # many blocks, a ragged last one
    monkeypatch.setattr(local_model, "LONG_ROWS", 1)
    long = identify(raw, client=CLIENT, rng=np.random.default_rng(3), **kwargs)
    monkeypatch.setattr(local_model, "LONG_ROWS", 10**9)
    whole = identify(raw, client=CLIENT, rng=np.random.default_rng(3), **kwargs)
    assert long.state_dim == whole.state_dim
    for name in ("A", "C", "Q", "R", "mean", "scale"):
        a, b = getattr(long, name), getattr(whole, name)
        assert np.max(np.abs(a - b)) <= 1e-11 * np.max(np.abs(b)), name


def test_long_tables_with_gaps_or_constant_columns(monkeypatch):
    from fedgc.core import local_model

    monkeypatch.setattr(local_model, "LONG_ROWS", 1)
    raw = np.random.default_rng(16).standard_normal((300, 6))
    raw[:, 4] = 2.0
    with pytest.raises(ModelError, match=rf"{CLIENT}.*columns \[4\] are constant"):
        identify(raw, client=CLIENT, state_dim=2)
    data = _client_data(2, 22, T=2000)
    gappy = data.y[0].copy()
    gappy[::7, 3] = np.nan  # missing values: the whole-table path, as for short tables
    long = identify(gappy, client=CLIENT, state_dim=2)
    monkeypatch.setattr(local_model, "LONG_ROWS", 10**9)
    whole = identify(gappy, client=CLIENT, state_dim=2)
    np.testing.assert_array_equal(long.A, whole.A)
    np.testing.assert_array_equal(long.R, whole.R)


def test_subsampled_parallel_analysis_is_the_subsamples_own():
    """Above PARALLEL_ANALYSIS_MAX_ROWS a complete table's analysis is that of a random subsample of n rows: the
    subsample's eigenvalues against the Gaussian null of (n, P), written out here step by step."""
    from fedgc.core.local_model import (
        PARALLEL_ANALYSIS_MAX_ROWS,
        choose_state_dim,
        gaussian_null_quantile,
        second_moments,
    )

    def written_out(y, seed):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(y), PARALLEL_ANALYSIS_MAX_ROWS, replace=False))
        lam = np.sort(np.linalg.eigvalsh(second_moments(y[rows])))[::-1]
        above = lam > gaussian_null_quantile(PARALLEL_ANALYSIS_MAX_ROWS, y.shape[1], 0.95)
        return min(max(int(np.argmin(above)) if not above.all() else y.shape[1], 1), y.shape[1] - 1), rng.random()

    for D, seed in ((1, 30), (3, 31), (4, 32)):
        y = _client_data(D, seed, snr=0.05, T=PARALLEL_ANALYSIS_MAX_ROWS + 500, P=8).y[0]
        y = (y - y.mean(axis=0)) / y.std(axis=0)
        rng = np.random.default_rng(seed)
        got = choose_state_dim(y, np.linalg.eigvalsh(second_moments(y)), rng=rng)
        assert (got, rng.random()) == written_out(y, seed)


@pytest.mark.parametrize("marginal", ["student_t3", "exponential", "binary", "rounded"])
def test_gaussian_null_is_the_permutation_null_of_a_complete_table(marginal):
    """The Gaussian null's quantiles match those of 400 independent column permutations of non-Gaussian
    columns (heavy tails, skew, two values, five values) to within 0.015 at every rank: about 6 % of the
    null's spread from its first to its last rank at T = 1500, P = 8 (the Monte Carlo error of 400
    permutations is about a third of that)."""
    from fedgc.core.local_model import gaussian_null_quantile, permutation_null

    rng = np.random.default_rng(5)
    T, P = 1500, 8
    y = {
        "student_t3": lambda: rng.standard_t(3, (T, P)),
        "exponential": lambda: rng.exponential(size=(T, P)),
        "binary": lambda: (rng.random((T, P)) < 0.1).astype(float),
        "rounded": lambda: np.round(rng.standard_normal((T, P))),
    }[marginal]()
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    permuted = np.quantile(permutation_null(y, rng=np.random.default_rng(1), n_permutations=400), 0.95, axis=0)
    gaussian = gaussian_null_quantile(T, P, 0.95)
    assert gaussian[0] - gaussian[-1] > 0.2
    np.testing.assert_allclose(gaussian, permuted, atol=0.015, rtol=0)


def test_a_complete_tables_state_dimension_does_not_depend_on_the_seed():
    """The Gaussian null is a function of the table's shape: a complete table draws nothing from the client's
    Generator below PARALLEL_ANALYSIS_MAX_ROWS, so every seed chooses the same D (the permutation null's 20
    draws made a near-threshold rank go either way with the seed)."""
    from fedgc.core.local_model import choose_state_dim, gaussian_null_quantile, second_moments

    y = _client_data(3, 37, T=1200, P=10).y[0]
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    lam = np.linalg.eigvalsh(second_moments(y))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        assert choose_state_dim(y, lam, rng=rng) == 3
        assert rng.random() == np.random.default_rng(seed).random()
    assert not gaussian_null_quantile(1200, 10, 0.95).flags.writeable  # shared by every client of this shape


def test_a_table_of_no_more_rows_than_columns_keeps_the_permutation_null():
    """Bartlett's draws need T > P (chi with T - 1 - i degrees of freedom): a short, wide complete table is
    analysed against its permutations, as before, and the seed's Generator is drawn from."""
    from fedgc.core.local_model import choose_state_dim, second_moments

    rng = np.random.default_rng(40)
    y = rng.standard_normal((8, 12))
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    generator = np.random.default_rng(41)
    assert 1 <= choose_state_dim(y, np.linalg.eigvalsh(second_moments(y)), rng=generator) <= 11
    assert generator.random() != np.random.default_rng(41).random()


@pytest.mark.parametrize("gaps", [False, True])
def test_permutation_null_is_the_per_permutation_loop_it_replaced(gaps):
    """permutation_null (one finiteness check, one batched eigvalsh) gives bit for bit the eigenvalues of the
    loop it replaced (a shuffle, second_moments and a sorted eigvalsh per permutation) and leaves the
    Generator where that loop left it."""
    from fedgc.core.local_model import permutation_null, second_moments

    y = _client_data(3, 33, snr=0.1, T=1500, P=9).y[0]
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    if gaps:
        y[np.random.default_rng(1).random(y.shape) < 0.1] = np.nan

    def earlier(rng):
        columns, shuffled = np.ascontiguousarray(y.T), np.empty(y.T.shape)
        null = np.empty((20, y.shape[1]))
        for i in range(20):
            rng.permuted(columns, axis=1, out=shuffled)
            null[i] = np.sort(np.linalg.eigvalsh(second_moments(shuffled.T)))[::-1]
        return null

    rng_new, rng_old = np.random.default_rng(34), np.random.default_rng(34)
    got = permutation_null(y, rng=rng_new, n_permutations=20)
    np.testing.assert_array_equal(got, earlier(rng_old))
    assert rng_new.random() == rng_old.random()


def test_subsampled_parallel_analysis_of_a_table_with_gaps():
    """Above PARALLEL_ANALYSIS_MAX_ROWS a table with missing values gets pairwise second moments in its null
    too (a plain product of its NaNs made eigvalsh fail: 'Eigenvalues did not converge')."""
    from fedgc.core.local_model import PARALLEL_ANALYSIS_MAX_ROWS

    y = _client_data(3, 36, T=PARALLEL_ANALYSIS_MAX_ROWS + 500, P=8).y[0]
    y[np.random.default_rng(2).random(y.shape) < 0.05] = np.nan
    assert identify(y, client=CLIENT, rng=np.random.default_rng(4)).state_dim == 3


# ----------------------------------------------------------------------------- process noise correction


def _spd(rng, D, scale=1.0):
    B = rng.standard_normal((D, D))
    return scale * (B @ B.T / D + 0.1 * np.eye(D))


@pytest.mark.parametrize("seed", range(5))
def test_process_noise_correction_is_exact_when_the_model_is_consistent(seed):
    """raw = Q + noise with noise small against Q: the whole noise is removed."""
    rng = np.random.default_rng(seed)
    Q, noise = _spd(rng, 4), _spd(rng, 4, scale=0.05)
    np.testing.assert_allclose(corrected_process_noise(Q + noise, noise), Q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_process_noise_correction_keeps_a_share_of_the_raw_covariance(seed):
    """noise larger than raw in some direction (raw - noise indefinite): Q = raw - c noise with the
    largest c that keeps Q >= (1 - g) raw, so the bound is tight and Q stays well inside the cone."""
    rng = np.random.default_rng(seed)
    raw = _spd(rng, 4)
    u = rng.standard_normal(4)
    w = raw @ u
    noise = _spd(rng, 4, scale=0.2) + 3.0 * np.outer(w, w) / (u @ w)  # u^T noise u > 3 u^T raw u
    assert np.linalg.eigvalsh(raw - noise).min() < 0
    Q = corrected_process_noise(raw, noise)
    kept = np.linalg.eigvalsh(Q - (1 - MAX_NOISE_CORRECTION) * raw)
    assert kept.min() == pytest.approx(0.0, abs=1e-10 * np.abs(kept).max())
    c_matrix = raw - Q  # a multiple of noise
    c = np.sum(c_matrix * noise) / np.sum(noise * noise)
    np.testing.assert_allclose(c_matrix, c * noise, atol=1e-12)
    assert 0 < c < 1


def test_process_noise_correction_of_a_singular_raw_covariance_is_positive_definite():
    raw = np.diag([1.0, 0.0])
    Q = corrected_process_noise(raw, 0.01 * np.eye(2))
    assert np.linalg.eigvalsh(Q).min() > 0
