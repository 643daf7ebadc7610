"""Server updates (fedgc.core.regression) against direct least squares, KKT conditions and plain gradient descent."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from fedgc.core.regression import (
    Blocks,
    augmentations,
    gd_update,
    group_lasso_row,
    lagged_stack,
    newton_update,
    regression_stats,
    regressor_inverse_block,
    row_fit,
    shared_inverse,
    side_by_side,
)
from fedgc.core.window import lagged, prediction_loss
from fedgc.protocol.session import ClientSession

DIMS = (2, 3, 2)


def _problem(seed: int, T: int = 400, dims=DIMS, signal: float = 0.5, zero_blocks=()):
    """Per-client states (T, D_m) from a stable joint AR(1), pseudo-observations with a linear dependence on
    the lagged stacked states plus noise (none through the [target, source] pairs in zero_blocks), and SPD
    information matrices."""
    rng = np.random.default_rng(seed)
    D = sum(dims)
    o = np.concatenate([[0], np.cumsum(dims)])
    A = rng.standard_normal((D, D))
    A *= 0.7 / np.max(np.abs(np.linalg.eigvals(A)))
    H = np.zeros((T, D))
    h = np.zeros(D)
    for t in range(T):
        h = A @ h + rng.standard_normal(D)
        H[t] = h
    X = lagged_stack(np.split(H, np.cumsum(dims)[:-1], axis=1))
    Wz = rng.standard_normal((D, D))
    for m, n in zero_blocks:
        Wz[o[m] : o[m + 1], o[n] : o[n + 1]] = 0.0
    Z = signal * X @ Wz.T + rng.standard_normal((T, D))
    blocks = Blocks.of(dims)
    states = [H[:, blocks.slice(m)] for m in range(len(dims))]
    pseudo = [Z[:, blocks.slice(m)] for m in range(len(dims))]
    Js = []
    for d in dims:
        U, _ = np.linalg.qr(rng.standard_normal((d, d)))
        Js.append((U * rng.uniform(0.5, 3.0, d)) @ U.T)
    return SimpleNamespace(states=states, pseudo=pseudo, J=Js, blocks=blocks, X=X, Z=Z, H=H)


def _direct_ls(pb, m, diagonal, burn_in=1):
    idx = pb.blocks.regressors(m, diagonal)
    X = pb.X[burn_in:][:, idx]
    Z = pb.pseudo[m][burn_in:]
    Gamma = np.linalg.lstsq(X, Z, rcond=None)[0].T  # (D_m, K)
    return idx, np.linalg.solve(pb.J[m], Gamma), X, Z


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ----------------------------------------------------------------------------- newton = least squares


def test_blocks_layout():
    blocks = Blocks.of(DIMS)
    assert blocks.total == 7
    assert list(blocks.offsets) == [0, 2, 5, 7]
    assert list(blocks.regressors(1, "fixed")) == [0, 1, 5, 6]
    assert list(blocks.regressors(1, "joint")) == list(range(7))
    assert blocks.sources(1, "fixed") == [(0, slice(0, 2)), (2, slice(2, 4))]
    assert blocks.sources(1, "joint") == [(0, slice(0, 2)), (2, slice(5, 7))]
    (twos, rows2), (threes, rows3) = blocks.by_dim()
    assert twos == [0, 2] and rows2.tolist() == [[0, 1], [5, 6]]
    assert threes == [1] and rows3.tolist() == [[2, 3, 4]]


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
@pytest.mark.parametrize("seed, dims", [(0, DIMS), (1, DIMS), (2, (2, 3, 2, 1, 3, 2, 4))])
def test_newton_update_is_least_squares(diagonal, seed, dims):
    """Every target's rows by direct least squares; targets of one state dimension are solved stacked."""
    pb = _problem(seed, dims=dims)
    stats = regression_stats(pb.states, pb.pseudo, burn_in=1)
    A_s = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal)
    for m in range(len(dims)):
        idx, B, _, _ = _direct_ls(pb, m, diagonal)
        own = pb.blocks.slice(m)
        assert _rel(A_s[own][:, idx], B) < 1e-10
        if diagonal == "fixed":
            assert np.all(A_s[own, own] == 0.0)


