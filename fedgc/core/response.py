"""The clients' linear response to their augmentation, and the fixed point of the rounds it predicts.

Why the plain rounds converge linearly. Client m's posterior states over a window are an exact linear,
time-invariant function of the augmentation s^m it receives (fedgc.core.window.run_filter, f_theta the
identity, no missing data):

    h_t = F h_{t-1} + G s_t + b_t,      z_t = zeta_t - P h_{t-1}          (F = (I - K C) A^{mm}, G = I - K C,
                                                                        P = J A^{mm}; b, zeta: its data)

A round sends s_t = A_s x_{t-1} built from the states of the *previous* round, so the rounds are a
Jacobi waveform relaxation of the joint recursion: the error of round k + 1 is the error of round k passed
through every client's filter and the cross blocks, a causal convolution whose gain (about
sup_w ||(e^{iw} - F)^{-1} G A_s||, 0.1 on the default scenario) is the linear rate. Its spectrum fills a
disk around zero, so generic acceleration of A_s or of s (Anderson, small memory) barely helps: measured
8 -> 7 rounds on the default scenario.

What converges in one step instead. Two rounds with different augmentations give, per client, the pair
(delta s, delta h, delta z); F, G and P follow from it by least squares (`identify_response`; exact to
rounding when the response is linear time invariant, since the data terms b, zeta cancel in the
differences). With them the server predicts every client's states for any A_s about the last round
(`joint_pass`: one pass of the joint recursion h_t = (F + G A_s) h_{t-1} + b_t, F, G block diagonal, in
which each client's augmentation uses the states of the same pass), and solves the fixed point
A_s = newton(predicted states) on its own (`anderson_fixed_point`). Sending that A_s with the predicted
states, the next round's replies reproduce the prediction, so the rounds stop after it.

Nothing here sees a client's data: the pairs are differences of replies and of sent augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from fedgc.core.kalman import filter_scan
from fedgc.core.regression import Blocks, RegressionStats, relative_change, side_by_side


class ResponseModel(NamedTuple):
    """One client's response to its augmentation, identified from two rounds (module docstring).

    transition F, input_gain G, lag_gain P: (D_m, D_m);  residual: the larger relative least-squares
    residual of the two fits (rounding level when the response is linear time invariant)."""

    transition: np.ndarray
    input_gain: np.ndarray
    lag_gain: np.ndarray
    residual: float


def identify_response(d_states: np.ndarray, d_inputs: np.ndarray, d_pseudo_obs: np.ndarray) -> ResponseModel:
    """F, G, P from the changes of one client's states, augmentation and pseudo-observations (T, D_m) between
    two rounds over the same window (same h_0, so the change of h_0 is zero):
    delta h_t = F delta h_{t-1} + G delta s_t and delta z_t = -P delta h_{t-1}, by least squares."""
    D = d_states.shape[1]
    lag = np.vstack([np.zeros((1, D)), d_states[:-1]])
    X = np.hstack([lag, d_inputs])
    coef, *_ = np.linalg.lstsq(X, d_states, rcond=None)
    neg_p, *_ = np.linalg.lstsq(lag, d_pseudo_obs, rcond=None)
    residual = max(_relative(d_states - X @ coef, d_states), _relative(d_pseudo_obs - lag @ neg_p, d_pseudo_obs))
    return ResponseModel(coef[:D].T.copy(), coef[D:].T.copy(), -neg_p.T, residual)


def _relative(error: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.linalg.norm(reference))
    return 0.0 if scale == 0.0 else float(np.linalg.norm(error)) / scale


# Time steps per block of a joint pass: its temporaries are (BLOCK_ROWS, D), whatever T is.
BLOCK_ROWS = 1 << 15


class BaseRound(NamedTuple):
    """The round a prediction starts from, per client (T, D_m): the states and pseudo-observations it
    replied and the augmentation it answered; h0: its state before the window's first step."""

    states: Sequence[np.ndarray]
    pseudo_obs: Sequence[np.ndarray]
    inputs: Sequence[np.ndarray]
    h0: Sequence[np.ndarray]


class RoundBlock(NamedTuple):
    """Rows start..start + len - 1 of a base round, stacked over the clients (rows, D): the data's drive
    b_t = h_t - F h_{t-1} - G s_t and the data's part of the pseudo-observations, zeta_t = z_t + P h_{t-1}."""

    start: int
    drive: np.ndarray
    zeta: np.ndarray


