"""SIV Granger tests (issue 13): the maths against naive references, and against ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.sandbox.regression.gmm import IV2SLS
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.sandwich_covariance import S_hac_simple

from fedgc.core.hac import andrews_bandwidth, bartlett_lrv, equivalent_df, wald_test
from fedgc.core.siv import _tsls, ema_highpass, siv_tests
from fedgc.core.snapshots import snapshot, snapshot_rank, stacked_lag_gram
from fedgc.data import ground_truth as gt
from fedgc.data.cleaning import detect_held
from fedgc.data.synthetic import SystemSpec, simulate


def _ar1(rng: np.random.Generator, n: int, k: int, rho: float) -> np.ndarray:
    e = rng.standard_normal((n, k))
    x = np.zeros_like(e)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return x


def _bh_edges(log10p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    off = ~np.eye(log10p.shape[0], dtype=bool)
    reject, *_ = multipletests(10.0 ** log10p[off], alpha=alpha, method="fdr_bh")
    edges = np.zeros_like(off)
    edges[off] = reject
    return edges


def test_bartlett_lrv_is_statsmodels_newey_west() -> None:
    phi = _ar1(np.random.default_rng(0), 500, 3, 0.6)
    for lags in (1, 4, 9):
        ours = bartlett_lrv(phi, bandwidth=lags + 1.0)
        centred = phi - phi.mean(axis=0)
        np.testing.assert_allclose(ours.S, S_hac_simple(centred, nlags=lags) / phi.shape[0], rtol=1e-12)
        assert ours.bandwidth == lags + 1.0


def test_bandwidth_grows_with_persistence_and_is_floored() -> None:
    rng = np.random.default_rng(1)
    white, persistent = rng.standard_normal((2000, 2)), _ar1(rng, 2000, 2, 0.8)
    assert andrews_bandwidth(persistent) > 4 * andrews_bandwidth(white)
    assert bartlett_lrv(white, min_bandwidth=3.0).bandwidth >= 3.0
    assert bartlett_lrv(persistent).bandwidth <= 2000 / 4


def test_long_run_variance_of_ar1_is_close_to_theory() -> None:
    # AR(1) rho with unit innovations: long-run variance 1 / (1 - rho)^2 = 6.25 at rho = 0.6
    phi = _ar1(np.random.default_rng(2), 40000, 1, 0.6)
    assert bartlett_lrv(phi).S[0, 0] == pytest.approx(6.25, rel=0.1)


def test_wald_f_correction_tends_to_chi_square_and_is_more_conservative() -> None:
    rng = np.random.default_rng(3)
    delta, V = rng.standard_normal(6), np.eye(6) * 0.5
    chi2 = wald_test(delta, V)
    assert chi2.statistic == pytest.approx(float(delta @ delta / 0.5))
    assert wald_test(delta, V, nu=1e9).log10_pvalue == pytest.approx(chi2.log10_pvalue, abs=1e-4)
    assert wald_test(delta, V, nu=30.0).log10_pvalue > chi2.log10_pvalue
    assert wald_test(delta, V, nu=4.0).log10_pvalue == 0.0  # nu - q + 1 < 1: no information
    assert wald_test(np.full(3, 100.0), np.eye(3) * 1e-4, nu=1e6).log10_pvalue < -300  # no underflow to -inf
    assert equivalent_df(1000, 3.0, 10) == pytest.approx(1.5 * 990 / 3.0)


def test_tsls_is_statsmodels_iv2sls() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    Z = rng.standard_normal((n, 4))
    v = rng.standard_normal((n, 2))
    X = Z @ rng.standard_normal((4, 2)) + v
    Y = X @ np.array([[0.5, -1.0], [2.0, 0.3]]) + v @ np.array([[1.0, 0.0], [0.5, 1.0]]) + rng.standard_normal((n, 2))
    Qz, _ = np.linalg.qr(Z)
    ours = _tsls(Y, X, Qz @ (Qz.T @ X))
    for j in range(2):
        ref = IV2SLS(Y[:, j], X, instrument=Z).fit()
        np.testing.assert_allclose(ours.B[:, j], ref.params, rtol=1e-10)
        np.testing.assert_allclose(ours.resid[:, j], ref.resid, rtol=1e-8, atol=1e-10)
    # the influence series reproduces the estimate: B = influence^T Y / N
    np.testing.assert_allclose(ours.influence().T @ Y / n, ours.B, rtol=1e-10)


def test_highpass_is_causal_and_removes_a_constant() -> None:
    x = np.random.default_rng(5).standard_normal((300, 2))
    hp = ema_highpass(x, 10.0)
    assert np.allclose(hp[0], 0.0)
    changed = x.copy()
    changed[200:] += 5.0
    np.testing.assert_allclose(ema_highpass(changed, 10.0)[:200], hp[:200])  # the future does not leak back
    assert np.allclose(ema_highpass(np.ones((50, 1)) * 3.0, 5.0), 0.0)


def test_snapshot_rank_finds_the_state_dimension_and_drops_held_columns() -> None:
    system = gt.make("null_held", 0)
    ys, _ = gt.simulate(system, 8000, np.random.default_rng(0))
    for m, y in enumerate(ys):
        held = [j for j in range(y.shape[1]) if detect_held(y[:, j]) is not None]
        snap = snapshot(y, drop=held)
        if y.shape[1] - len(held) >= 2:
            assert set(snap.dropped) == set(held) and set(held) == set(system.held[m])
        assert snap.series.shape == (8000, snap.rank)
        assert snap.rank == system.dims[m]
    with pytest.raises(ValueError, match=r"client 'x'.*too few"):
        snapshot(ys[0][:30], client="x")
    assert snapshot_rank(np.array([0.9, 0.5, 0.01]), n=5000, n_past=9) == 2


@pytest.mark.parametrize("T, P, lags", [(40, 3, 3), (200, 5, 1), (500, 4, 2), (1000, 7, 4)])
def test_stacked_lag_gram_is_the_stacked_tables_gram(T: int, P: int, lags: int) -> None:
    z = np.random.default_rng(T).standard_normal((T, P))
    stacked = _stacked(z, range(lags + 1), lags)  # (z_t, z_{t-1}, ..., z_{t-lags})
    np.testing.assert_allclose(stacked_lag_gram(z, lags), stacked.T @ stacked, rtol=1e-13, atol=1e-12)


def _stacked(z: np.ndarray, lags: range, first: int) -> np.ndarray:
    """Rows t = first .. T-1 of (z_{t-l} for l in lags), side by side: the stacked table."""
    return np.hstack([z[first - lag : len(z) - lag] for lag in lags])


def _standardised(y: np.ndarray) -> np.ndarray:
    """y's columns standardised over their observed values, missing cells 0 (the column mean)."""
    z = (y - np.nanmean(y, axis=0)) / np.nanstd(y, axis=0)
    return np.where(np.isfinite(z), z, 0.0)


