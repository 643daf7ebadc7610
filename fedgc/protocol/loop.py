"""The federated protocol, independent of transport.

Each round: the server sends every client its augmentation s_{1:T}^m, the clients
run their augmented filters and reply (ClientReply), the server updates A_s.
A transport (local calls here; Flower messages in clients/ and server/) only
has to move augmentations out and replies back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from fedgc.protocol.session import ClientReply, ClientSession, RequestKind
from fedgc.protocol.dropout import POLICIES, apply_policy, embed, embed_gc, state_indices
from fedgc.errors import ConfigError, FedGCError
from fedgc.core.granger import GCResult, granger_tests
from fedgc.core.regression import (
    Blocks,
    RegressionStats,
    augmentations,
    gd_update,
    newton_update,
    next_relaxation,
    regression_stats,
    relative_change,
)
from fedgc.protocol.state import Dropout, ProtocolState, RoundRecord
from fedgc.protocol.validation import InvalidMessage, ReplySpec, validate_reply

log = logging.getLogger("fedgc")


@dataclass(frozen=True)
class ServerConfig:
    """rule: 'newton' (exact least squares per round) or 'gd' (the paper's gradient step);
    diagonal: 'fixed' (local A^{mm} kept) or 'joint' (re-estimated with the cross blocks);
    penalty: group-lasso weight on ||A_s^{mn}||_F per time step; tol: relative change of A_s
    that stops the rounds; alpha: FDR level of the edges; on_dropout: what a client without a valid
    reply does to the run, 'stop' (error, last round kept) or 'continue' (without it; fedgc.protocol.dropout)."""

    rule: Literal["newton", "gd"] = "newton"
    max_rounds: int = 20
    tol: float = 1e-6
    penalty: float = 0.0
    diagonal: Literal["fixed", "joint"] = "fixed"
    learning_rate: float | None = None
    alpha: float = 0.05
    burn_in: int = 1
    on_dropout: Literal["stop", "continue"] = "stop"

    def __post_init__(self) -> None:
        if self.on_dropout not in POLICIES:
            raise ConfigError(f"server.on_dropout must be one of {POLICIES}, got {self.on_dropout!r}")
        if self.rule not in ("newton", "gd"):
            raise ConfigError(f"server.rule must be 'newton' or 'gd', got {self.rule!r}")
        if self.diagonal not in ("fixed", "joint"):
            raise ConfigError(f"server.diagonal must be 'fixed' or 'joint', got {self.diagonal!r}")
        if not (isinstance(self.max_rounds, int) and self.max_rounds >= 1):
            raise ConfigError(f"server.max_rounds must be a positive integer, got {self.max_rounds!r}")
        if not self.tol > 0:
            raise ConfigError(f"server.tol must be > 0, got {self.tol!r}")
        if self.penalty < 0:
            raise ConfigError(f"server.penalty must be >= 0, got {self.penalty!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"server.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"server.alpha must lie in (0, 1), got {self.alpha!r}")
        if not (isinstance(self.burn_in, int) and self.burn_in >= 1):
            raise ConfigError(f"server.burn_in must be an integer >= 1, got {self.burn_in!r}")


class ClientInfo(NamedTuple):
    name: str
    state_dim: int
    n_steps: int


class ClientFailure(NamedTuple):
    """What a transport returns in place of a reply it did not get (timeout, error reply, undecodable)."""

    client: str
    reason: str


class Transport(Protocol):
    """Moves one round's messages. Replies come back in the order of `clients()`; a None augmentation
    (a client that dropped out) is not sent and gets None back; round_index: the round of the message."""

    def clients(self) -> list[ClientInfo]: ...

    def exchange(
        self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None
    ) -> list[ClientReply | ClientFailure | None]: ...


class LocalTransport:
    """The `local` engine: direct calls into ClientSession objects in this process. A client that
    refuses a message (a FedGCError, e.g. an invalid augmentation) answers with a ClientFailure."""

    def __init__(self, sessions: Sequence[ClientSession]) -> None:
        self.sessions = list(sessions)

    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(s.name, s.state_dim, s.n_steps) for s in self.sessions]

    def exchange(self, augmentations, request: RequestKind, round_index: int | None = None):
        out: list[ClientReply | ClientFailure | None] = []
        for s, a in zip(self.sessions, augmentations):
            try:
                out.append(None if a is None else s.round(a, request, round_index))
            except FedGCError as exc:
                out.append(ClientFailure(s.name, f"failed: {exc}"))
        return out


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


def common_length(infos: Sequence[ClientInfo], what: str) -> int:
    """The number of steps every client has; ConfigError naming each client's when they differ."""
    lengths = {c.n_steps for c in infos}
    if len(lengths) != 1:
        detail = ", ".join(f"{c.name}: {c.n_steps}" for c in infos)
        raise ConfigError(f"clients have {what} of different lengths ({detail}); align them first")
    return lengths.pop()


def run_protocol(
    transport: Transport,
    config: ServerConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    stop_when: Callable[[np.ndarray], bool] | None = None,
    privacy=None,
    resume: ProtocolState | None = None,
    on_checkpoint: Callable[[ProtocolState], None] | None = None,
) -> FitResult:
    """Run rounds until the relative change of A_s drops below config.tol (or stop_when(A_s) holds,
    or max_rounds), then test every ordered pair for Granger causality.

    privacy: a fedgc.privacy.server.ServerPrivacy: noise on every data-dependent augmentation and,
    if asked, the errors-in-variables correction of the statistics (known noise covariances) and the
    empirical-Bayes shrinkage of A_s (newton rule).
    resume: the ProtocolState of an interrupted run (fedgc.app.checkpoint) to continue from;
    on_checkpoint(state): called with the state after every server update.
    Every reply is validated (fedgc.protocol.validation) before it touches the state; a client without a valid
    reply is handled by config.on_dropout (fedgc.protocol.dropout)."""
    if privacy is not None:
        from fedgc.privacy.server import debias_stats, privatise_augmentations, shrink_blocks

    infos = transport.clients()
    names = [c.name for c in infos]
    T = common_length(infos, "windows")
    full = Blocks.of([c.state_dim for c in infos])
    request: RequestKind = "newton" if config.rule == "newton" else "gd"
    state = ProtocolState.initial(names, full.dims) if resume is None else _resume(resume, names, full.dims, privacy)

    def layout(st: ProtocolState) -> tuple[list[int], Blocks, np.ndarray]:
        """(active clients, their block layout, A_s restricted to them)."""
        members = st.active_indices
        idx = state_indices(full, members)
        return members, Blocks.of([full.dims[m] for m in members]), st.A_s[np.ix_(idx, idx)]

    def send(st: ProtocolState) -> list[np.ndarray]:
        members, blocks, A = layout(st)
        if st.round == 0:
            return [np.zeros((T, d)) for d in blocks.dims]
        clean = augmentations(A, [st.states[m] for m in members], blocks)
        if privacy is None:
            return clean
        return privatise_augmentations(clean, A, blocks, [st.noise[m] for m in members], privacy)

    def exchange(st: ProtocolState, kind: RequestKind) -> tuple[ProtocolState, dict[int, ClientReply]]:
        """Send round st.round's augmentations, validate every reply, apply the dropout policy."""
        e, members = st.round, st.active_indices
        augs: list[np.ndarray | None] = [None] * len(names)
        for m, a in zip(members, send(st)):
            augs[m] = a
        raw = list(transport.exchange(augs, kind, round_index=e))
        if len(raw) != len(names):
            raise FedGCError(f"round {e}: the transport returned {len(raw)} replies for {len(names)} clients")
        good: dict[int, ClientReply] = {}
        failed: list[Dropout] = []
        for m in members:
            reply = raw[m]
            if reply is None or isinstance(reply, ClientFailure):
                reason = "no reply" if reply is None else reply.reason
            else:
                try:
                    validate_reply(reply, ReplySpec(names[m], e, T, full.dims[m], kind), information=st.information[m])
                    good[m] = reply
                    continue
                except InvalidMessage as exc:
                    reason = f"reply rejected: field '{exc.field}' {exc.problem}"
            log.warning("round %d: client '%s': %s", e, names[m], reason)
            failed.append(Dropout(names[m], e, reason))
        if failed:
            active = apply_policy(config.on_dropout, failed, st.active, names, st.round)
            st = st.evolve(active=active, dropouts=st.dropouts + tuple(failed))
        every = range(len(names))  # dropped clients keep nothing: None
        st = st.evolve(
            states=tuple(good[m].states if m in good else None for m in every),
            information=tuple(good[m].information if m in good else None for m in every),
            noise=tuple(good[m].noise if m in good else None for m in every),
        )
        return st, good

    def statistics(st: ProtocolState, replies: dict[int, ClientReply], blocks: Blocks) -> RegressionStats:
        members = st.active_indices
        stats = regression_stats(
            [replies[m].states for m in members], [replies[m].pseudo_obs for m in members], burn_in=config.burn_in
        )
        if privacy is not None and privacy.debias:
            stats = debias_stats(stats, [replies[m].noise for m in members], blocks)
        return stats

    def update(st: ProtocolState, replies: dict[int, ClientReply]) -> ProtocolState:
        members, blocks, A_old = layout(st)
        infos_J = [replies[m].information for m in members]
        stats = None
        if config.rule == "newton":
            stats = statistics(st, replies, blocks)
            try:
                A_new = newton_update(stats, infos_J, blocks, diagonal=config.diagonal, penalty=config.penalty, start=A_old)
            except np.linalg.LinAlgError as exc:
                losses = ", ".join(f"{h.loss:.3g}" for h in st.history[-4:])
                raise FedGCError(
                    f"round {st.round + 1}: the clients' states are degenerate (their Gram matrix is not positive "
                    f"definite); the augmented filters have most likely diverged (last losses: {losses or 'n/a'}). The "
                    "local models may be too poor for the fixed-point rounds: try server.max_rounds: 1 or the gd rule"
                ) from exc
            if privacy is not None and privacy.shrink:
                A_new = shrink_blocks(A_new, stats, infos_J, blocks, diagonal=config.diagonal)
        else:
            A_new = gd_update(
                A_old, [replies[m].states for m in members], [replies[m].gradient for m in members], infos_J, blocks,
                diagonal=config.diagonal, learning_rate=config.learning_rate,
                penalty=config.penalty, burn_in=config.burn_in,
            )  # fmt: skip
        change = relative_change(A_new, A_old)
        record = RoundRecord(st.round + 1, float(sum(replies[m].loss for m in members)), change)
        history = st.history + (record,)
        if on_round is not None:
            on_round(record)
        omega = st.omega
        if config.rule == "newton":
            omega = next_relaxation(omega, change, history[-2].change if len(history) > 1 else np.inf)
        A_full = embed(A_old + omega * (A_new - A_old) if omega < 1.0 else A_new, full, members)
        converged = change < config.tol
        finished = converged or (stop_when is not None and stop_when(A_full)) or record.round == config.max_rounds
        return st.evolve(
            round=record.round, A_s=A_full, omega=omega, history=history, stats=stats, finished=finished,
            converged=converged, server_rng=None if privacy is None else dict(privacy.rng.bit_generator.state),
            noise_std=() if privacy is None else tuple(float(x) for x in privacy.noise_std),
        )  # fmt: skip

    while not state.finished:
        state, replies = exchange(state, request)
        state = update(state, replies)
        if on_checkpoint is not None:
            on_checkpoint(state)
    if config.rule == "newton":
        final_stats = state.stats
    else:
        # The gd replies carry gradients only; one last exchange collects the statistics for the tests.
        state, replies = exchange(state, "stats")
        final_stats = statistics(state, replies, layout(state)[1])
    members, blocks, A_s = layout(state)
    gc = granger_tests(final_stats, A_s, [names[m] for m in members], blocks, diagonal=config.diagonal, alpha=config.alpha)
    if len(members) < len(names):
        gc = embed_gc(gc, names, full.dims, members, state.A_s)
    return FitResult(
        gc, state.A_s, list(state.history), state.converged, list(state.dropouts), None if resume is None else resume.round
    )


def _resume(state: ProtocolState, names: list[str], dims: tuple[int, ...], privacy) -> ProtocolState:
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