def test_shared_inverse_refuses_a_singular_or_non_finite_gram():
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        shared_inverse(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="infs or NaNs"):
        shared_inverse(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def test_regression_stats_burn_in():
    pb = _problem(2)
    stats = regression_stats(pb.states, pb.pseudo, burn_in=5)
    X, Z = pb.X[5:], pb.Z[5:]
    assert stats.n == len(pb.Z) - 5
    np.testing.assert_allclose(stats.gram, X.T @ X, rtol=1e-12)
    np.testing.assert_allclose(stats.cross, X.T @ Z, rtol=1e-12)
    np.testing.assert_allclose(stats.zz, Z.T @ Z, rtol=1e-12)
    np.testing.assert_array_equal(pb.X[0], 0.0)  # h_0 = 0 starts the lagged stack
    np.testing.assert_array_equal(pb.X[1:], pb.H[:-1])


@pytest.mark.parametrize("rows", [None, 37])
def test_sums_and_augmentations_in_blocks_of_rows_equal_the_whole_stack(rows, monkeypatch):
    """Blocks of rows (side_by_side, column-major) give the whole stack's sums and augmentations, with a
    nonzero h_0: the sums' blocks start at the burn-in, the augmentations' first block at step 0 (h_0 is
    its first lagged state)."""
    if rows is not None:
        monkeypatch.setattr("fedgc.core.regression.STACK_BLOCK_ROWS", rows)
    pb = _problem(3)
    rng = np.random.default_rng(9)
    h0 = [rng.standard_normal(d) for d in DIMS]
    X, Z = lagged_stack(pb.states, h0), np.hstack(pb.pseudo)
    np.testing.assert_array_equal(side_by_side(pb.states, 4, 9), np.hstack(pb.states)[4:9])
    np.testing.assert_array_equal(side_by_side(pb.states, 0, 9, np.concatenate(h0)), X[:10])
    stats = regression_stats(pb.states, pb.pseudo, burn_in=40, h0=h0)
    np.testing.assert_allclose(stats.gram, X[40:].T @ X[40:], rtol=1e-12)
    np.testing.assert_allclose(stats.cross, X[40:].T @ Z[40:], rtol=1e-12)
    np.testing.assert_allclose(stats.zz, Z[40:].T @ Z[40:], rtol=1e-12)
    A_s = rng.standard_normal((sum(DIMS), sum(DIMS)))
    blocks = Blocks.of(DIMS)
    for m, s in enumerate(augmentations(A_s, pb.states, blocks, h0)):
        np.testing.assert_allclose(s, X @ A_s[blocks.slice(m)].T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
@pytest.mark.parametrize("m", [0, 1, 2])
def test_shared_inverse_schur_equals_direct_submatrix_inverse(m, diagonal):
    """One inverse of the whole Gram matrix serves every target: the (n, n) block of the inverse of target m's
    regressor Gram (client m's own states removed when the diagonal is fixed) is a Schur complement of it."""
    pb = _problem(3)
    stats = regression_stats(pb.states, pb.pseudo)
    W = shared_inverse(stats.gram)
    assert _rel(W, np.linalg.inv(stats.gram)) < 1e-10
    idx = pb.blocks.regressors(m, diagonal)
    direct = np.linalg.inv(stats.gram[np.ix_(idx, idx)])
    for n, cols in pb.blocks.sources(m, diagonal):
        got = regressor_inverse_block(W, pb.blocks, m, n, diagonal)
        assert _rel(got, direct[cols, cols]) < 1e-10
    fit = row_fit(stats, W, pb.blocks, m, diagonal)
    _, B, X, Z = _direct_ls(pb, m, diagonal)
    assert fit.coef.shape == (DIMS[m], sum(DIMS))  # stacked-state coordinates
    assert _rel(np.linalg.solve(pb.J[m], fit.coef[:, idx]), B) < 1e-10
    if diagonal == "fixed":
        assert np.all(fit.coef[:, pb.blocks.slice(m)] == 0.0)
    assert fit.n_regressors == len(idx)
    resid = Z - X @ (pb.J[m] @ B).T
    assert _rel(fit.rss, resid.T @ resid) < 1e-10


def test_newton_minimises_the_raw_measurement_loss(gen):
    """From what clients send (z, J), the newton row block is the minimiser of the client's loss written with raw
    y, C and R: sum_t ||R^{-1/2} (y_t - C (A h_{t-1} + B x_{t-1}))||^2 with the states held fixed."""
    from fedgc.data.synthetic import SystemSpec, simulate

    spec = SystemSpec(n_clients=3, state_dims=2, obs_dims=8, edge_density=0.5, n_steps=600)
    data = simulate(spec, np.random.default_rng(4))
    sessions = [ClientSession(f"c{m}", data.system.local_model(m), data.y[m]) for m in range(3)]
    replies = [s.round(np.zeros((600, 2))) for s in sessions]
    blocks = Blocks.of([2, 2, 2])
    stats = regression_stats([r.states for r in replies], [r.pseudo_obs for r in replies], burn_in=1)
    A_s = newton_update(stats, [r.information for r in replies], blocks)
    X = lagged_stack([r.states for r in replies])
    for m, s in enumerate(sessions):
        own, idx = blocks.slice(m), blocks.regressors(m, "fixed")
        model = s.model
        y = model.standardise(data.y[m])
        prev = lagged(replies[m].states)
        Rinv = np.linalg.inv(model.R)

        def loss(B, y=y, prev=prev, model=model, idx=idx, Rinv=Rinv):
            e = (y - (prev @ model.A.T + X[:, idx] @ B.T) @ model.C.T)[1:]
            return np.einsum("tp,pq,tq->", e, Rinv, e)

        B = A_s[own][:, idx]
        e = (y - (prev @ model.A.T + X[:, idx] @ B.T) @ model.C.T)[1:]
        grad = -2 * model.C.T @ Rinv @ e.T @ X[1:, idx]
        assert np.linalg.norm(grad) < 1e-8 * np.linalg.norm(2 * model.C.T @ Rinv @ y[1:].T @ X[1:, idx])
        rng = np.random.default_rng(m)
        for _ in range(3):
            assert loss(B + 1e-3 * rng.standard_normal(B.shape)) > loss(B)
        # the client-side loss formula agrees with the raw one (with the prior including B x)
        priors = prev @ model.A.T + X[:, idx] @ B.T
        y_all = model.standardise(data.y[m])
        e_all = y_all - priors @ model.C.T
        np.testing.assert_allclose(
            prediction_loss(s.window, priors), np.einsum("tp,pq,tq->", e_all, Rinv, e_all), rtol=1e-10
        )


# ----------------------------------------------------------------------------- group lasso


def _row_problem(pb, m, diagonal):
    stats = regression_stats(pb.states, pb.pseudo)
    idx = pb.blocks.regressors(m, diagonal)
    G = stats.gram[np.ix_(idx, idx)] / stats.n
    Hz = stats.cross[idx, pb.blocks.slice(m)].T / stats.n
    return stats, idx, G, Hz


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
def test_huge_penalty_zeroes_every_cross_block(diagonal):
    pb = _problem(5)
    stats = regression_stats(pb.states, pb.pseudo)
    A_s = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal, penalty=1e6)
    for m in range(3):
        for n in range(3):
            block = A_s[pb.blocks.slice(m), pb.blocks.slice(n)]
            if m != n:
                assert np.all(block == 0.0)
        if diagonal == "joint":
            # The own block is not penalised: it is the least squares on the own regressors alone.
            own = pb.blocks.slice(m)
            X = pb.X[1:, own]
            Gamma = np.linalg.lstsq(X, pb.pseudo[m][1:], rcond=None)[0].T
            assert _rel(A_s[own, own], np.linalg.solve(pb.J[m], Gamma)) < 1e-6


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
def test_zero_and_tiny_penalty_give_least_squares(diagonal):
    pb = _problem(6)
    for m in range(3):
        stats, _idx, G, Hz = _row_problem(pb, m, diagonal)
        _, B_ls, _, _ = _direct_ls(pb, m, diagonal)
        B = group_lasso_row(pb.J[m], G, Hz, pb.blocks.sources(m, diagonal), 0.0, start=np.zeros_like(B_ls))
        assert _rel(B, B_ls) < 1e-6
    A_tiny = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal, penalty=1e-12)
    A_ls = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal, penalty=0.0)
    assert _rel(A_tiny, A_ls) < 1e-6


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
def test_group_lasso_kkt(diagonal):
    pb = _problem(7, signal=0.3, zero_blocks=[(0, 1), (1, 2), (2, 0)])
    stats = regression_stats(pb.states, pb.pseudo)
    penalty = 0.6
    A_s = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal, penalty=penalty)
    n_zero = n_nonzero = 0
    for m in range(3):
        _, idx, G, Hz = _row_problem(pb, m, diagonal)
        own = pb.blocks.slice(m)
        B = A_s[own][:, idx]
        grad = 2.0 * (pb.J[m] @ B @ G - Hz)  # gradient of tr(J B G B^T) - 2 tr(B^T Hz)
        penalised = np.zeros(len(idx), dtype=bool)
        for _, cols in pb.blocks.sources(m, diagonal):
            penalised[cols] = True
            Bg, gg = B[:, cols], grad[:, cols]
            norm = np.linalg.norm(Bg)
            if norm > 0:
                n_nonzero += 1
                assert np.linalg.norm(gg + penalty * Bg / norm) < 1e-5 * penalty
            else:
                n_zero += 1
                assert np.linalg.norm(gg) <= penalty * (1 + 1e-8)
        # unpenalised columns (joint: the own block) are at a stationary point
        assert np.linalg.norm(grad[:, ~penalised]) < 1e-5 * penalty + 1e-12 * (~penalised).sum()
    assert n_zero > 0 and n_nonzero > 0, "choose the penalty so both kinds of groups occur"


