"""The round loop, independent of transport; batch runs and every streaming window use it.

An exchange sends every active client its augmentation s_{1:T}^m (zeros before any states are
known), validates every reply (fedgc.protocol.validation) and applies the dropout policy
(fedgc.protocol.dropout). An update regresses on the replies (plus the forgotten memory of earlier
windows, in streaming mode) and moves A_s by the configured rule (fedgc.protocol.rules), or, with
server.acceleration, to the fixed point it predicts from the clients' identified response
(fedgc.protocol.acceleration). The loop alternates them until the relative change of A_s is below tol
or max_rounds updates are done:

    exchange 0 (zeros) [, exchange with the warm-start A_s] -> update 1 -> exchange 1 -> update 2 -> ...

Exchanges are numbered over the whole run (a client refuses an index it has answered), rounds
(updates) within one fit. A transport (local calls, or Flower messages in clients/ and server/) only
moves augmentations out and replies back.

The tests: the likelihood-ratio test on the final statistics (fedgc.core.granger), or with server.test
'siv' the snapshot IV test (fedgc.core.siv) on the snapshot series every client sent at setup; 'auto' here
takes SIV when every client sent one (the app asks clients for them when the run's test resolves to 'siv').
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from fedgc.core.forgetting import ForgottenStats
from fedgc.core.granger import GCResult, granger_tests
from fedgc.core.regression import (
    Blocks,
    RegressionStats,
    augmentations,
    next_relaxation,
    regression_stats,
    relative_change,
)
from fedgc.core.response import BaseRound
from fedgc.core.siv import SIVResult, siv_gc_result, siv_tests
from fedgc.errors import FedGCError, FedGCWarning
from fedgc.privacy.server import ServerPrivacy, debias_stats, privatise_augmentations, shrink_blocks
from fedgc.protocol.acceleration import Prediction, SecantMemory, Snapshot, predict
from fedgc.protocol.background import in_background
from fedgc.protocol.dropout import apply_policy, embed, embed_gc, state_indices
from fedgc.protocol.messages import ClientFailure, ClientInfo, ClientReply, RequestKind
from fedgc.protocol.rules import UpdateRule, rule_named
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.state import Dropout, ProtocolState, RoundRecord
from fedgc.protocol.transport import Transport, common_length
from fedgc.protocol.validation import InvalidMessage, ReplySpec, validate_reply

log = logging.getLogger("fedgc")
SAMPLES_PER_PARAMETER = 10  # fewer regression samples per coefficient of an equation: a warning


@dataclass
class FitResult:
    """A_s: (D, D) final server matrix (NaN rows/columns: clients that dropped out);
    history: one RoundRecord per server update; dropouts: clients that left the run, and when;
    resumed_from: the round of the checkpoint the run continued from, or None."""

    gc: GCResult
    A_s: np.ndarray
    history: list[RoundRecord] = field(default_factory=list)
    converged: bool = False
    dropouts: list[Dropout] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def rounds(self) -> int:
        return len(self.history)


class Span(NamedTuple):
    """What one fit regresses on. n_steps: T of the window; burn_in: leading steps left out of the sums;
    h0: per client the state before the window's first step (None: zero); past: forgotten statistics of
    earlier windows added to this window's (streaming), or None."""

    n_steps: int
    burn_in: int
    h0: tuple[np.ndarray, ...] | None = None
    past: ForgottenStats | None = None


class Limits(NamedTuple):
    """A fit stops after max_rounds updates, or once an update changes A_s by less than tol (relative)."""

    max_rounds: int
    tol: float


# Snapshot series (all clients, bytes) up to which the SIV test runs alongside the rounds. Its working set is
# about six times its series (instruments, fits, residuals, influence series), 1.5 GB for a year of 1-minute
# data from 20 sites (T = 525600, r = 3 each), which on top of the rounds' 2.5 GB broke a 4 GB budget.
SIV_ALONGSIDE_BYTES = 64 * 2**20