def _canonical_reference(z: np.ndarray, lags: int) -> np.ndarray:
    """The canonical correlations of z_t against its stacked past, by SVD of the whitened cross-covariance of
    the stacked table (the textbook construction)."""
    future, past = z[lags:], _stacked(z, range(1, lags + 1), lags)
    whiten = lambda S: np.linalg.inv(np.linalg.cholesky(S))
    return np.linalg.svd(whiten(future.T @ future) @ future.T @ past @ whiten(past.T @ past).T, compute_uv=False)


@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_snapshot_correlations_match_the_stacked_table(missing: float) -> None:
    ys, _ = gt.simulate(gt.make("chain", 0), 3000, np.random.default_rng(2))
    y = ys[0].copy()
    rng = np.random.default_rng(3)
    y[rng.random(y.shape) < missing] = np.nan
    snap = snapshot(y, drop=[1])
    z = _standardised(np.delete(y, 1, axis=1))
    np.testing.assert_allclose(snap.correlations, _canonical_reference(z, 3)[: len(snap.correlations)], atol=1e-12)
    np.testing.assert_allclose(snap.series, z @ snap.directions.T, atol=1e-12)


@pytest.mark.parametrize("value", [1.5, 0.1, -1234.567])
def test_snapshot_names_a_constant_column_whatever_its_value(value: float) -> None:
    y = np.random.default_rng(0).standard_normal((3000, 6))
    y[:, 2] = value  # 0.1's mean is not exactly 0.1: its standard deviation is ~1e-17, not 0
    with pytest.raises(ValueError, match=r"client 'x': column\(s\) \[2\] are constant"):
        snapshot(y, client="x")
    y[::7, 2] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[2\] are constant"):
        snapshot(y, client="x")


def test_siv_finds_the_tanks_line_and_few_false_edges() -> None:
    """Every true edge of the tanks line on 6 seeds, and at most a tenth of the 60 absent pairs declared
    (BH at 0.05; measured: 2, the reverse edge C -> B once, the independent utility once at p = 0.005)."""
    false = 0
    for seed in range(6):
        system = gt.make("tanks", seed)
        ys, _ = gt.simulate(system, 20000, np.random.default_rng(seed))
        edges = _bh_edges(siv_tests([snapshot(y).series for y in ys]).log10_pvalue)
        assert np.all(edges[system.edges])
        false += int(np.sum(edges & ~system.edges))
    assert false <= 6


def test_siv_finds_weak_edges_where_the_lagged_instruments_are_weak() -> None:
    """States that forget within a few steps (the bench_peers systems): the lagged instruments carry little of
    x_{t-1}, and the lagged-instrument test alone left the weakest true edge at p 0.1-0.003. The
    source-instrumented test finds every edge far from the absent pairs."""
    for seed in range(3):
        spec = SystemSpec(n_clients=6, state_dims=3, obs_dims=20, edge_density=0.4, n_steps=4000)
        data = simulate(spec, np.random.default_rng(seed))
        result = siv_tests([snapshot(y).series for y in data.y])
        truth, off = data.system.edges.astype(bool), ~np.eye(6, dtype=bool)
        assert result.log10_pvalue[truth].max() < -8.0
        assert result.log10_pvalue[off & ~truth].min() > -4.0
        assert result.via_source[truth].mean() > 0.5