class PreparedRound(NamedTuple):
    """What every joint pass about one base round shares, computed once (`prepare_round`): F, G and P (D, D),
    block diagonal; h0 stacked; the round in blocks of BLOCK_ROWS steps (RoundBlock); T; burn_in, the steps
    the sums leave out; zeta_gram (D, D), the sum of zeta_t zeta_t^T over the steps they keep. Holds two
    (T, D) arrays, against recomputing them for every A_s tried."""

    transition: np.ndarray
    input_gain: np.ndarray
    lag_gain: np.ndarray
    h0: np.ndarray
    blocks: tuple[RoundBlock, ...]
    n_steps: int
    burn_in: int
    zeta_gram: np.ndarray


def prepare_round(models: Sequence[ResponseModel], base: BaseRound, *, burn_in: int) -> PreparedRound:
    """The base round's part of `joint_pass` (its docstring) for sums that leave out the first burn_in steps:
    b_t and zeta_t per block, the sum of zeta_t zeta_t^T, and F, G, P block diagonal."""
    layout = Blocks.of([m.transition.shape[0] for m in models])
    D, T = layout.total, base.states[0].shape[0]
    F, G, P = np.zeros((D, D)), np.zeros((D, D)), np.zeros((D, D))
    for m, model in enumerate(models):
        c = layout.slice(m)
        F[c, c], G[c, c], P[c, c] = model.transition, model.input_gain, model.lag_gain
    h0 = np.concatenate(list(base.h0)).astype(float)
    h_base, blocks, zeta_gram = h0, [], np.zeros((D, D))
    for a in range(0, T, BLOCK_ROWS):
        b = min(T, a + BLOCK_ROWS)
        # transposed, (D, rows) and row-major: the block-diagonal products and sums run along the rows
        H = side_by_side(base.states, a, b).T
        lag_base = side_by_side(base.states, a, b - 1, first=h_base).T
        drive = H - F @ lag_base - G @ side_by_side(base.inputs, a, b).T
        zeta = side_by_side(base.pseudo_obs, a, b).T + P @ lag_base
        kept = zeta[:, min(max(burn_in - a, 0), b - a) :]
        zeta_gram += kept @ kept.T
        blocks.append(RoundBlock(a, np.ascontiguousarray(drive.T), zeta.T))  # the scan reads the drive by rows
        h_base = H[:, -1]
    return PreparedRound(F, G, P, h0, tuple(blocks), T, burn_in, zeta_gram)


def joint_pass(
    A_s: np.ndarray, models: Sequence[ResponseModel], base: BaseRound, *, burn_in: int, keep: bool = False
) -> tuple[RegressionStats, np.ndarray | None]:
    """The regression sums (as fedgc.core.regression.regression_stats, with this burn_in) of the states and
    pseudo-observations the clients would return for A_s (module docstring), BLOCK_ROWS steps at a time;
    keep: also those states, (T, D). Per client m (its rows and columns of the stacked layout):

        b_t = h_t - F h_{t-1} - G s_t                  (base round: the data's part, fixed)
        h~_t = (F + G A_s) h~_{t-1} + b_t              (jointly, h~_0 = h_0)
        z~_t = z_t - P (h~_{t-1} - h_{t-1}) = zeta_t - P h~_{t-1},     zeta_t = z_t + P h_{t-1}

    Sums that overflow (an A_s whose joint recursion explodes) come back non-finite. Passes for many A_s
    about one round: `prepare_round` once, then `prepared_pass` for each."""
    return prepared_pass(A_s, prepare_round(models, base, burn_in=burn_in), keep=keep)


