"""The federated protocol, independent of transport.

Each round: the server sends every client its augmentation s_{1:T}^m, the clients
run their augmented filters and reply (ClientReply), the server updates A_s.
A transport (local calls here; Flower messages in clients/ and server/) only
has to move augmentations out and replies back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from fedgc.client import ClientReply, ClientSession, RequestKind
from fedgc.errors import ConfigError, FedGCError
from fedgc.granger import GCResult, granger_tests
from fedgc.server import (
    Blocks,
    RegressionStats,
    augmentations,
    gd_update,
    newton_update,
    next_relaxation,
    regression_stats,
    relative_change,
)


@dataclass(frozen=True)
class ServerConfig:
    """rule: 'newton' (exact least squares per round) or 'gd' (the paper's gradient step);
    diagonal: 'fixed' (local A^{mm} kept) or 'joint' (re-estimated with the cross blocks);
    penalty: group-lasso weight on ||A_s^{mn}||_F per time step; tol: relative change of A_s
    that stops the rounds; alpha: FDR level of the edges."""

    rule: Literal["newton", "gd"] = "newton"
    max_rounds: int = 20
    tol: float = 1e-6
    penalty: float = 0.0
    diagonal: Literal["fixed", "joint"] = "fixed"
    learning_rate: float | None = None
    alpha: float = 0.05
    burn_in: int = 1

    def __post_init__(self) -> None:
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


class Transport(Protocol):
    """Moves one round's messages. Replies come back in the order of `clients()`."""

    def clients(self) -> list[ClientInfo]: ...

    def exchange(self, augmentations: Sequence[np.ndarray], request: RequestKind) -> list[ClientReply]: ...


class LocalTransport:
    """The `local` engine: direct calls into ClientSession objects in this process."""

    def __init__(self, sessions: Sequence[ClientSession]) -> None:
        self.sessions = list(sessions)

    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(s.name, s.state_dim, s.n_steps) for s in self.sessions]

    def exchange(self, augmentations: Sequence[np.ndarray], request: RequestKind) -> list[ClientReply]:
        return [s.round(a, request) for s, a in zip(self.sessions, augmentations)]


class RoundRecord(NamedTuple):
    round: int
    loss: float
    change: float


@dataclass
class FitResult:
    """A_s: (D, D) final server matrix; history: one RoundRecord per server update."""

    gc: GCResult
    A_s: np.ndarray
    history: list[RoundRecord] = field(default_factory=list)
    converged: bool = False

    @property
    def rounds(self) -> int:
        return len(self.history)


def run_protocol(
    transport: Transport,
    config: ServerConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    stop_when: Callable[[np.ndarray], bool] | None = None,
    privacy=None,
) -> FitResult:
    """Run rounds until the relative change of A_s drops below config.tol (or stop_when(A_s) holds,
    or max_rounds), then test every ordered pair for Granger causality.

    privacy: a fedgc.privacy.server.ServerPrivacy: noise on every data-dependent augmentation and,
    if asked, the errors-in-variables correction of the statistics (known noise covariances) and the
    empirical-Bayes shrinkage of A_s (newton rule)."""
    if privacy is not None:
        from fedgc.privacy.server import debias_stats, privatise_augmentations, shrink_blocks

    def send(A: np.ndarray, states: list[np.ndarray], noises: list) -> list[np.ndarray]:
        clean = augmentations(A, states, blocks)
        return clean if privacy is None else privatise_augmentations(clean, A, blocks, noises, privacy)

    def finish(stats: RegressionStats, noises: list) -> RegressionStats:
        return debias_stats(stats, noises, blocks) if privacy is not None and privacy.debias else stats

    infos = transport.clients()
    names = [c.name for c in infos]
    lengths = {c.n_steps for c in infos}
    if len(lengths) != 1:
        detail = ", ".join(f"{c.name}: {c.n_steps}" for c in infos)
        raise ConfigError(f"clients have windows of different lengths ({detail}); align them first")
    blocks = Blocks.of([c.state_dim for c in infos])
    T = lengths.pop()
    A_s = np.zeros((blocks.total, blocks.total))
    zero = [np.zeros((T, d)) for d in blocks.dims]
    request: RequestKind = "newton" if config.rule == "newton" else "gd"
    replies = transport.exchange(zero, request)
    history: list[RoundRecord] = []
    converged = False
    omega = 1.0
    for r in range(1, config.max_rounds + 1):
        states = [rep.states for rep in replies]
        infos_J = [rep.information for rep in replies]
        if config.rule == "newton":
            stats = finish(
                regression_stats(states, [rep.pseudo_obs for rep in replies], burn_in=config.burn_in),
                [rep.noise for rep in replies],
            )
            try:
                A_new = newton_update(stats, infos_J, blocks, diagonal=config.diagonal, penalty=config.penalty, start=A_s)
            except np.linalg.LinAlgError as exc:
                losses = ", ".join(f"{h.loss:.3g}" for h in history[-4:])
                raise FedGCError(
                    f"round {r}: the clients' states are degenerate (their Gram matrix is not positive definite); "
                    f"the augmented filters have most likely diverged (last losses: {losses or 'n/a'}). The local "
                    "models may be too poor for the fixed-point rounds: try server.max_rounds: 1 or the gd rule"
                ) from exc
            if privacy is not None and privacy.shrink:
                A_new = shrink_blocks(A_new, stats, infos_J, blocks, diagonal=config.diagonal)
        else:
            A_new = gd_update(
                A_s, states, [rep.gradient for rep in replies], infos_J, blocks,
                diagonal=config.diagonal, learning_rate=config.learning_rate,
                penalty=config.penalty, burn_in=config.burn_in,
            )  # fmt: skip
        change = relative_change(A_new, A_s)
        record = RoundRecord(r, float(sum(rep.loss for rep in replies)), change)
        history.append(record)
        if on_round is not None:
            on_round(record)
        if config.rule == "newton":
            omega = next_relaxation(omega, change, history[-2].change if len(history) > 1 else np.inf)
        A_s = A_s + omega * (A_new - A_s) if omega < 1.0 else A_new
        if change < config.tol:
            converged = True
            break
        if stop_when is not None and stop_when(A_s):
            break
        if r == config.max_rounds:
            break
        replies = transport.exchange(send(A_s, states, [rep.noise for rep in replies]), request)
    if config.rule == "newton":
        final_stats = stats
    else:
        # The gd replies carry gradients only; one last exchange collects the statistics for the tests.
        states = [rep.states for rep in replies]
        replies = transport.exchange(send(A_s, states, [rep.noise for rep in replies]), "stats")
        final_stats = finish(
            regression_stats([rep.states for rep in replies], [rep.pseudo_obs for rep in replies], burn_in=config.burn_in),
            [rep.noise for rep in replies],
        )
    gc = granger_tests(final_stats, A_s, names, blocks, diagonal=config.diagonal, alpha=config.alpha)
    return FitResult(gc, A_s, history, converged)