def test_siv_selects_a_second_lag_where_the_latent_dynamics_need_it() -> None:
    system = gt.make("mixed", 0)
    ys, _ = gt.simulate(system, 20000, np.random.default_rng(0))
    result = siv_tests([snapshot(y).series for y in ys])
    assert result.max_lag == 2
    assert {e.site for e in result.extra} <= {0, 2, 4}  # the latent VAR(2) sites only
    edges = _bh_edges(result.log10_pvalue)
    assert np.all(edges[system.edges])
    # one of the 26 absent pairs may be declared at FDR 0.05 (measured: 2 -> 4, two independent sites, p = 0.005;
    # over 30 seeds 1.7 % of such pairs' p-values are below 0.01)
    assert np.sum(edges & ~system.edges) <= 1


def test_siv_pvalues_on_independent_sites_are_not_piled_at_zero() -> None:
    pvalues = []
    for seed in range(4):
        system = gt.make("null_control", seed)
        ys, _ = gt.simulate(system, 3000, np.random.default_rng(seed))
        result = siv_tests([snapshot(y).series for y in ys])
        pvalues.extend(10.0 ** result.log10_pvalue[~np.eye(system.M, dtype=bool)])
    pvalues = np.asarray(pvalues)
    assert np.mean(pvalues < 0.05) <= 0.15
    assert np.min(pvalues) > 1e-4
    assert np.mean(pvalues) > 0.3


def test_siv_refuses_unusable_input() -> None:
    x = np.random.default_rng(6).standard_normal((500, 2))
    with pytest.raises(ValueError, match="at least 2 sites"):
        siv_tests([x])
    with pytest.raises(ValueError, match="different lengths"):
        siv_tests([x, x[:400]])
    with pytest.raises(ValueError, match="finite"):
        siv_tests([x, np.full((500, 1), np.nan)])


def _shared_fast_disturbance(seed: int, strength: float) -> list[np.ndarray]:
    """Snapshot series of 4 independent sites whose sites 0 and 1 see the same white disturbance c_t, along a
    direction of their measured states (y^m += strength sd_m c_t C^m a_m / |C^m a_m|): a kick the sensors
    measure but the states do not carry on, so the two sites' snapshot noises are correlated at the same step."""
    spec = SystemSpec(n_clients=4, state_dims=3, obs_dims=20, edge_density=0.0, n_steps=4000)
    data = simulate(spec, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 99])
    c = rng.standard_normal(spec.n_steps)
    ys = [y.copy() for y in data.y]
    for m in (0, 1):
        load = data.system.C[m] @ rng.standard_normal(data.system.C[m].shape[1])
        ys[m] += strength * np.outer(c, load) * np.std(ys[m] @ load) / np.linalg.norm(load) ** 2
    return [snapshot(y).series for y in ys]


def test_lagged_instruments_alone_stay_calibrated_where_two_sites_share_a_fast_disturbance() -> None:
    """The source-instrumented test needs the sites' snapshot noises independent at the same step; a shared
    disturbance breaks it (the pairs 0 <-> 1 of independent sites rejected at 0.05 about half the time),
    and server.siv_instruments: lagged is the test without that assumption."""
    both, lagged = [], []
    for seed in range(20):
        xs = _shared_fast_disturbance(seed, 1.0)
        for store, instruments in ((both, "both"), (lagged, "lagged")):
            p = 10.0 ** siv_tests(xs, instruments=instruments).log10_pvalue
            store += [p[0, 1], p[1, 0]]
    assert np.mean(np.array(lagged) < 0.05) <= 0.15
    assert np.mean(np.array(both) < 0.05) >= 0.3


def test_both_tests_give_twice_the_smaller_pvalue_of_the_two() -> None:
    system = gt.make("chain", 2)
    ys, _ = gt.simulate(system, 3000, np.random.default_rng(2))
    xs = [snapshot(y).series for y in ys]
    both, lagged = siv_tests(xs), siv_tests(xs, instruments="lagged")
    off = ~np.eye(system.M, dtype=bool)
    assert not lagged.via_source.any() and both.via_source[off].any() and not both.via_source[~off].any()
    doubled = np.minimum(0.0, lagged.log10_pvalue + np.log10(2.0))
    np.testing.assert_allclose(both.log10_pvalue[off & ~both.via_source], doubled[off & ~both.via_source], rtol=1e-12)
    assert np.all(both.log10_pvalue[both.via_source] < doubled[both.via_source] + 1e-12)
    np.testing.assert_allclose(both.coef_norm[off], lagged.coef_norm[off], rtol=1e-12)
    with pytest.raises(ValueError, match="instruments must be one of"):
        siv_tests(xs, instruments="own")