@dataclass
class Rounds:
    """One run's round machinery over a transport: who the clients are, the rule, privacy, hooks.

    privacy: noise on every data-dependent augmentation and, if asked, the errors-in-variables
    correction of the statistics and the empirical-Bayes shrinkage of A_s (fedgc.privacy.server).
    on_round(record) is called after every update; stop_when(A_s) may end a fit early (benchmarks).
    snapshots: per client its (T, r) snapshot series for the SIV test, or None (the LR test); siv_workers:
    threads of the SIV test (its lag candidates and its lags' moments; the same result on any number), which
    starts on a thread of its own as the rounds begin when every client sent its series (start_siv)."""

    transport: Transport
    config: ServerConfig
    names: list[str]
    full: Blocks
    privacy: ServerPrivacy | None = None
    on_round: Callable[[RoundRecord], None] | None = None
    stop_when: Callable[[np.ndarray], bool] | None = None
    snapshots: list[np.ndarray | None] | None = None
    siv_workers: int = 1
    rule: UpdateRule = field(init=False)
    siv_of_all: Future[SIVResult] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rule = rule_named(self.config.rule)

    def start_siv(self) -> None:
        """The SIV test of every client, computed while the rounds run (its series do not change), unless
        its series are large: then it runs after them (its working set, several copies of the series, would
        add to the rounds' memory)."""
        series = [x for x in self.snapshots or () if x is not None]
        small = sum(x.nbytes for x in series) <= SIV_ALONGSIDE_BYTES
        if self.snapshots is not None and len(series) == len(self.snapshots) >= 2 and small:
            self.siv_of_all = in_background(lambda: self.siv(series))

    def siv(self, series: Sequence[np.ndarray]) -> SIVResult:
        instruments = self.config.siv_instruments
        if self.siv_workers < 2:
            return siv_tests(series, instruments=instruments)
        with ThreadPoolExecutor(self.siv_workers, thread_name_prefix="fedgc-siv") as pool:
            return siv_tests(series, instruments=instruments, parallel_map=pool.map)

    def layout(self, st: ProtocolState) -> tuple[list[int], Blocks, np.ndarray]:
        """(active clients, their block layout, A_s restricted to them)."""
        members = st.active_indices
        idx = state_indices(self.full, members)
        return members, Blocks.of([self.full.dims[m] for m in members]), st.A_s[np.ix_(idx, idx)]

    def _h0(self, span: Span, members: Sequence[int]) -> list[np.ndarray] | None:
        return None if span.h0 is None else [span.h0[m] for m in members]

    def send(self, st: ProtocolState, span: Span) -> list[np.ndarray]:
        """Every active client's augmentation: zeros until states are known, else A_s applied to the
        last states (noised by the server's privacy mechanism when it has one)."""
        members, blocks, A = self.layout(st)
        known = [st.states[m] for m in members]
        states = [s for s in known if s is not None]
        if len(states) < len(known):
            return [np.zeros((span.n_steps, d)) for d in blocks.dims]
        clean = augmentations(A, states, blocks, self._h0(span, members))
        if self.privacy is None:
            return clean
        return privatise_augmentations(clean, A, blocks, [st.noise[m] for m in members], self.privacy)

    def exchange(
        self, st: ProtocolState, span: Span, kind: RequestKind
    ) -> tuple[ProtocolState, dict[int, ClientReply], list[np.ndarray | None]]:
        """Send exchange st.exchanges, validate every reply, apply the dropout policy. Returns the state, the
        valid replies and the augmentations sent (per client, None for those not asked)."""
        e, members = st.exchanges, st.active_indices
        augs: list[np.ndarray | None] = [None] * len(self.names)
        for m, a in zip(members, self.send(st, span)):
            augs[m] = a
        raw = list(self.transport.exchange(augs, kind, round_index=e))
        if len(raw) != len(self.names):
            raise FedGCError(f"round {e}: the transport returned {len(raw)} replies for {len(self.names)} clients")
        good: dict[int, ClientReply] = {}
        failed: list[Dropout] = []
        for m in members:
            reply = raw[m]
            if reply is None or isinstance(reply, ClientFailure):
                reason = "no reply" if reply is None else reply.reason
            else:
                try:
                    spec = ReplySpec(self.names[m], e, span.n_steps, self.full.dims[m], kind)
                    validate_reply(reply, spec, information=st.information[m])
                    good[m] = reply
                    continue
                except InvalidMessage as exc:
                    reason = f"reply rejected: field '{exc.field}' {exc.problem}"
            log.warning("round %d: client '%s': %s", e, self.names[m], reason)
            failed.append(Dropout(self.names[m], e, reason))
        if failed:
            active = apply_policy(self.config.on_dropout, failed, st.active, self.names, st.round)
            st = st.evolve(active=active, dropouts=st.dropouts + tuple(failed))
        every = range(len(self.names))  # dropped clients keep nothing: None
        st = st.evolve(
            exchanges=e + 1,
            states=tuple(good[m].states if m in good else None for m in every),
            information=tuple(good[m].information if m in good else None for m in every),
            noise=tuple(good[m].noise if m in good else None for m in every),
        )
        return st, good, augs

    def statistics(
        self, st: ProtocolState, replies: dict[int, ClientReply], blocks: Blocks, span: Span
    ) -> RegressionStats:
        """The regression sums of this window's replies (privacy noise removed when asked)."""
        members = st.active_indices
        stats = regression_stats(
            [replies[m].states for m in members], [replies[m].required("pseudo_obs") for m in members],
            burn_in=span.burn_in, h0=self._h0(span, members),
        )  # fmt: skip
        return self.debiased(stats, [replies[m] for m in members], blocks)

    def debiased(self, stats: RegressionStats, ordered: Sequence[ClientReply], blocks: Blocks) -> RegressionStats:
        if self.privacy is not None and self.privacy.debias:
            return debias_stats(stats, [r.noise for r in ordered], blocks)
        return stats

    @property
    def accelerated(self) -> bool:
        """server.acceleration applies: the rule solves least squares on pseudo-observations and the
        augmentations carry no noise (fedgc.protocol.acceleration)."""
        noisy = self.privacy is not None and self.privacy.noise_multiplier > 0
        return self.config.acceleration == "secant" and self.rule.request == "newton" and not noisy

    def image(
        self,
        st: ProtocolState,
        replies: dict[int, ClientReply],
        span: Span,
        A_old: np.ndarray,
        blocks: Blocks,
        stats: RegressionStats | None = None,
    ) -> tuple[np.ndarray, RegressionStats | None]:
        """The rule's next A_s from these replies and the window's statistics (those of the replies unless
        given; none when the rule does not use them); returns it with the statistics."""
        ordered = [replies[m] for m in st.active_indices]
        if stats is None and not self.rule.final_exchange:
            stats = self.statistics(st, replies, blocks, span)
        if stats is None or span.past is None:
            fit_stats = stats
        else:  # streaming: this window's sums plus the forgotten memory of the active clients
            fit_stats = span.past.restricted(state_indices(self.full, st.active_indices)).plus(stats).for_fit()
        A_new = self.rule.update(A_old, ordered, fit_stats, blocks, self.config)
        if self.privacy is not None and self.privacy.shrink and fit_stats is not None:
            informations = [r.required("information") for r in ordered]
            A_new = shrink_blocks(A_new, fit_stats, informations, blocks, diagonal=self.config.diagonal)
        return A_new, stats

    def observe(
        self, st: ProtocolState, replies: dict[int, ClientReply], sent: Sequence[np.ndarray | None]
    ) -> ProtocolState:
        """Show the accelerator an exchange's replies (no-op without acceleration)."""
        if not self.accelerated:
            return st
        memory = st.secant if st.secant is not None else SecantMemory.start(len(self.names))
        snapshots = {}
        for m, r in replies.items():
            aug = sent[m]
            assert aug is not None  # a client that replied was sent an augmentation
            snapshots[m] = Snapshot(r.states, r.required("pseudo_obs"), aug)
        return st.evolve(secant=memory.observed(snapshots))

    def update(
        self, st: ProtocolState, replies: dict[int, ClientReply], span: Span, limits: Limits,
        sent: Sequence[np.ndarray | None] = (),
    ) -> ProtocolState:  # fmt: skip
        """One server update of A_s from the replies of the last exchange (sent: its augmentations)."""
        members, blocks, A_old = self.layout(st)
        ordered = [replies[m] for m in members]
        try:
            A_new, stats = self.image(st, replies, span, A_old, blocks)
        except np.linalg.LinAlgError as exc:
            losses = ", ".join(f"{h.loss:.3g}" for h in st.history[-4:])
            raise FedGCError(
                f"round {st.round + 1}: the clients' states are degenerate (their Gram matrix is not positive "
                f"definite); the augmented filters have most likely diverged (last losses: {losses or 'n/a'}). The "
                "local models may be too poor for the fixed-point rounds: try server.max_rounds: 1 or the gd rule"
            ) from exc
        change = relative_change(A_new, A_old)
        record = RoundRecord(st.round + 1, float(sum(r.loss for r in ordered)), change)
        history = (*st.history, record)
        if self.on_round is not None:
            self.on_round(record)
        previous_change = history[-2].change if len(history) > 1 else np.inf
        st = self.observe(st, replies, sent)
        predicted = st.secant is not None and st.secant.predicted  # this round answered a prediction
        omega = st.omega
        if self.rule.relaxed and not predicted:  # a failed prediction is no oscillation of the plain map
            omega = next_relaxation(omega, change, previous_change)
        A_full = embed(A_old + omega * (A_new - A_old) if omega < 1.0 else A_new, self.full, members)
        converged = change < limits.tol
        stopped = self.stop_when is not None and self.stop_when(A_full)
        finished = converged or stopped or record.round == limits.max_rounds
        states, secant = st.states, None if st.secant is None else st.secant.judged(change, previous_change)
        if secant is not None and secant.status == "ready" and not finished:
            step = self.prediction(st, secant, replies, sent, span, A_new, limits.tol)
            if step is None or not step.converged:  # the models do not describe these clients well enough
                secant = secant.off()
            else:
                A_full, secant = embed(step.A_s, self.full, members), replace(secant, predicted=True)
                states = tuple(step.states[members.index(m)] if m in members else None for m in range(len(self.names)))
        return st.evolve(
            round=record.round, A_s=A_full, omega=omega, history=history, stats=stats, states=states,
            finished=finished, converged=converged, secant=secant,
            server_rng=None if self.privacy is None else dict(self.privacy.rng.bit_generator.state),
            noise_std=() if self.privacy is None else tuple(float(x) for x in self.privacy.noise_std),
        )  # fmt: skip

    def prediction(
        self, st: ProtocolState, secant: SecantMemory, replies: dict[int, ClientReply],
        sent: Sequence[np.ndarray | None], span: Span, A_new: np.ndarray, tol: float,
    ) -> Prediction | None:  # fmt: skip
        """The accelerated step about this round (fedgc.protocol.acceleration.predict), solved to a fraction
        of tol; None when that solve fails."""
        members, blocks, _ = self.layout(st)
        models, augs = [], []
        for m in members:
            model, aug = secant.models[m], sent[m] if m < len(sent) else None
            if model is None or aug is None:
                return None
            models.append(model)
            augs.append(aug)
        ordered = [replies[m] for m in members]
        h0 = self._h0(span, members) or [np.zeros(d) for d in blocks.dims]
        base = BaseRound([r.states for r in ordered], [r.required("pseudo_obs") for r in ordered], augs, h0)

        def image(sums: RegressionStats, A: np.ndarray) -> np.ndarray:
            return self.image(st, replies, span, A, blocks, stats=self.debiased(sums, ordered, blocks))[0]

        return predict(models, base, blocks, image, A_new, burn_in=span.burn_in, tol=tol)

    def fit(
        self, st: ProtocolState, span: Span, limits: Limits, *,
        on_checkpoint: Callable[[ProtocolState], None] | None = None,
    ) -> tuple[ProtocolState, dict[int, ClientReply]]:  # fmt: skip
        """Exchanges and updates from `st` until the fit is finished; returns the final state and the
        replies of the last exchange. A fresh state with a nonzero A_s (a warm start) first exchanges the
        zero augmentation (the window's own states), then A_s's augmentations, before the first update."""
        replies: dict[int, ClientReply] = {}
        warm = st.round == 0 and bool(np.any(np.nan_to_num(st.A_s)))
        keep = self.accelerated  # the augmentations sent are only kept for the accelerator
        while not st.finished:
            st, replies, sent = self.exchange(st, span, self.rule.request)
            if warm:
                st = self.observe(st, replies, sent)
                st, replies, sent = self.exchange(st, span, self.rule.request)
                warm = False
            st = self.update(st, replies, span, limits, sent if keep else ())
            if on_checkpoint is not None:
                on_checkpoint(st)
        return st, replies

    def final_statistics(self, st: ProtocolState, span: Span) -> tuple[ProtocolState, RegressionStats]:
        """The statistics the Granger tests use: the last update's, or (rules whose replies carry none)
        those of one more exchange."""
        if not self.rule.final_exchange:
            if st.stats is None:
                raise FedGCError("the run ended before any server update; nothing to test")
            return st, st.stats
        st, replies, _ = self.exchange(st, span, "stats")
        return st, self.statistics(st, replies, self.layout(st)[1], span)

    def tests(self, st: ProtocolState, stats: RegressionStats) -> GCResult:
        """Granger tests of every ordered pair of the active clients, embedded over all clients: the SIV test
        when the clients sent snapshot series (the LR test only as its fallback under 'auto'), else the LR test."""
        members, blocks, A_s = self.layout(st)
        names = [self.names[m] for m in members]
        gc = None
        if self.snapshots is not None and len(members) >= 2:
            gc = self.siv_gc(members, [self.snapshots[m] for m in members], blocks, A_s)
        if gc is None:
            gc = granger_tests(stats, A_s, names, blocks, diagonal=self.config.diagonal, alpha=self.config.alpha)
        if len(members) < len(self.names):
            gc = embed_gc(gc, self.names, self.full.dims, members, st.A_s)
        return gc

    def siv_gc(
        self, members: list[int], series: list[np.ndarray | None], blocks: Blocks, A_s: np.ndarray
    ) -> GCResult | None:
        """The SIV test's result over the members (series: their snapshot series); None when it cannot run
        and the run's test is 'auto'."""
        missing = [self.names[m] for m, x in zip(members, series) if x is None]
        if missing:
            raise FedGCError(
                f"client(s) {missing} sent no snapshot series, which the SIV test (server.test: siv) needs"
            )
        try:
            if self.siv_of_all is not None and len(members) == len(self.names):
                result = self.siv_of_all.result()
            else:  # clients dropped out: the test of those left
                result = self.siv([x for x in series if x is not None])
        except ValueError as exc:
            if self.config.test == "siv":
                raise FedGCError(f"the SIV test cannot run on the clients' snapshot series: {exc}") from exc
            log.warning(
                "the SIV test cannot run on the clients' snapshot series (%s); the p-values are the LR test's", exc
            )
            return None
        names = [self.names[m] for m in members]
        return siv_gc_result(result, clients=names, blocks=blocks, A_s=A_s, alpha=self.config.alpha)


