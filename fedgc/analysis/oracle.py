"""Centralized oracle: all raw data stacked, the joint filter with full gain. Evaluation only.

Joint model: h_t = (A_loc + A_s) h_{t-1} + v_t with A_loc = blockdiag(A^{mm}),
Q = blockdiag(Q^m), and y^m = C^m h^m + w^m. Each round solves the joint Riccati
equation for the current A_loc + A_s, filters with the full gain, and refits
A_s by the same least squares as the federated newton rule (the same loss). With missing
measurements the joint filter is the exact one of fedgc.core.gaps (joint J_t = blockdiag(J_t^m)) and
the pseudo-observations are completed at the joint prior, as each client completes its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.linalg

from fedgc.core.gaps import complete_pseudo_obs, gapped_scan, missing_quadratic, plan_filter, stack_gaps
from fedgc.core.kalman import filter_scan, steady_state
from fedgc.core.regression import Blocks, newton_update, next_relaxation, regression_stats, relative_change
from fedgc.core.window import ClientWindow, lagged
from fedgc.protocol.settings import ORACLE_MIN_ROUNDS, ServerConfig
from fedgc.protocol.state import RoundRecord


def oracle_fit(
    windows: Sequence[ClientWindow], config: ServerConfig, *, on_round: Callable[[RoundRecord], None] | None = None
) -> tuple[np.ndarray, list[RoundRecord]]:
    """A_s of the centralized oracle, and its per-round history (on_round: called with each round's record).

    The oracle is a reference, not a budgeted run: it iterates to config.tol with at least
    ORACLE_MIN_ROUNDS rounds allowed, whatever the federated round budget.
    """
    blocks = Blocks.of([w.A.shape[0] for w in windows])
    A_loc = scipy.linalg.block_diag(*[w.A for w in windows])
    J = scipy.linalg.block_diag(*[w.J for w in windows])
    Q = scipy.linalg.block_diag(*[w.Q for w in windows])
    ytil = np.hstack([w.ytil for w in windows])
    gaps = stack_gaps([w.gaps for w in windows], [w.J for w in windows], ytil.shape[0])
    A_s = np.zeros_like(A_loc)
    history: list[RoundRecord] = []
    omega = 1.0
    for r in range(1, max(config.max_rounds, ORACLE_MIN_ROUNDS) + 1):
        ss = steady_state(A_loc + A_s, J, Q)
        if gaps is None:
            H = filter_scan(ss.transition, ytil @ ss.posterior_cov.T)
        else:
            plan = plan_filter(A_loc + A_s, Q, J, ss, gaps)
            H = gapped_scan(ss.transition, ss.input_gain, ss.posterior_cov, plan, np.zeros_like(ytil), ytil)
        prev = lagged(H)
        z = ytil - prev @ (J @ A_loc).T
        if gaps is not None:
            z = complete_pseudo_obs(z, J, gaps, prev[gaps.steps] @ (A_loc + A_s).T)
        split = [blocks.slice(m) for m in range(len(windows))]
        stats = regression_stats([H[:, s] for s in split], [z[:, s] for s in split], burn_in=config.burn_in)
        A_new = newton_update(
            stats, [w.J for w in windows], blocks, diagonal=config.diagonal, penalty=config.penalty, start=A_s
        )
        priors = prev @ (A_loc + A_s).T
        loss = float(sum(w.yRy.sum() for w in windows) - 2 * np.sum(priors * ytil) + np.sum((priors @ J) * priors))
        if gaps is not None:
            loss -= missing_quadratic(J, gaps, priors[gaps.steps])
        change = relative_change(A_new, A_s)
        history.append(RoundRecord(r, loss, change))
        if on_round is not None:
            on_round(history[-1])
        omega = next_relaxation(omega, change, history[-2].change if len(history) > 1 else np.inf)
        A_s = A_s + omega * (A_new - A_s) if omega < 1.0 else A_new
        if change < config.tol:
            break
    return A_s, history
