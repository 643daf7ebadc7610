"""The batched SIV maths against the straightforward computations they replace (issue 17): one pair at a
time with fedgc.core.hac, a full 2SLS refit per lag candidate, a QR basis of the instruments."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from fedgc.core import hac, siv
from fedgc.core.hac import bartlett_lrv, equivalent_df, wald_test, wald_tests
from fedgc.core.pair_hac import ResidualChange, pair_lrvs
from fedgc.core.siv import Projector, _extension, _pair_tests, _tsls, ema_highpass, siv_tests
from fedgc.core.snapshots import snapshot
from fedgc.data import ground_truth as gt


def _persistent(rng: np.random.Generator, n: int, k: int, rho: float) -> np.ndarray:
    e = rng.standard_normal((n, k))
    x = np.zeros_like(e)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return x + 0.3  # not centred: the pair series' means are removed by the centring


def _naive_lrv(phi: np.ndarray, b: float) -> np.ndarray:
    """Textbook Newey-West: Gamma_0 + sum_{j < b} (1 - j / b) (Gamma_j + Gamma_j^T), one lag at a time."""
    phi = phi - phi.mean(axis=0)
    N = phi.shape[0]
    S = phi.T @ phi / N
    j = 1
    while j < b:
        G = phi[j:].T @ phi[:-j] / N
        S += (1.0 - j / b) * (G + G.T)
        j += 1
    return S


@pytest.mark.parametrize("b", [1.0, 2.5, 3.0, 7.3])
def test_banded_bartlett_is_the_lag_by_lag_sum(b: float) -> None:
    phi = _persistent(np.random.default_rng(0), 700, 4, 0.8)
    lrv = bartlett_lrv(phi, bandwidth=b)
    np.testing.assert_allclose(lrv.S, _naive_lrv(phi, b), rtol=1e-12, atol=1e-12)


def _naive_batch_means(phi: np.ndarray, batches: int) -> np.ndarray:
    """Textbook batch means: sum_b n_b (mean_b - mean)(mean_b - mean)^T / (B - 1), one batch at a time."""
    N = phi.shape[0]
    S = np.zeros((phi.shape[1], phi.shape[1]))
    for b in range(batches):
        rows = phi[b * N // batches : (b + 1) * N // batches]
        d = rows.mean(axis=0) - phi.mean(axis=0)
        S += rows.shape[0] * np.outer(d, d)
    return S / (batches - 1)


@pytest.mark.parametrize("batches", [2, 7, 64, 700])
def test_batch_means_lrv_is_the_batch_by_batch_sum(batches: int) -> None:
    phi = _persistent(np.random.default_rng(0), 700, 4, 0.8)  # 700 / 7: equal batches; 700 / 64: unequal
    np.testing.assert_allclose(
        hac.batch_means_lrv(phi, batches=batches), _naive_batch_means(phi, batches), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="batches"):
        hac.batch_means_lrv(phi, batches=701)


def test_batch_count_rule() -> None:
    assert hac.batch_count(2000, 4) == int(0.4 * 2000 ** (2 / 3))  # 63
    assert hac.batch_count(2000, 40) == 80  # at least 2 q
    assert hac.batch_count(2000, 40, min_rows=50) == 40  # batches of at least min_rows rows
    assert hac.batch_count(3, 5) == 3 and hac.batch_count(10, 1, min_rows=9) == 2
    with pytest.raises(ValueError):
        hac.batch_count(100, 0)


def test_pair_lrvs_equal_batch_means_pair_by_pair() -> None:
    rng = np.random.default_rng(1)
    N = 900
    a = np.hstack([_persistent(rng, N, 2, 0.2), _persistent(rng, N, 3, 0.9), rng.standard_normal((N, 1))])
    u = np.hstack([_persistent(rng, N, 2, 0.6), rng.standard_normal((N, 1)), _persistent(rng, N, 2, -0.5)])
    sources = [[0, 1], [2, 3, 5], [4]]  # a column set need not be contiguous
    targets = [[0, 1], [2], [3, 4]]
    pairs = [(m, n) for m in range(3) for n in range(3) if m != n]
    for min_rows in (1, 40):
        got = pair_lrvs(a, u, sources, targets, pairs, min_rows=min_rows)
        for (m, n), lrv in zip(pairs, got, strict=True):
            phi = (a[:, sources[n]][:, :, None] * u[:, targets[m]][:, None, :]).reshape(N, -1)
            assert lrv.batches == hac.batch_count(N, phi.shape[1], min_rows=min_rows)
            ref = hac.batch_means_lrv(phi, batches=lrv.batches)
            np.testing.assert_allclose(lrv.S, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    assert len({lrv.batches for lrv in pair_lrvs(a[:100], u[:100], sources, targets, pairs)}) > 1  # 2 q raised some
    # every source's residuals changed by its own low-rank term: the pairs of u_n = u - shift_n D_n
    changes = [ResidualChange(_persistent(rng, N, c, 0.7), rng.standard_normal((c, 5))) for c in (1, 2, 1)]
    got = pair_lrvs(a, u, sources, targets, pairs, min_rows=40, changes=changes)
    for (m, n), lrv in zip(pairs, got, strict=True):
        u_n = u - changes[n].shift @ changes[n].D
        phi = (a[:, sources[n]][:, :, None] * u_n[:, targets[m]][:, None, :]).reshape(N, -1)
        ref = hac.batch_means_lrv(phi, batches=lrv.batches)
        np.testing.assert_allclose(lrv.S, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    with pytest.raises(ValueError, match="2 residual changes for 3 sources"):
        pair_lrvs(a, u, sources, targets, pairs, changes=changes[:2])


def test_batch_means_wald_is_calibrated_on_persistent_series() -> None:
    """A series with two time scales (a fast AR(1) with most of the variance, a slower one with most of the
    long-run variance) fools Andrews' AR(1) plug-in: the Newey-West test of its zero mean rejects a quarter of
    the time at 0.05. Batch means with the F(q, B - q) reference halves that (a batch of 25 rows is still
    not long against the slow part's time constant of 10: no estimator is exact there)."""
    rng = np.random.default_rng(12)
    N, q, runs = 1000, 3, 300
    rejected = {"batch": 0, "andrews": 0}
    for _ in range(runs):
        fast, slow = _persistent(rng, N, q, 0.3) - 0.3, _persistent(rng, N, q, 0.9) - 0.3
        phi = fast + 0.2 * slow
        delta = phi.mean(axis=0)
        B = hac.batch_count(N, q)
        S = hac.batch_means_lrv(phi, batches=B)
        rejected["batch"] += wald_test(delta, S / N, nu=B - 1.0).log10_pvalue < np.log10(0.05)
        lrv = bartlett_lrv(phi)
        rejected["andrews"] += wald_test(delta, lrv.S / N, nu=equivalent_df(N, lrv.bandwidth)).log10_pvalue < np.log10(
            0.05
        )
    assert rejected["batch"] / runs <= 0.18
    assert rejected["andrews"] / runs >= 0.2 and rejected["andrews"] >= 1.5 * rejected["batch"]


def test_batched_wald_equals_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    P, q = 6, 4
    delta = rng.standard_normal((P, q))
    L = rng.standard_normal((P, q, q))
    V = L @ np.swapaxes(L, 1, 2) / q
    V[1] = np.diag([1.0, 1.0, 0.0, 0.0])  # rank 2: the pseudo-inverse over its positive directions
    delta[2] *= 1e3  # a tail far below double precision's smallest number
    nu = np.array([50.0, 80.0, 1e6, 3.0, 200.0, 9.0])
    for nus in (nu, None):
        batch = wald_tests(delta, V, nu=nus)
        for p in range(P):
            one = wald_test(delta[p], V[p], nu=None if nus is None else float(nus[p]))
            assert batch.dof[p] == one.dof
            assert batch.statistic[p] == pytest.approx(one.statistic, rel=1e-12)
            assert batch.log10_pvalue[p] == pytest.approx(one.log10_pvalue, rel=1e-12, abs=1e-300)


def test_projector_and_frisch_waugh_refit_equal_a_full_qr_refit() -> None:
    rng = np.random.default_rng(3)
    N = 1500
    Z = rng.standard_normal((N, 8))
    X = Z @ rng.standard_normal((8, 3)) + rng.standard_normal((N, 3))
    Xc = Z @ rng.standard_normal((8, 2)) + rng.standard_normal((N, 2))
    Y = X @ rng.standard_normal((3, 4)) + 0.3 * Xc @ rng.standard_normal((2, 4)) + rng.standard_normal((N, 4))
    project = Projector.of(Z)
    Qz, _ = np.linalg.qr(Z)
    np.testing.assert_allclose(project(X), Qz @ (Qz.T @ X), rtol=1e-10, atol=1e-12)
    fit = _tsls(Y, X, project(X))
    ext = _extension(fit, Y, X, Xc, project(Xc))
    Qr, _ = np.linalg.qr(fit.Xh)
    np.testing.assert_allclose(ext.E, project(Xc) - Qr @ (Qr.T @ project(Xc)), rtol=1e-10, atol=1e-12)
    # every column, then one column's direction: both equal the full refit on X and the added columns
    A = rng.standard_normal((1, 1))
    for directions, cols in ((np.eye(2), slice(None)), (A, slice(1, 2))):
        Xadd = Xc[:, cols] @ directions
        full = _tsls(Y, np.hstack([X, Xadd]), Qz @ (Qz.T @ np.hstack([X, Xadd])))
        added = ext.add(directions, cols)
        np.testing.assert_allclose(added.B, full.B[3:], rtol=1e-10)
        np.testing.assert_allclose(added.influence, full.influence()[:, 3:], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(added.resid, full.resid, rtol=1e-10, atol=1e-12)
        # the selection extends by the high-passed pair and gets the refit's residuals high-passed
        high = ext.highpassed(20.0).add(directions, cols).resid
        np.testing.assert_allclose(high, siv._residual_highpass(full.resid, 20.0), rtol=1e-9, atol=1e-12)
    # collinear instruments: the projector falls back to an orthonormal basis and still projects
    Zc = np.hstack([Z, Z[:, :2] @ np.ones((2, 1))])
    assert Projector.of(Zc).factor is None
    np.testing.assert_allclose(Projector.of(Zc)(X), Qz @ (Qz.T @ X), rtol=1e-9, atol=1e-10)


def test_source_refits_equal_a_full_2sls_with_the_source_among_the_instruments() -> None:
    """Each source's refit (a rank-k update of the lagged-instrument fit) is the 2SLS of the same regressors
    on the instruments Z and the source's own high-passed regressors, taken side by side: its coefficient
    rows, their influence series and its residuals; with lag-2 directions among the regressors."""
    system = gt.make("var2", 4)
    ys, _ = gt.simulate(system, 3000, np.random.default_rng(4))
    x, dims = siv._stack([snapshot(y).series for y in ys])
    window = siv.highpass_window(x.shape[0])
    extra = siv.select_lags([x[:, a:b] for a, b in zip(np.cumsum([0, *dims[:-1]]), np.cumsum(dims))], window=window)
    assert extra
    d = siv._design(x, dims, 2, window)
    X, cols = siv._regressors(d.lagged, d.offsets, extra)
    fit = _tsls(d.Y, X, d.project(X))
    own = siv._regressors(d.highpassed, d.offsets, extra)[0]
    sources = [np.asarray(c) for c in cols]
    refits = siv._source_refits(fit, d.Y, X, d.project, own, sources, window)
    Z = np.hstack(d.project.parts)
    for n, c in enumerate(sources):
        Q, _ = np.linalg.qr(np.hstack([Z, own[:, c]]))
        full = _tsls(d.Y, X, Q @ (Q.T @ X))
        np.testing.assert_allclose(refits.B[c], full.B[c], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(refits.influence[:, c], full.influence()[:, c], rtol=1e-8, atol=1e-10)
        change = refits.changes[n]
        np.testing.assert_allclose(
            siv._residual_highpass(fit.resid, window) - change.shift @ change.D,
            siv._residual_highpass(full.resid, window),
            rtol=1e-8,
            atol=1e-10,
        )


def test_the_design_projects_onto_the_lagged_instruments_side_by_side() -> None:
    """The design's projector, on row ranges of the high-passed series and with their stacked lag gram,
    is the projection onto the (N, q R) instrument table built by hand; rows that cross the projector's
    row blocks included."""
    rng = np.random.default_rng(8)
    T, dims, max_lag, window = 3000, [2, 3], 2, 30.0
    x = _persistent(rng, T, sum(dims), 0.6)
    d = siv._design(x, dims, max_lag, window)
    hp = ema_highpass(x, window)
    q, start = max_lag + 2, 2 * max_lag + 2
    Z = np.hstack([hp[start - lag : T - lag] for lag in range(max_lag + 1, max_lag + q + 1)])
    U = np.triu(d.project.factor[0])  # cho_factor leaves the other triangle as it was
    np.testing.assert_allclose(U.T @ U, Z.T @ Z, rtol=1e-10)
    Qz, _ = np.linalg.qr(Z)
    X = d.lagged[1]
    for rows in (None, 7 * X.shape[1]):  # one block of rows, then blocks of 7 rows
        with pytest.MonkeyPatch.context() as patch:
            if rows is not None:
                patch.setattr(siv, "CHUNK_VALUES", rows)
            np.testing.assert_allclose(d.project(X), Qz @ (Qz.T @ X), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(Projector.of(Z)(X), Qz @ (Qz.T @ X), rtol=1e-9, atol=1e-12)
    # a site repeated: collinear instrument groups fall back to an orthonormal basis of Z, however given
    twice = [np.hstack([part, part[:, :2]]) for part in d.project.parts]
    Zt = np.hstack(twice)
    for project in (Projector.of(twice), Projector.of(twice, gram=Zt.T @ Zt)):
        assert project.factor is None
        np.testing.assert_allclose(project(X), Qz @ (Qz.T @ X), rtol=1e-8, atol=1e-10)


def test_pair_tests_equal_one_block_wald_per_pair() -> None:
    rng = np.random.default_rng(5)
    influence, resid = rng.standard_normal((800, 9)), _persistent(rng, 800, 6, 0.5)
    cols, offsets = [[0, 1, 8], [2, 3], [4, 5, 6, 7]], np.array([0, 2, 3, 6])  # unequal blocks, one split
    B = rng.standard_normal((9, 6)) * 0.05
    statistic, dof, log10p, norm, batches = _pair_tests(B, influence, resid, cols, np.diff(offsets), 1)
    N = influence.shape[0]
    for m in range(3):
        t = list(range(offsets[m], offsets[m + 1]))
        for n in range(3):
            if n == m:
                assert np.isnan(log10p[m, n])
                continue
            phi = (influence[:, cols[n]][:, :, None] * resid[:, None, t]).reshape(N, -1)
            n_batches = hac.batch_count(N, phi.shape[1], min_rows=3)
            S = hac.batch_means_lrv(phi, batches=n_batches)
            one = wald_test(B[np.ix_(cols[n], t)], S / N, nu=n_batches - 1.0)
            assert dof[m, n] == one.dof and batches[m, n] == n_batches
            assert statistic[m, n] == pytest.approx(one.statistic, rel=1e-9)
            assert log10p[m, n] == pytest.approx(one.log10_pvalue, rel=1e-9)
            assert norm[m, n] == pytest.approx(np.linalg.norm(B[np.ix_(cols[n], t)]))


def test_candidate_test_is_the_bonferroni_smallest_of_its_per_target_walds() -> None:
    """A lag candidate's coefficients (c, R) are tested target site by target site (the pair tests' Wald of the
    formed series, batches by the per-target q); its p-value is M times the smallest, at most 1."""
    rng = np.random.default_rng(9)
    N, c, dims = 1500, 2, (10, 10, 12, 8)
    R, offsets = sum(dims), np.concatenate([[0], np.cumsum(dims)])
    influence, resid = _persistent(rng, N, c, 0.4), _persistent(rng, N, R, 0.6)
    u = ema_highpass(resid, siv.RESIDUAL_WINDOWS * 30.0, start=0.0)  # residuals high-passed from 0, window 3 x 30
    found = {}
    for scale in (0.05, 1e-5):
        B = rng.standard_normal((c, R)) * scale
        B[:, offsets[2] : offsets[3]] *= 10.0  # one target stands out
        per_target = []
        for m in range(len(dims)):
            t = slice(offsets[m], offsets[m + 1])
            phi = (influence[:, :, None] * u[:, None, t]).reshape(N, -1)
            batches = hac.batch_count(N, phi.shape[1], min_rows=4)
            S = hac.batch_means_lrv(phi, batches=batches)
            per_target.append(wald_test(B[:, t], S / N, nu=batches - 1.0).log10_pvalue)
        want = min(0.0, min(per_target) + np.log10(len(dims)))
        got = siv._strongest_target(B, influence, siv._residual_highpass(resid, 30.0), offsets, max_lag=2)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        found[scale] = (got, int(np.argmin(per_target)))
    assert found[0.05][0] < -3 and found[0.05][1] == 2  # the standout target decides
    assert found[1e-5][0] == 0.0  # M times the smallest p is above 1


def _drift_null_pvalues(
    rng: np.random.Generator, drift: float, reps: int, N: int = 4000, W: float = 60.0
) -> np.ndarray:
    """p-values of a candidate's test (one target of one column: no Bonferroni factor) on its own null: B = influence^T u / N exactly, with an influence series high-passed
    as the instruments are (window W) and residuals u = white noise + `drift` x an AR(0.999) random walk."""
    out = np.empty(reps)
    for i in range(reps):
        e = rng.standard_normal((N + 1000, 3))
        influence = ema_highpass(e[:, :1], W)[1000:]
        slow = scipy.signal.lfilter([1.0], [1.0, -0.999], e[:, 2])
        u = (e[:, 1] + drift * slow)[1000:, None]
        u_hp, one_target = siv._residual_highpass(u, W), np.array([0, 1])
        out[i] = 10.0 ** siv._strongest_target(influence.T @ u / N, influence, u_hp, one_target, max_lag=2)
    return out


def test_pvalues_under_a_slow_drift_are_about_uniform_and_never_liberal() -> None:
    """The batch sums of the influence series times the raw residuals carry the drift, nearly constant over a
    batch, which the high-passed influence series barely sees: 0.5 % of the p-values below 0.05 with the raw
    residuals. Their high-pass (window 3 W, from 0) removes that; with window W it would also remove the
    drift that leaks through the instruments' filter: 9 % below 0.05 under the strong drift."""
    rng = np.random.default_rng(21)
    moderate = _drift_null_pvalues(rng, 0.05, 400)
    assert 0.42 < np.median(moderate) < 0.58 and 0.015 < np.mean(moderate < 0.05) < 0.085
    strong = _drift_null_pvalues(rng, 0.3, 200)  # the drift's std is 7x the noise's
    assert np.mean(strong < 0.05) <= 0.08


@pytest.mark.parametrize("window", [1.0, 2.0, 100.0])
def test_blocked_highpass_is_the_recursion(window: float) -> None:
    lam = 1.0 - 1.0 / window
    for n in (1, 64, 65, 300):  # no block, exactly one, one and a row, several
        x = np.random.default_rng(6).standard_normal((n, 3)).cumsum(axis=0)
        m = np.empty_like(x)
        m[0] = x[0]
        for t in range(1, n):
            m[t] = lam * m[t - 1] + (1.0 - lam) * x[t]
        expected = x - np.vstack([x[:1], m[:-1]])
        np.testing.assert_allclose(ema_highpass(x, window), expected, rtol=1e-12, atol=1e-12 * np.abs(x).max())
        start = np.array([0.5, -1.0, 0.0])  # m_{-1}: the average before the first row
        m[0] = lam * start + (1.0 - lam) * x[0]
        for t in range(1, n):
            m[t] = lam * m[t - 1] + (1.0 - lam) * x[t]
        expected = x - np.vstack([start[None], m[:-1]])
        got = ema_highpass(x, window, start=start)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(x).max())


def test_large_wald_by_cholesky_equals_the_eigen_decomposition() -> None:
    rng = np.random.default_rng(7)
    q = 60
    L = rng.standard_normal((q, 2 * q))
    V = L @ L.T / q
    delta = rng.standard_normal(q)
    w, U = np.linalg.eigh(V)
    exact = float(np.sum((U.T @ delta) ** 2 / w))
    test = wald_test(delta, V, nu=500.0)
    assert test.dof == q
    assert test.statistic == pytest.approx(exact, rel=1e-10)
    # rank-deficient: the Cholesky route is refused and the pseudo-inverse over the positive directions counts
    B = rng.standard_normal((q, q - 5))
    singular = B @ B.T
    w, U = np.linalg.eigh(singular)
    keep = w > 1e-12 * w.max()
    test = wald_test(delta, singular, nu=500.0)
    assert test.dof == q - 5
    assert test.statistic == pytest.approx(float(np.sum((U[:, keep].T @ delta) ** 2 / w[keep])), rel=1e-8)


def test_memory_bounded_blocks_give_the_same_siv_result(monkeypatch: pytest.MonkeyPatch) -> None:
    system = gt.make("mixed", 3)
    ys, _ = gt.simulate(system, 3000, np.random.default_rng(3))
    xs = [snapshot(y).series for y in ys]
    whole = siv_tests(xs)
    monkeypatch.setattr(siv, "CHUNK_VALUES", 997)  # blocks of a few rows: instruments, projections
    blocks = siv_tests(xs)
    assert [(e.site, e.lag) for e in blocks.extra] == [(e.site, e.lag) for e in whole.extra]
    off = ~np.eye(system.M, dtype=bool)
    np.testing.assert_allclose(blocks.log10_pvalue[off], whole.log10_pvalue[off], rtol=1e-10)


def test_lags_of_a_long_series_are_selected_on_its_last_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    system = gt.make("var2", 4)
    ys, _ = gt.simulate(system, 6000, np.random.default_rng(4))
    xs = [snapshot(y).series for y in ys]
    monkeypatch.setattr(siv, "SELECTION_ROWS", 2500)
    result = siv_tests(xs)
    window = siv.highpass_window(6000)
    assert result.extra  # the latent VAR(2) sites need a second lag, found on 2500 rows too
    last = [x[-2500:] for x in xs]
    expected = siv.select_lags(last, window=window)
    assert [(e.site, e.lag) for e in result.extra] == [(e.site, e.lag) for e in expected]
    for got, want in zip(result.extra, expected, strict=True):
        np.testing.assert_allclose(got.a, want.a, rtol=1e-9, atol=1e-12)
    assert result.n_obs == 6000 - 2 * result.max_lag - 2  # the tests themselves use every row
