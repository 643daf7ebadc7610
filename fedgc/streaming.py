"""Streaming mode (DESIGN.md section 5): successive windows, carried filter states, forgotten statistics, alerts.

Windows. Window k covers samples [k S, k S + W) (W = window, S = step <= W). Every client runs its
augmented filter over the window from h_{kS-1}, the posterior state its last run of window k-1 left
there, so the filters never restart: with A_s fixed, windows give exactly one long filter run.

Forgotten statistics. The server's regression sums weight sample t by w_t: 1 inside the current
window, lambda^j once the sample left the window j steps ago (lambda = forgetting, per step of S
samples; lambda^(1/S) per sample). With W = S this is the recursion S_k = lambda S_{k-1} + N_k.
Weighted least squares keeps the newton rule unchanged (the per-step scale of a penalty is sum w).

Effective sample size. For weighted least squares with stationary regressors,
Var(beta_hat) = sigma^2 W (sum w^2 x x^T) W ~= sigma^2 (sum w^2 / sum w) W, W = (sum w x x^T)^{-1}, so
the restricted-minus-full residual sum is sigma^2 (sum w^2 / sum w) chi2_q while RSS ~= sigma^2 sum w:
the log-det statistic scales as chi2_q / N_eff with Kish's N_eff = (sum w)^2 / sum w^2. The GC tests
use N_eff where the batch test uses T (fedgc.granger's Bartlett factor N - K - ...). Steady state
with W = S: sum w = S / (1 - lambda), N_eff = S (1 + lambda) / (1 - lambda) (19 S at lambda = 0.9):
between sum w (conservative) and the sample count (anti-conservative, it grows without bound).

Alerts. In window k >= 1, for every ordered pair n -> m, a Chow-type Wald test of "block (m, n) in
the new window equals the forgotten estimate from before it":

    d = Gamma_new[:, n] - Gamma_past[:, n]      (D_m, D_n), Gamma = J^m B the z-space coefficients
    V = [X^T X]^{-1}_nn (new window) + (sum w^2 / sum w) [X^T W X]^{-1}_nn (past, Kish-scaled)
    Wald = tr(Sigma^{-1} d V^{-1} d^T) ~ chi2(D_m D_n),  Sigma: the new window's residual covariance

(the regressor-inverse blocks are the fixed-diagonal Schur complements of fedgc.server). The two
samples are disjoint, so under "no change" the estimates are independent. An alert is raised when
p < alert_alpha / (M (M - 1)) (Bonferroni over pairs): the chance of any false alert in a window is at
most alert_alpha, so a run of K windows expects at most K alert_alpha false alerts. Kind: the pair was
not an edge in the previous window (Benjamini-Hochberg on the forgotten statistics) and its block grew
-> 'appeared'; it was an edge and the new window alone no longer shows it (p > alpha) -> 'disappeared';
otherwise 'changed'. After an alert the server restarts its memory (reset_on_alert): the window's
estimate and tests use the new window only, later windows forget from there. That adapts at once to
the change and prevents the same change from alerting again while old data still dominate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from fedgc.client import ClientReply, ClientSession, RequestKind, run_filter
from fedgc.errors import ConfigError, DataError, FedGCError
from fedgc.granger import GCResult, chi2_log10_sf, granger_tests
from fedgc.protocol import ClientInfo, RoundRecord, ServerConfig, common_length
from fedgc.server import (
    Blocks,
    Diagonal,
    RegressionStats,
    augmentations,
    newton_update,
    next_relaxation,
    regression_stats,
    regressor_inverse_block,
    relative_change,
    row_fit,
    shared_inverse,
)

AlertKind = Literal["appeared", "disappeared", "changed"]


@dataclass(frozen=True)
class StreamingConfig:
    """window W and step S in samples (1 <= S <= W; S defaults to W); forgetting lambda in (0, 1] per step;
    alert_alpha: chance of any false alert per window (Bonferroni over the M (M - 1) pairs);
    max_rounds, tol: the protocol's rounds per window (warm-started from the previous window's A_s);
    reset_on_alert: restart the forgotten statistics at an alert."""

    window: int = 500
    step: int | None = None
    forgetting: float = 0.9
    alert_alpha: float = 0.01
    max_rounds: int = 10
    tol: float = 1e-4
    reset_on_alert: bool = True

    def __post_init__(self) -> None:
        if self.step is None:
            object.__setattr__(self, "step", self.window)
        for key in ("window", "step", "max_rounds"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"streaming.{key} must be a positive integer, got {v!r}")
        if self.step > self.window:
            raise ConfigError(f"streaming.step ({self.step}) must not exceed streaming.window ({self.window}): "
                              "every sample has to pass through a window")  # fmt: skip
        if not _number(self.forgetting) or not 0 < self.forgetting <= 1:
            raise ConfigError(f"streaming.forgetting must lie in (0, 1], got {self.forgetting!r}")
        if not _number(self.alert_alpha) or not 0 < self.alert_alpha < 1:
            raise ConfigError(f"streaming.alert_alpha must lie in (0, 1), got {self.alert_alpha!r}")
        if not _number(self.tol) or not self.tol > 0:
            raise ConfigError(f"streaming.tol must be > 0, got {self.tol!r}")
        if not isinstance(self.reset_on_alert, bool):
            raise ConfigError(f"streaming.reset_on_alert must be true or false, got {self.reset_on_alert!r}")

    def steady_effective_size(self) -> float:
        """N_eff once the memory is full, W = S: S (1 + lambda) / (1 - lambda) (inf at lambda = 1)."""
        lam = self.forgetting
        return float("inf") if lam >= 1 else self.step * (1 + lam) / (1 - lam) + (self.window - self.step)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def window_bounds(n_steps: int, window: int, step: int) -> list[tuple[int, int]]:
    """[start, end) of every full window; samples after the last full window are left out."""
    if n_steps < window:
        raise ConfigError(f"streaming.window ({window}) is longer than the data ({n_steps} samples)")
    return [(a, a + window) for a in range(0, n_steps - window + 1, step)]


# ---------------------------------------------------------------------------------------------- statistics


class ForgottenStats(NamedTuple):
    """Weighted regression sums sum_t w_t (x x^T, x z^T, z z^T) with w_t in (0, 1].

    stats: RegressionStats of the weighted sums (stats.n counts samples of any weight);
    weight: sum w_t;  weight_sq: sum w_t^2.
    """

    stats: RegressionStats
    weight: float
    weight_sq: float

    @classmethod
    def empty(cls, dim: int) -> "ForgottenStats":
        z = np.zeros((dim, dim))
        return cls(RegressionStats(z, z.copy(), z.copy(), 0), 0.0, 0.0)

    def plus(self, new: RegressionStats) -> "ForgottenStats":
        """Add unit-weight samples."""
        s = self.stats
        total = RegressionStats(s.gram + new.gram, s.cross + new.cross, s.zz + new.zz, s.n + new.n)
        return ForgottenStats(total, self.weight + new.n, self.weight_sq + new.n)

    def forget(self, lam: float) -> "ForgottenStats":
        """Every weight times lambda."""
        s = self.stats
        stats = RegressionStats(lam * s.gram, lam * s.cross, lam * s.zz, s.n)
        return ForgottenStats(stats, lam * self.weight, lam * lam * self.weight_sq)

    @property
    def effective_size(self) -> float:
        """Kish's (sum w)^2 / sum w^2."""
        return self.weight**2 / self.weight_sq if self.weight_sq > 0 else 0.0

    def for_fit(self) -> RegressionStats:
        """The sums with n = sum w: the per-step scale of the newton rule's penalty."""
        return self.stats._replace(n=self.weight)

    def for_tests(self) -> RegressionStats:
        """The sums with n = N_eff: the sample size of the GC tests' chi-square approximation."""
        return self.stats._replace(n=self.effective_size)


