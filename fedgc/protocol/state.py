"""The server's protocol state between rounds: everything run_protocol needs to continue a run.

A round r of the protocol is: exchange r - 1 (augmentations computed from A_s after update r - 1
and the states of exchange r - 2; exchange 0 sends zeros) and then server update r. After update r
the state below determines every later message of the run, given the clients (whose replies are
deterministic functions of their data, their local model, their privatised window and, with theta
learned, their own theta):

    A_s, omega (relaxation), history      the iteration itself;
    exchanges                             exchanges done so far in the run (the next message's index);
    states (T, D_m) per client            the last replies' posterior states: the next augmentations;
    information, noise per client         J^m and privacy noise descriptions (the update needs them);
    stats                                 the last regression statistics (newton: the final GC tests);
    active, dropouts                      which clients are still in the run (server.on_dropout);
    secant                                server.acceleration's memory (fedgc.protocol.acceleration): a
                                          snapshot of the last round or the clients' response models;
                                          after a predicted update, A_s and states are the prediction;
    server_rng, noise_std                 the server's privacy Generator state and the noise levels
                                          used so far (augmentation noise): restoring the Generator
                                          makes a re-sent augmentation bit-identical to the one the
                                          crashed run may already have sent, so it is no new release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from fedgc.core.regression import RegressionStats
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.protocol.acceleration import SecantMemory


class RoundRecord(NamedTuple):
    round: int
    loss: float
    change: float


class Dropout(NamedTuple):
    """Client `client` gave no valid reply to the message of round `round` (0: the opening exchange)."""

    client: str
    round: int
    reason: str


@dataclass(frozen=True)
class ProtocolState:
    """Server state after `round` completed updates (module docstring). M clients, D = sum D_m.

    A_s: (D, D), rows and columns of dropped clients NaN (unknown);  states/information/noise: per
    client, None for dropped clients (and states None before the opening exchange);  stats: over the
    active clients' stacked layout, None before round 1 or for the gd rule;  finished: the rounds are
    over (converged, stopped, or max_rounds) and only the GC tests remain;  secant: None unless
    server.acceleration is on (and, within a fit, until its first exchange).
    """

    clients: tuple[str, ...]
    dims: tuple[int, ...]
    round: int
    A_s: np.ndarray
    exchanges: int = 0
    omega: float = 1.0
    history: tuple[RoundRecord, ...] = ()
    active: tuple[bool, ...] = ()
    dropouts: tuple[Dropout, ...] = ()
    states: tuple[np.ndarray | None, ...] = ()
    information: tuple[np.ndarray | None, ...] = ()
    noise: tuple[ReleaseNoise | None, ...] = ()
    stats: RegressionStats | None = None
    finished: bool = False
    converged: bool = False
    secant: SecantMemory | None = None
    server_rng: dict[str, Any] | None = None
    noise_std: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        M, D = len(self.clients), int(sum(self.dims))
        if len(self.dims) != M or self.A_s.shape != (D, D):
            raise ValueError(f"protocol state: {M} clients with dims {self.dims} but A_s {self.A_s.shape}")
        for name in ("active", "states", "information", "noise"):
            if len(getattr(self, name)) != M:
                raise ValueError(f"protocol state: '{name}' has {len(getattr(self, name))} entries for {M} clients")
        if self.round != len(self.history):
            raise ValueError(f"protocol state: round {self.round} with {len(self.history)} history records")

    @classmethod
    def initial(
        cls, clients: Sequence[str], dims: Sequence[int], *, A_s: np.ndarray | None = None, exchanges: int = 0,
        active: Sequence[bool] | None = None,
    ) -> ProtocolState:  # fmt: skip
        """Before the first exchange of a fit: A_s zero unless given (a warm start), every client active
        unless `active` says otherwise; exchanges: how many the run has made already."""
        M, D = len(clients), int(sum(dims))
        none = (None,) * M
        return cls(
            tuple(clients), tuple(int(d) for d in dims), 0, np.zeros((D, D)) if A_s is None else np.array(A_s, dtype=float),
            exchanges=int(exchanges), active=(True,) * M if active is None else tuple(bool(a) for a in active),
            states=none, information=none, noise=none,
        )  # fmt: skip

    @property
    def active_indices(self) -> list[int]:
        return [m for m, a in enumerate(self.active) if a]

    def evolve(self, **changes: Any) -> ProtocolState:
        return replace(self, **changes)
