"""Streaming mode: successive windows, carried filter states, forgotten statistics, alerts.

Windows. Window k covers samples [k S, k S + W) (W = window, S = step <= W). Every client runs its
augmented filter over the window from h_{kS-1}, the posterior state its last run of window k-1 left
there, so the filters never restart: with A_s fixed, windows give exactly one long filter run.

Each window is one fit of the round loop (fedgc.protocol.loop: the same exchanges, reply validation
and dropout policy as a batch run), warm-started from the previous window's A_s, regressing on the
window's statistics plus the forgotten memory of the earlier ones (fedgc.core.forgetting, which also
holds the effective sample size and the change test behind the alerts). After the fit every pair is
tested on the forgotten statistics, and every pair for a change against the memory; a significant
change raises an alert and (reset_on_alert) restarts the memory from the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from fedgc.core.forgetting import (
    AlertKind,
    ChangeTest,
    ForgottenStats,
    ScaledChi2,
    change_tests,
    change_tests_hac,
    classify,
    fit_scaled_chi2,
    scaled_chi2_log10_sf,
)
from fedgc.core.granger import GCResult, granger_tests
from fedgc.core.regression import Blocks, lagged_stack, newton_update, regression_stats
from fedgc.errors import ConfigError, FedGCError
from fedgc.protocol.dropout import embed_gc, state_indices
from fedgc.protocol.loop import Limits, Rounds, Span
from fedgc.protocol.settings import ServerConfig, StreamingConfig
from fedgc.protocol.state import Dropout, ProtocolState, RoundRecord
from fedgc.protocol.transport import StreamTransport, common_length


def window_bounds(n_steps: int, window: int, step: int) -> list[tuple[int, int]]:
    """[start, end) of every full window; samples after the last full window are left out."""
    if n_steps < window:
        raise ConfigError(f"streaming.window ({window}) is longer than the data ({n_steps} samples)")
    return [(a, a + window) for a in range(0, n_steps - window + 1, step)]


class Alert(NamedTuple):
    """window: index; time: end of that window (samples seen when raised); target, source: client indices;
    strength_before / after: ||A_s^{mn}||_F of the previous / this window; log10_pvalue: of the change test."""

    window: int
    time: int
    target: int
    source: int
    kind: AlertKind
    strength_before: float
    strength_after: float
    log10_pvalue: float


@dataclass(frozen=True)
class WindowResult:
    """One window: gc on the forgotten statistics (N_eff samples, sum w = memory); change: the change
    tests against the memory before the window (None in window 0 and right after a restart);
    rounds: server updates, exchanges: client round trips; reset: the memory restarted here."""

    index: int
    start: int
    end: int
    gc: GCResult
    effective_size: float
    memory: float
    rounds: int
    exchanges: int
    converged: bool
    change: ChangeTest | None
    reset: bool


class StreamResult(NamedTuple):
    clients: tuple[str, ...]
    windows: list[WindowResult]
    alerts: list[Alert]
    history: list[RoundRecord]
    A_s: np.ndarray
    n_steps: int
    dropouts: list[Dropout]


def run_stream(
    transport: StreamTransport,
    server: ServerConfig,
    stream: StreamingConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_window: Callable[[WindowResult, list[Alert]], None] | None = None,
    null: ScaledChi2 | None = None,
) -> StreamResult:
    """Every window in turn: fit A_s (warm start), test every pair on the forgotten statistics, test for
    changes against the memory, raise alerts, then fold the samples leaving the window into the memory.
    on_window(window, its alerts) is called as each window completes (the live page's snapshots); null: the
    change statistics' reference null (calibrate_alerts), else their chi-square."""
    if server.rule != "newton":
        raise ConfigError("streaming mode needs server.rule: newton (gd needs many rounds per window)")
    infos = transport.clients()
    names = [c.name for c in infos]
    T = common_length(infos, "streams")
    full = Blocks.of([c.state_dim for c in infos])
    if stream.window - server.burn_in <= full.total + 1:
        raise ConfigError(f"streaming.window ({stream.window}) is too short for {full.total} stacked states: "
                          "each window must hold clearly more samples than regressors")  # fmt: skip
    rounds = Rounds(transport, server, names, full, on_round=on_round)
    limits = Limits(stream.max_rounds, stream.tol)
    bounds = window_bounds(T, stream.window, stream.stride)
    past = ForgottenStats.empty(full.total)  # over every client's coordinates; restricted to the active ones
    st = ProtocolState.initial(names, full.dims)
    h0: tuple[np.ndarray, ...] | None = None
    previous: WindowResult | None = None
    windows: list[WindowResult] = []
    alerts: list[Alert] = []
    history: list[RoundRecord] = []
    for k, (a, b) in enumerate(bounds):
        transport.open_window(a, b)
        span = Span(b - a, server.burn_in if k == 0 else 0, h0, past)
        opened = st.exchanges
        st = ProtocolState.initial(names, full.dims, A_s=st.A_s, exchanges=st.exchanges, active=st.active).evolve(
            dropouts=st.dropouts
        )
        st, replies = rounds.fit(st, span, limits)
        history += [r._replace(round=len(history) + i + 1) for i, r in enumerate(st.history)]  # numbered over the run
        members, blocks, A = rounds.layout(st)
        idx = state_indices(full, members)
        here = [names[m] for m in members]
        if st.stats is None:  # a fit ends with an update, which leaves its statistics
            raise FedGCError(f"window {k}: no server update ran")
        new = st.stats
        memory = past.restricted(idx)
        total = memory.plus(new)
        gc = granger_tests(total.for_tests(), A, here, blocks, diagonal=server.diagonal, alpha=server.alpha)
        change, reset, raised = None, False, []
        if previous is not None and memory.weight > 0:
            if stream.alert_variance == "hac":
                X = lagged_stack([replies[m].states for m in members], None if h0 is None else [h0[m] for m in members])
                Z = np.hstack([replies[m].required("pseudo_obs") for m in members])
                change = change_tests_hac(memory, new, X[span.burn_in :], Z[span.burn_in :], blocks, server.diagonal)
            else:
                change = change_tests(memory, new, blocks, server.diagonal)
            if null is not None:
                change = change._replace(log10_pvalue=scaled_chi2_log10_sf(change.statistic, change.dof, null))
            level = stream.alert_alpha / max(len(members) * (len(members) - 1), 1)
            flagged = np.argwhere(change.log10_pvalue < np.log10(level))
            if len(flagged):
                informations = [replies[m].required("information") for m in members]
                A_new = newton_update(
                    new, informations, blocks, diagonal=server.diagonal, penalty=server.penalty, start=A
                )
                own = granger_tests(new, A_new, here, blocks, diagonal=server.diagonal, alpha=server.alpha)
                if stream.reset_on_alert:
                    st = st.evolve(A_s=_embed_block(st.A_s, A_new, idx))
                    gc, total, reset = own, ForgottenStats.empty(len(idx)).plus(new), True
                for i, j in flagged:
                    m, n = members[i], members[j]
                    kind = classify(bool(previous.gc.edges[m, n]), previous.gc.strength[m, n], own.strength[i, j],
                                    bool(own.pvalue[i, j] < server.alpha))  # fmt: skip
                    raised.append(Alert(k, b, int(m), int(n), kind, float(previous.gc.strength[m, n]),
                                        float(gc.strength[i, j]), float(change.log10_pvalue[i, j])))  # fmt: skip
        if len(members) < len(names):
            gc = embed_gc(gc, names, full.dims, members, st.A_s)
        result = WindowResult(k, a, b, gc, total.effective_size, total.weight, st.round, st.exchanges - opened,
                              st.converged, change, reset)  # fmt: skip
        windows.append(result)
        alerts += raised
        if on_window is not None:
            on_window(result, raised)
        if k + 1 == len(bounds):
            break
        # Memory for the next window: the samples leaving the window (the first `step`), then forgetting.
        leave = bounds[k + 1][0] - a
        leaving = new if leave == b - a else regression_stats(
            [replies[m].states[:leave] for m in members], [replies[m].required("pseudo_obs")[:leave] for m in members],
            burn_in=span.burn_in, h0=None if h0 is None else [h0[m] for m in members],
        )  # fmt: skip
        base = ForgottenStats.empty(full.total) if reset else past
        past = base.plus_within(leaving, idx).forget(stream.forgetting)
        h0 = tuple(
            replies[m].states[leave - 1].copy() if m in replies else np.zeros(full.dims[m]) for m in range(len(names))
        )
        previous = result
    return StreamResult(tuple(names), windows, alerts, history, st.A_s, T, list(st.dropouts))


def calibrate_alerts(
    references: Sequence[StreamTransport],
    server: ServerConfig,
    stream: StreamingConfig,
    *,
    predictive: bool = False,
) -> ScaledChi2:
    """The change statistics' null fitted on normal-operation references streamed with the same settings, their
    memory never restarted (fedgc.core.forgetting.fit_scaled_chi2 over every reference, window and pair).

    One reference with the test's own models (alert_calibration: reference), or several whose models were
    identified on data other than what they stream (cross_fit: each half of the normal run streamed with the
    models of the other half); predictive: the F tail that carries the fitted scale's uncertainty."""
    changes = []
    for transport in references:
        ref = run_stream(transport, server, replace(stream, reset_on_alert=False))
        changes += [w.change for w in ref.windows if w.change is not None]
    if len(changes) < 2:
        raise ConfigError(f"the alert reference gives {len(changes)} change test windows; it needs at least 2 "
                          f"(at least {stream.window + 2 * stream.stride} samples)")  # fmt: skip
    statistic = np.concatenate([c.statistic.ravel() for c in changes])
    dof = np.concatenate([c.dof.ravel() for c in changes])
    return fit_scaled_chi2(statistic, dof, predictive=predictive)


def _embed_block(A_full: np.ndarray, A_sub: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = A_full.copy()
    out[np.ix_(idx, idx)] = A_sub
    return out