class ChangeTest(NamedTuple):
    """Wald tests of a change of block (m, n) between the past and the new window, (M, M) [target, source]."""

    statistic: np.ndarray
    dof: np.ndarray
    log10_pvalue: np.ndarray


def change_tests(past: ForgottenStats, new: RegressionStats, blocks: Blocks, diagonal: Diagonal) -> ChangeTest:
    """The Chow-type test of the module docstring, for every ordered pair."""
    M = len(blocks.dims)
    statistic, dof = np.full((M, M), np.nan), np.zeros((M, M), dtype=int)
    W_past, W_new = shared_inverse(past.stats.gram), shared_inverse(new.gram)
    kish = past.weight_sq / past.weight
    for m in range(M):
        fit_past = row_fit(past.stats, W_past, blocks, m, diagonal)
        fit_new = row_fit(new, W_new, blocks, m, diagonal)
        sigma = fit_new.rss / (new.n - fit_new.n_regressors)
        for n in range(M):
            if n == m:
                continue
            src = blocks.slice(n)
            d = fit_new.coef[:, src] - fit_past.coef[:, src]
            V = regressor_inverse_block(W_new, blocks, m, n, diagonal) + kish * regressor_inverse_block(
                W_past, blocks, m, n, diagonal
            )
            statistic[m, n] = float(np.trace(np.linalg.solve(sigma, d) @ np.linalg.solve(V, d.T)))
            dof[m, n] = blocks.dims[m] * blocks.dims[n]
    off = ~np.eye(M, dtype=bool)
    logp = np.full((M, M), np.nan)
    logp[off] = chi2_log10_sf(statistic[off], dof[off])
    return ChangeTest(statistic, dof, logp)


