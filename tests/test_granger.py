"""Block Granger tests (fedgc.core.granger): partitioned-inverse statistic vs brute-force refits, the chi-square
law of the Bartlett-corrected statistic, BH edges, the [target, source] layout, and statsmodels' VAR."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from fedgc.analysis.metrics import mid_ranks
from fedgc.core.fdr import benjamini_hochberg
from fedgc.core.granger import chi2_logsf, granger_tests
from fedgc.core.regression import Blocks, RegressionStats, newton_update, regression_stats
from fedgc.protocol.settings import ServerConfig

DIMS = (2, 3, 2)


def _stats(X: np.ndarray, Z: np.ndarray) -> RegressionStats:
    return RegressionStats(X.T @ X, X.T @ Z, Z.T @ Z, X.shape[0])


def _regression(seed: int, N: int = 300, dims=DIMS, links=((1, 0), (2, 1)), strength: float = 0.3, own: float = 0.0):
    """Correlated regressors X (N, D) and targets Z (N, D); target block m depends on source block n only for
    (m, n) in links, and on its own block with weight `own` (which only diagonal='joint' may include)."""
    rng = np.random.default_rng(seed)
    D = sum(dims)
    o = np.concatenate([[0], np.cumsum(dims)])
    X = rng.standard_normal((N, D)) @ (np.eye(D) + 0.4 * rng.standard_normal((D, D)))
    W = np.zeros((D, D))
    for m in range(len(dims)):
        W[o[m] : o[m + 1], o[m] : o[m + 1]] = own * rng.standard_normal((dims[m], dims[m]))
    for m, n in links:
        W[o[m] : o[m + 1], o[n] : o[n + 1]] = strength * rng.standard_normal((dims[m], dims[n]))
    noise_mix = np.eye(D) + 0.3 * rng.standard_normal((D, D))  # correlated residuals within a target
    Z = X @ W.T + rng.standard_normal((N, D)) @ noise_mix.T
    return X, Z, Blocks.of(dims)


def _logdet_rss(X, Z):
    resid = Z - X @ np.linalg.lstsq(X, Z, rcond=None)[0]
    return np.linalg.slogdet(resid.T @ resid)[1]


# ----------------------------------------------------------------------------- statistic


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistic_equals_brute_force_refit(diagonal, seed):
    X, Z, blocks = _regression(seed, own=0.5)
    stats = _stats(X, Z)
    res = granger_tests(stats, np.zeros((7, 7)), ["a", "b", "c"], blocks, diagonal=diagonal)
    N = X.shape[0]
    for m in range(3):
        full = blocks.regressors(m, diagonal)
        Zm = Z[:, blocks.slice(m)]
        ld_full = _logdet_rss(X[:, full], Zm)
        for n in range(3):
            if n == m:
                continue
            cols_n = np.arange(blocks.offsets[n], blocks.offsets[n + 1])
            restricted = np.setdiff1d(full, cols_n)
            gc = _logdet_rss(X[:, restricted], Zm) - ld_full
            assert abs(res.gc[m, n] - gc) < 1e-10 * max(1.0, abs(gc))
            Dm, Dn, K = DIMS[m], DIMS[n], len(full)
            assert res.dof[m, n] == Dm * Dn
            stat = (N - K - 0.5 * (Dm - Dn + 1)) * gc  # Bartlett's correction of Wilks' Lambda
            assert res.statistic[m, n] == pytest.approx(stat, rel=1e-9, abs=1e-9)
            assert res.pvalue[m, n] == pytest.approx(scipy.stats.chi2.sf(stat, Dm * Dn), rel=1e-8, abs=1e-300)
            assert res.log10_pvalue[m, n] == pytest.approx(scipy.stats.chi2.logsf(stat, Dm * Dn) / np.log(10))
    assert np.all(np.isnan(np.diag(res.gc))) and np.all(np.isnan(np.diag(res.pvalue)))
    assert not np.any(np.diag(res.edges))


def test_statistic_is_invariant_to_transforms_of_the_target():
    """ln det ratios do not depend on the scale (or any invertible mixing) of z^m: an identified R^m
    that gets the noise level wrong must not change the test."""
    X, Z, blocks = _regression(3)
    base = granger_tests(_stats(X, Z), np.zeros((7, 7)), "abc", blocks)
    rng = np.random.default_rng(3)
    Tm = np.zeros((7, 7))
    for m in range(3):
        s = blocks.slice(m)
        Tm[s, s] = rng.standard_normal((DIMS[m], DIMS[m])) + 3 * np.eye(DIMS[m])
    moved = granger_tests(_stats(X, 7.5 * Z @ Tm.T), np.zeros((7, 7)), "abc", blocks)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(moved.gc[off], base.gc[off], rtol=1e-9, atol=1e-12)


def test_bartlett_corrected_statistic_is_chi_square_under_the_null():
    """Small samples (N = 40, K = 7 regressors) where the correction matters: p-values are uniform and the
    statistic has mean D_m D_n, while the uncorrected N * GC is visibly too large."""
    rng = np.random.default_rng(4)
    blocks = Blocks.of(DIMS)
    N, reps = 40, 300
    pvals, corrected, naive = [], [], []
    for _ in range(reps):
        X = rng.standard_normal((N, 7))
        Z = rng.standard_normal((N, 7))  # no source matters
        res = granger_tests(_stats(X, Z), np.zeros((7, 7)), "abc", blocks, diagonal="joint")
        pvals.append(res.pvalue[1, 0])  # D_m = 3, D_n = 2: 6 dof
        corrected.append(res.statistic[1, 0])
        naive.append(N * res.gc[1, 0])
    assert scipy.stats.kstest(pvals, "uniform").pvalue > 0.01
    assert abs(np.mean(corrected) - 6.0) < 3 * np.sqrt(12.0 / reps)
    assert np.mean(naive) > 6.0 + 3 * np.sqrt(12.0 / reps)  # the correction is needed (the test can tell)
    assert scipy.stats.kstest(scipy.stats.chi2.sf(naive, 6), "uniform").pvalue < 1e-3


def test_log10_pvalue_matches_pvalue():
    X, Z, blocks = _regression(5, N=600, strength=0.4)
    res = granger_tests(_stats(X, Z), np.zeros((7, 7)), "abc", blocks)
    off = ~np.eye(3, dtype=bool)
    assert np.all(res.pvalue[off] > 0)
    np.testing.assert_allclose(10.0 ** res.log10_pvalue[off], res.pvalue[off], rtol=1e-10)
    assert res.log10_pvalue[1, 0] < -10  # a real edge is in this set


def test_log10_pvalue_does_not_underflow():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30
    X, Z, blocks = _regression(5, N=3000, strength=3.0)
    res = granger_tests(_stats(X, Z), np.zeros((7, 7)), "abc", blocks)
    assert res.statistic[1, 0] > 5000 and res.pvalue[1, 0] == 0.0  # beyond float range as a p-value
    for m, n in [(1, 0), (2, 1)]:
        k, stat = int(res.dof[m, n]), float(res.statistic[m, n])
        ref = float(mp.log10(mp.gammainc(k / 2.0, stat / 2.0, mp.inf, regularized=True)))
        assert res.log10_pvalue[m, n] == pytest.approx(ref, rel=1e-8)


# ----------------------------------------------------------------------------- layout and edges


def test_target_source_layout_and_strength():
    """Only source 0 drives target 1: the discovery must sit at [1, 0], never at [0, 1]."""
    X, Z, blocks = _regression(6, N=1000, links=((1, 0),), strength=0.5)
    stats = _stats(X, Z)
    J = [np.eye(d) for d in DIMS]
    A_s = newton_update(stats, J, blocks)
    res = granger_tests(stats, A_s, ["p", "q", "r"], blocks)
    assert res.clients == ("p", "q", "r") and res.dims == DIMS
    assert res.edges[1, 0]
    assert res.edges.sum() <= 2  # at most one false discovery among five null pairs (here: typically none)
    assert res.pvalue[1, 0] < 1e-10 and res.pvalue[0, 1] > 1e-3
    for m in range(3):
        for n in range(3):
            if m != n:
                assert res.strength[m, n] == pytest.approx(
                    np.linalg.norm(A_s[blocks.slice(m), blocks.slice(n)]), rel=1e-12
                )
    np.testing.assert_array_equal(res.A_s, A_s)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_edges_are_benjamini_hochberg(gen, alpha):
    # A mix of strong, weak and absent links so BH's step-up matters.
    X, Z, blocks = _regression(7, N=200, dims=(2, 2, 2, 2), links=((1, 0), (2, 1), (3, 2), (0, 3)), strength=0.2)
    res = granger_tests(_stats(X, Z), np.zeros((8, 8)), "abcd", blocks, alpha=alpha)
    off = ~np.eye(4, dtype=bool)
    p = res.pvalue[off]
    np.testing.assert_array_equal(res.edges[off], gen.benjamini_hochberg(p, alpha))
    np.testing.assert_array_equal(res.edges[off], multipletests(p, alpha=alpha, method="fdr_bh")[0])
    assert res.alpha == alpha


def test_light_replacements_match_scipy_stats_and_statsmodels_bit_for_bit():
    """fedgc computes chi-square tails, BH decisions and mid-ranks without scipy.stats and statsmodels (a
    second or more to import): the same numbers as those libraries, on edge cases as well."""
    rng = np.random.default_rng(3)
    stat = np.concatenate(
        [rng.exponential(40, 20000), rng.uniform(0, 2, 2000), [0, -1, np.inf, -np.inf, np.nan, 1e-300]]
    )
    dof = np.concatenate([rng.integers(1, 60, 22000).astype(float), [3, 3, 3, 3, 3, 3]])
    np.testing.assert_array_equal(chi2_logsf(stat, dof), scipy.stats.chi2.logsf(stat, dof))
    for trial in range(500):
        p = rng.uniform(0, 1, int(rng.integers(1, 50))) ** rng.uniform(1, 8)
        if trial % 3 == 0:
            p = np.round(p, 2)  # ties
        if trial % 5 == 0:
            p[0] = np.nan
        alpha = float(rng.uniform(0.001, 0.3))
        np.testing.assert_array_equal(
            benjamini_hochberg(p, alpha=alpha), multipletests(p, alpha=alpha, method="fdr_bh")[0]
        )
        x = np.round(rng.standard_normal(int(rng.integers(1, 50))), trial % 3)
        np.testing.assert_array_equal(mid_ranks(x), scipy.stats.rankdata(x))
    np.testing.assert_array_equal(mid_ranks([1.0, np.nan]), scipy.stats.rankdata([1.0, np.nan]))


def test_bh_is_neither_raw_thresholding_nor_bonferroni():
    """Guard for the previous test: on these p-values BH differs from p < alpha and from Bonferroni."""
    X, Z, blocks = _regression(7, N=200, dims=(2, 2, 2, 2), links=((1, 0), (2, 1), (3, 2), (0, 3)), strength=0.2)
    off = ~np.eye(4, dtype=bool)
    loose = granger_tests(_stats(X, Z), np.zeros((8, 8)), "abcd", blocks, alpha=0.05)
    assert np.any(loose.edges[off] != multipletests(loose.pvalue[off], alpha=0.05, method="bonferroni")[0])
    strict = granger_tests(_stats(X, Z), np.zeros((8, 8)), "abcd", blocks, alpha=0.01)
    assert np.any(strict.edges[off] != (strict.pvalue[off] < 0.01))


# ----------------------------------------------------------------------------- statsmodels VAR


@pytest.fixture(scope="module")
def var_case(gen):
    from fedgc.data.synthetic import SystemSpec, simulate

    spec = SystemSpec(n_clients=3, state_dims=2, obs_dims=12, edge_density=1 / 3, n_steps=2000, snr=2.0)
    data = simulate(spec, np.random.default_rng(21))
    fed, _ = gen.run_federated(data, ServerConfig(max_rounds=20))
    return data, fed


def test_true_state_statistic_agrees_with_statsmodels_var_wald(var_case):
    """The same regression (z = true h_t on true h_{t-1}, all lags, J = I): fedgc's Bartlett LR statistic and
    statsmodels' VAR(1) Wald statistic agree closely where the null is (nearly) true."""
    from statsmodels.tsa.api import VAR

    data, _ = var_case
    H = data.states
    blocks = Blocks.of(data.system.dims)
    stats = regression_stats([H[:, blocks.slice(m)] for m in range(3)], [H[:, blocks.slice(m)] for m in range(3)])
    # regression_stats puts h_0 = 0 first and drops it (burn_in=1): exactly VAR(1) on H without trend.
    ours = granger_tests(stats, np.zeros((6, 6)), "abc", blocks, diagonal="joint")
    var = VAR(H).fit(1, trend="n")
    for m in range(3):
        for n in range(3):
            if m == n:
                continue
            caused = list(range(blocks.offsets[m], blocks.offsets[m + 1]))
            causing = list(range(blocks.offsets[n], blocks.offsets[n + 1]))
            sm = var.test_causality(caused=caused, causing=causing, kind="wald")
            assert sm.df == ours.dof[m, n]
            if sm.test_statistic < 30:  # LR and Wald differ at second order in the effect size
                assert ours.statistic[m, n] == pytest.approx(sm.test_statistic, rel=0.02)
            else:
                assert ours.statistic[m, n] > 30
            assert (ours.pvalue[m, n] < 0.05) == (sm.pvalue < 0.05)