# ----------------------------------------------------------------------------- gd


@pytest.mark.parametrize("diagonal", ["fixed", "joint"])
def test_gd_converges_to_newton_on_fixed_statistics(diagonal):
    pb = _problem(8, T=300)
    stats = regression_stats(pb.states, pb.pseudo)
    target = newton_update(stats, pb.J, pb.blocks, diagonal=diagonal)
    A_s = np.zeros_like(target)
    errors = []
    for _ in range(600):
        # g_t^m = dL^m/ds_t^m = -2 (z_t - J s_t) with s_t^m = A_s^{m.} x_{t-1} (f_theta the identity)
        S = pb.X @ A_s.T
        grads = [-2.0 * (pb.pseudo[m] - S[:, pb.blocks.slice(m)] @ pb.J[m].T) for m in range(3)]
        A_s = gd_update(A_s, pb.states, grads, pb.J, pb.blocks, diagonal=diagonal)
        errors.append(_rel(A_s, target))
    assert errors[-1] < 1e-6
    # With eta <= 1/L the error never grows (until it reaches the rounding floor).
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(errors) if a > 1e-12)


def test_gd_learning_rate_and_penalty():
    pb = _problem(9, T=200)
    grads = [np.ones((200, d)) for d in DIMS]
    A0 = np.zeros((7, 7))
    A1 = gd_update(A0, pb.states, grads, pb.J, pb.blocks, learning_rate=0.1)
    X = pb.X[1:]
    for m in range(3):
        idx, own = pb.blocks.regressors(m, "fixed"), pb.blocks.slice(m)
        expected = -0.1 * (np.ones((len(X), DIMS[m])).T @ X[:, idx]) / len(X)
        assert _rel(A1[own][:, idx], expected) < 1e-12
        assert np.all(A1[own, own] == 0.0)
    A2 = gd_update(A0, pb.states, grads, pb.J, pb.blocks, learning_rate=0.1, penalty=1e6)
    assert np.all(A2 == 0.0)