# ---------------------------------------------------------------------------------------------- clients


class StreamingSession(ClientSession):
    """A client over a stream: the whole series is projected once (C^T R^{-1} y_t is per sample), then
    `open_window` moves to the next window, starting the filter from the state it reached at start - 1."""

    def __init__(self, name: str, model, raw: np.ndarray, *, learn_theta: bool = False, theta_kind="linear",
                 privacy=None) -> None:  # fmt: skip
        if privacy is not None:
            raise ConfigError(f"client '{name}': streaming mode does not support privacy (turn one of them off)")
        super().__init__(name, model, raw, learn_theta=learn_theta, theta_kind=theta_kind)
        if self.window.gaps is not None:
            raise DataError(
                f"client '{name}': streaming mode needs complete measurements, but its data has missing values "
                "(NaN cells or held analyser values); fill them, or set held_values: keep, or run in batch mode"
            )
        self.stream = self.window
        self.span = (0, self.stream.ytil.shape[0])

    @property
    def stream_steps(self) -> int:
        return self.stream.ytil.shape[0]

    def open_window(self, start: int, end: int) -> None:
        if not 0 <= start < end <= self.stream_steps:
            raise FedGCError(f"client '{self.name}': window [{start}, {end}) is outside its {self.stream_steps} samples")
        if start == 0:
            h0 = np.zeros(self.state_dim)
        else:
            a, b = self.span
            if not a <= start - 1 < b:
                raise FedGCError(f"client '{self.name}': window [{start}, {end}) does not follow [{a}, {b}); "
                                 "the filter state at its start is unknown")  # fmt: skip
            h0 = self.states[start - 1 - a].copy()
        self.window = self.stream._replace(ytil=self.stream.ytil[start:end], yRy=self.stream.yRy[start:end])
        self.exact_window = self.window
        self.h0 = h0
        self.states = run_filter(self.window, np.zeros_like(self.window.ytil), h0)
        self.span = (start, end)


class StreamTransport(Protocol):
    """A Transport whose clients also move from window to window."""

    def clients(self) -> list[ClientInfo]: ...

    def open_window(self, start: int, end: int) -> None: ...

    def exchange(self, augmentations: Sequence[np.ndarray], request: RequestKind) -> list[ClientReply]: ...


class LocalStreamTransport:
    """The local engine's streaming transport: direct calls into StreamingSession objects."""

    def __init__(self, sessions: Sequence[StreamingSession]) -> None:
        self.sessions = list(sessions)

    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(s.name, s.state_dim, s.stream_steps) for s in self.sessions]

    def open_window(self, start: int, end: int) -> None:
        for s in self.sessions:
            s.open_window(start, end)

    def exchange(self, augmentations: Sequence[np.ndarray], request: RequestKind) -> list[ClientReply]:
        return [s.round(a, request) for s, a in zip(self.sessions, augmentations)]


# ---------------------------------------------------------------------------------------------- the stream


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


class WindowResult(NamedTuple):
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


class _WindowFit(NamedTuple):
    A_s: np.ndarray
    replies: list[ClientReply]
    new: RegressionStats
    records: list[RoundRecord]
    converged: bool
    exchanges: int


def _fit_window(transport, A_start, past: ForgottenStats, blocks: Blocks, server: ServerConfig,
                stream: StreamingConfig, *, h0, burn_in: int, n: int, on_round) -> _WindowFit:  # fmt: skip
    """Rounds over one window: local filters, one warm-start exchange with the previous A_s, then the
    newton fixed point on (memory + this window) until the relative change of A_s is below stream.tol."""
    replies = transport.exchange([np.zeros((n, d)) for d in blocks.dims], "newton")
    exchanges = 1
    A = A_start
    if np.any(A):
        replies = transport.exchange(augmentations(A, [r.states for r in replies], blocks, h0), "newton")
        exchanges += 1
    records: list[RoundRecord] = []
    omega, converged = 1.0, False
    for r in range(1, stream.max_rounds + 1):
        states = [rep.states for rep in replies]
        new = regression_stats(states, [rep.pseudo_obs for rep in replies], burn_in=burn_in, h0=h0)
        total = past.plus(new)
        A_new = newton_update(total.for_fit(), [rep.information for rep in replies], blocks,
                              diagonal=server.diagonal, penalty=server.penalty, start=A)  # fmt: skip
        change = relative_change(A_new, A)
        records.append(RoundRecord(r, float(sum(rep.loss for rep in replies)), change))
        if on_round is not None:
            on_round(records[-1])
        omega = next_relaxation(omega, change, records[-2].change if len(records) > 1 else np.inf)
        A = A + omega * (A_new - A) if omega < 1.0 else A_new
        if change < stream.tol:
            converged = True
            break
        if r == stream.max_rounds:
            break
        replies = transport.exchange(augmentations(A, states, blocks, h0), "newton")
        exchanges += 1
    return _WindowFit(A, replies, new, records, converged, exchanges)