def run_protocol(
    transport: Transport,
    config: ServerConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    stop_when: Callable[[np.ndarray], bool] | None = None,
    privacy: ServerPrivacy | None = None,
    resume: ProtocolState | None = None,
    on_checkpoint: Callable[[ProtocolState], None] | None = None,
    siv_workers: int = 1,
) -> FitResult:
    """A batch run: rounds until the relative change of A_s drops below config.tol (or max_rounds, or
    stop_when(A_s)), then a Granger test of every ordered pair.

    resume: the ProtocolState of an interrupted run (fedgc.app.checkpoint) to continue from;
    on_checkpoint(state): called with the state after every server update. A client without a valid
    reply is handled by config.on_dropout (fedgc.protocol.dropout). siv_workers: threads of the SIV test,
    which runs alongside the rounds."""
    infos = transport.clients()
    names = [c.name for c in infos]
    full = Blocks.of([c.state_dim for c in infos])
    span = Span(common_length(infos, "windows"), config.burn_in)
    warn_small_sample(full.dims, span, config.diagonal)
    snapshots = snapshot_series(infos, config.test, span.n_steps)
    if snapshots is not None and privacy is not None:
        raise FedGCError("the SIV test's snapshot series are not an accounted release; a private run uses the LR test")
    rounds = Rounds(transport, config, names, full, privacy=privacy, on_round=on_round, stop_when=stop_when,
                    snapshots=snapshots, siv_workers=siv_workers)  # fmt: skip
    rounds.start_siv()
    state = ProtocolState.initial(names, full.dims) if resume is None else _resume(resume, names, full.dims, privacy)
    state, _ = rounds.fit(state, span, Limits(config.max_rounds, config.tol), on_checkpoint=on_checkpoint)
    state, stats = rounds.final_statistics(state, span)
    return FitResult(
        rounds.tests(state, stats), state.A_s, list(state.history), state.converged, list(state.dropouts),
        None if resume is None else resume.round,
    )  # fmt: skip