@pytest.mark.parametrize("burn_in, with_h0", [(1, False), (0, True), (5, True)])
def test_blocked_server_sums_and_augmentations_match_the_stacked_ones(monkeypatch, burn_in, with_h0):
    """regression_stats and augmentations run over blocks of STACK_BLOCK_ROWS rows; with small blocks
    (a ragged last one, the h_0 row in the first) they agree to rounding with the whole stacked window."""
    import fedgc.core.regression as regression

    rng = np.random.default_rng(60 + burn_in)
    dims = [2, 3, 1]
    T = 1000
    states = [rng.standard_normal((T, d)) for d in dims]
    z = [rng.standard_normal((T, d)) for d in dims]
    h0 = [rng.standard_normal(d) for d in dims] if with_h0 else None
    blocks = Blocks.of(dims)
    A_s = rng.standard_normal((blocks.total, blocks.total))
    X = regression.lagged_stack(states, h0)
    Z = np.hstack(z)[burn_in:]
    monkeypatch.setattr(regression, "STACK_BLOCK_ROWS", 97)
    stats = regression.regression_stats(states, z, burn_in=burn_in, h0=h0)
    assert stats.n == T - burn_in
    for got, want in ((stats.gram, X[burn_in:].T @ X[burn_in:]), (stats.cross, X[burn_in:].T @ Z), (stats.zz, Z.T @ Z)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
    S = X @ A_s.T
    for m, aug in enumerate(regression.augmentations(A_s, states, blocks, h0)):
        assert aug.shape == (T, dims[m]) and aug.flags.c_contiguous
        np.testing.assert_allclose(aug, S[:, blocks.slice(m)], rtol=1e-12, atol=1e-12)