def classify(before_edge: bool, strength_past: float, strength_new: float, new_significant: bool) -> AlertKind:
    """The kind of a significant change (module docstring)."""
    if not before_edge:
        return "appeared" if strength_new > strength_past else "changed"
    return "changed" if new_significant else "disappeared"


def run_stream(
    transport: StreamTransport,
    server: ServerConfig,
    stream: StreamingConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_window: Callable[[WindowResult, Sequence[Alert]], None] | None = None,
) -> StreamResult:
    """Every window in turn: fit A_s (warm start), test every pair on the forgotten statistics, test for
    changes against the memory, raise alerts, then fold the samples leaving the window into the memory."""
    if server.rule != "newton":
        raise ConfigError("streaming mode needs server.rule: newton (gd needs many rounds per window)")
    infos = transport.clients()
    names = tuple(c.name for c in infos)
    T = common_length(infos, "streams")
    blocks = Blocks.of([c.state_dim for c in infos])
    M = len(names)
    if stream.window - server.burn_in <= blocks.total + 1:
        raise ConfigError(f"streaming.window ({stream.window}) is too short for {blocks.total} stacked states: "
                          "each window must hold clearly more samples than regressors")  # fmt: skip
    bounds = window_bounds(T, stream.window, stream.step)
    threshold = np.log10(stream.alert_alpha / max(M * (M - 1), 1))
    past = ForgottenStats.empty(blocks.total)
    A = np.zeros((blocks.total, blocks.total))
    h0 = None
    previous: WindowResult | None = None
    windows, alerts, history = [], [], []
    for k, (a, b) in enumerate(bounds):
        transport.open_window(a, b)
        burn_in = server.burn_in if k == 0 else 0
        fit = _fit_window(transport, A, past, blocks, server, stream, h0=h0, burn_in=burn_in, n=b - a, on_round=on_round)
        A, new = fit.A_s, fit.new
        history += [r._replace(round=len(history) + i + 1) for i, r in enumerate(fit.records)]  # numbered over the run
        informations = [rep.information for rep in fit.replies]
        total = past.plus(new)
        gc = granger_tests(total.for_tests(), A, names, blocks, diagonal=server.diagonal, alpha=server.alpha)
        change, reset, raised = None, False, []
        if previous is not None and past.weight > 0:
            change = change_tests(past, new, blocks, server.diagonal)
            flagged = np.argwhere(change.log10_pvalue < threshold)
            if len(flagged):
                A_new = newton_update(new, informations, blocks, diagonal=server.diagonal, penalty=server.penalty, start=A)
                own = granger_tests(new, A_new, names, blocks, diagonal=server.diagonal, alpha=server.alpha)
                if stream.reset_on_alert:
                    A, gc, total, reset = A_new, own, ForgottenStats.empty(blocks.total).plus(new), True
                for m, n in flagged:
                    kind = classify(bool(previous.gc.edges[m, n]), previous.gc.strength[m, n], own.strength[m, n],
                                    bool(own.pvalue[m, n] < server.alpha))  # fmt: skip
                    raised.append(Alert(k, b, int(m), int(n), kind, float(previous.gc.strength[m, n]),
                                        float(gc.strength[m, n]), float(change.log10_pvalue[m, n])))  # fmt: skip
        result = WindowResult(k, a, b, gc, total.effective_size, total.weight, len(fit.records), fit.exchanges,
                              fit.converged, change, reset)  # fmt: skip
        windows.append(result)
        alerts += raised
        if on_window is not None:
            on_window(result, raised)  # the window and the alerts it raised
        if k + 1 == len(bounds):
            break
        # Memory for the next window: the samples leaving the window (the first `step`), then forgetting.
        leave = bounds[k + 1][0] - a
        states = [rep.states for rep in fit.replies]
        leaving = new if leave == b - a else regression_stats(
            [s[:leave] for s in states], [rep.pseudo_obs[:leave] for rep in fit.replies], burn_in=burn_in, h0=h0
        )  # fmt: skip
        base = ForgottenStats.empty(blocks.total) if reset else past
        past = base.plus(leaving).forget(stream.forgetting)
        h0 = [s[leave - 1].copy() for s in states]
        previous = result
    return StreamResult(names, windows, alerts, history, A, T)


__all__ = [
    "Alert", "ChangeTest", "ForgottenStats", "LocalStreamTransport", "StreamResult", "StreamingConfig",
    "StreamingSession", "WindowResult", "change_tests", "classify", "run_stream", "window_bounds",
]  # fmt: skip