def snapshot_series(infos: Sequence[ClientInfo], test: str, n_steps: int) -> list[np.ndarray | None] | None:
    """The clients' snapshot series for the SIV test, checked ((T, r) float64, finite, r >= 1), or None for the
    LR test: test 'lr', or 'auto' when a client sent none. FedGCError naming the client for a bad one. Under
    'siv' a client without one (a node that was dead when a run resumed) is None here; the test refuses it
    only if it is still a member when the tests run (Rounds.tests)."""
    if test == "lr" or (test == "auto" and any(i.snapshot is None for i in infos)):
        return None
    out: list[np.ndarray | None] = []
    for info in infos:
        x = info.snapshot
        if x is None:
            out.append(None)
            continue
        if (
            not isinstance(x, np.ndarray)
            or x.dtype != np.float64
            or x.ndim != 2
            or x.shape[0] != n_steps
            or x.shape[1] < 1
        ):
            raise FedGCError(f"client '{info.name}': the snapshot series must be a ({n_steps}, r >= 1) float64 array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")  # fmt: skip
        if not np.all(np.isfinite(x)):
            raise FedGCError(f"client '{info.name}': the snapshot series has non-finite values")
        out.append(x)
    return out


def warn_small_sample(dims: Sequence[int], span: Span, diagonal: str) -> None:
    """A FedGCWarning when the regression has fewer than SAMPLES_PER_PARAMETER samples per coefficient of
    its largest equation (every client's states as regressors; a client's own ones too with diagonal
    joint): its p-values, hence the edges, are then unreliable."""
    samples = span.n_steps - span.burn_in
    total = int(sum(dims))
    coefficients = total - (min(dims) if diagonal == "fixed" and dims else 0)
    if coefficients <= 0 or samples >= SAMPLES_PER_PARAMETER * coefficients:
        return
    warnings.warn(FedGCWarning(
        f"few samples for the Granger regression: {samples} time steps (T = {span.n_steps}, burn-in "
        f"{span.burn_in}) for {coefficients} coefficients per equation ({len(dims)} clients, {total} states in "
        f"all), {samples / coefficients:.1f} samples per coefficient (under {SAMPLES_PER_PARAMETER}): the p-values "
        f"and edges are unreliable; use a longer series (T >= {SAMPLES_PER_PARAMETER * coefficients + span.burn_in}) "
        "or fewer states per client (state_dim)"
    ), stacklevel=3)  # fmt: skip


def _resume(
    state: ProtocolState, names: list[str], dims: tuple[int, ...], privacy: ServerPrivacy | None
) -> ProtocolState:
    """Check a saved state against the clients that are here, restore the server's privacy Generator."""
    if list(state.clients) != names or tuple(state.dims) != tuple(dims):
        raise FedGCError(
            f"the checkpoint is of clients {list(state.clients)} with dims {list(state.dims)}, "
            f"but this run has {names} with dims {list(dims)}"
        )
    if privacy is not None:
        if state.round > 0 and state.server_rng is None:
            raise FedGCError("the checkpoint was written by a run without privacy; this run has privacy on")
        if state.server_rng is not None:
            privacy.rng.bit_generator.state = state.server_rng
        privacy.noise_std[:] = list(state.noise_std)
    return state