def prepared_pass(
    A_s: np.ndarray, prepared: PreparedRound, *, keep: bool = False
) -> tuple[RegressionStats, np.ndarray | None]:
    """`joint_pass` for A_s about a prepared round. Only the states are recomputed: with L = sum h~_{t-1} zeta_t^T
    and the gram sum h~_{t-1} h~_{t-1}^T, the sums of z~ = zeta - P h~_{t-1} are

        sum h~_{t-1} z~_t^T = L - gram P^T,      sum z~_t z~_t^T = zeta_gram - L^T P^T - P L + P gram P^T.

    Two products over the rows per pass instead of forming z~ and three (half the time at T = 525,600,
    D = 60). The differences cancel where z~ is much smaller than zeta: the sums agreed with z~'s own to
    1e-14 relative there, and the runs' A_s to 3e-14 (TEP) or better."""
    step = prepared.transition + prepared.input_gain @ A_s
    D, T, burn_in = step.shape[0], prepared.n_steps, prepared.burn_in
    gram, L = np.zeros((D, D)), np.zeros((D, D))
    kept = np.empty((T, D)) if keep and len(prepared.blocks) != 1 else None
    h_pred = prepared.h0.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for block in prepared.blocks:
            a = block.start
            Hx = filter_scan(step, block.drive, h_pred)
            n = Hx.shape[0]
            lo = min(max(burn_in - a, 0), n)  # the block's first step the sums keep
            if lo == 0:  # its lagged state is the one before the block
                gram += np.outer(h_pred, h_pred)
                L += np.outer(h_pred, block.zeta[0])
            lag = Hx[max(lo, 1) - 1 : n - 1]  # h~_{t-1} for the block's steps t = max(lo, 1) .. n - 1
            gram += lag.T @ lag
            L += lag.T @ block.zeta[max(lo, 1) : n]
            if kept is not None:
                kept[a : a + n] = Hx
            elif keep:
                kept = Hx  # one block: the states themselves
            h_pred = Hx[-1]
        P = prepared.lag_gain
        cross = L - gram @ P.T
        zz = prepared.zeta_gram - L.T @ P.T - P @ L + P @ gram @ P.T
    return RegressionStats(gram, cross, 0.5 * (zz + zz.T), max(T - burn_in, 0)), kept


class FixedPoint(NamedTuple):
    """x: the best iterate;  image: the map at x;  residual: relative_change(image, x);  evaluations:
    of the map;  converged: residual <= tol."""

    x: np.ndarray
    image: np.ndarray
    residual: float
    evaluations: int
    converged: bool


MIN_STEP = 1.0 / 64.0


def anderson_fixed_point(
    image: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, *, tol: float, max_evaluations: int, memory: int = 5
) -> FixedPoint | None:
    """x = image(x) by type-II Anderson acceleration of the relaxed map x + w (image(x) - x); None if
    image(x0) itself fails. Safeguards as the rounds' own relaxation (fedgc.core.regression.next_relaxation):
    a step that raises the residual ||image(x) - x|| / ||image(x)|| is kept but restarts the memory and
    halves w; a candidate where image fails (np.linalg.LinAlgError, not finite) is dropped, and the memory
    restarts from the best iterate with w halved. Gives up (returning the best iterate, not converged)
    after max_evaluations evaluations or once w would fall below MIN_STEP."""
    g = _evaluate(image, x0)
    if g is None:
        return None
    x, r = x0, relative_change(g, x0)
    best = FixedPoint(x, g, r, 1, r <= tol)
    xs, gs = [x], [g]
    step, evaluations = 1.0, 1
    while not best.converged and evaluations < max_evaluations:
        if len(xs) < 2:
            candidate = x + step * (g - x)
        else:
            F = np.stack([(b - a).ravel() for a, b in zip(xs, gs, strict=True)], axis=1)
            X = np.stack([a.ravel() for a in xs], axis=1)
            gamma, *_ = np.linalg.lstsq(np.diff(F, axis=1), F[:, -1], rcond=None)
            shift = (np.diff(X, axis=1) + step * np.diff(F, axis=1)) @ gamma
            candidate = (X[:, -1] + step * F[:, -1] - shift).reshape(x.shape)
        g_new = _evaluate(image, candidate)
        evaluations += 1
        if g_new is None:
            step /= 2.0
            if step < MIN_STEP:
                break
            x, g, xs, gs = best.x, best.image, [best.x], [best.image]
            continue
        r_new = relative_change(g_new, candidate)
        if r_new > r:
            step = max(step / 2.0, MIN_STEP)
            xs, gs = [], []
        x, g, r = candidate, g_new, r_new
        xs, gs = [*xs, x][-(memory + 1) :], [*gs, g][-(memory + 1) :]
        if r < best.residual:
            best = FixedPoint(x, g, r, evaluations, r <= tol)
    return best._replace(evaluations=evaluations)


def _evaluate(image: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray | None:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            g = image(x)
    except np.linalg.LinAlgError:
        return None
    return g if np.all(np.isfinite(g)) else None