def test_federated_decisions_agree_with_statsmodels_var(var_case):
    """Federated (never sees the true states) vs centralized VAR(1) on the true states: the same verdict on the
    clearest edge and on a clear non-edge."""
    from statsmodels.tsa.api import VAR

    data, fed = var_case
    A, o = data.system.A, data.system.offsets
    edges = data.system.edges
    assert edges.any() and (~edges & ~np.eye(3, dtype=bool)).any()
    norms = np.array(
        [[np.linalg.norm(A[o[m] : o[m + 1], o[n] : o[n + 1]]) if m != n else 0 for n in range(3)] for m in range(3)]
    )
    edge = np.unravel_index(np.argmax(np.where(edges, norms, -1)), norms.shape)
    var = VAR(data.states).fit(1, trend="n")

    def sm_p(m, n):
        return var.test_causality(
            caused=list(range(o[m], o[m + 1])), causing=list(range(o[n], o[n + 1])), kind="wald"
        ).pvalue

    assert sm_p(*edge) < 1e-6 and fed.gc.pvalue[edge] < 1e-6
    assert fed.gc.edges[edge]
    non_edges = [(m, n) for m in range(3) for n in range(3) if m != n and not edges[m, n]]
    # every non-edge (here: four, all with p > 0.3 on both sides) gets the same verdict, at most one flip allowed
    agree = [(sm_p(m, n) > 0.05) == (fed.gc.pvalue[m, n] > 0.05) for m, n in non_edges]
    assert sum(agree) >= len(non_edges) - 1
    assert any(sm_p(m, n) > 0.05 and fed.gc.pvalue[m, n] > 0.05 and not fed.gc.edges[m, n] for m, n in non_edges)
