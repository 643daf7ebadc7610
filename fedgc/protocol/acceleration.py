"""server.acceleration 'secant': fewer rounds by predicting the clients' response (fedgc.core.response).

The plain rounds are a fixed-point iteration that converges linearly (about 0.1 per round on the default
scenario, slower where the loop must relax). With acceleration, the server keeps a SecantMemory in the
protocol state:

    collecting   the last exchange's Snapshot per client (its states, pseudo-observations and the
                 augmentation it answered). The next exchange makes a pair, from which each client's
                 response model F, G, P is identified (batch: exchanges 0 and 1; a warm-started streaming
                 window: its zero and warm exchanges, so already its first update predicts).
    ready        after every update that does not finish the fit, the server solves the fixed point of
                 A_s -> newton(predicted states) about the last round (`predict`) and sends that A_s with
                 the predicted states instead of the plain step; the next round's replies judge it.
    off          a predicted round did not lower the change of A_s (the response was not linear: missing
                 data, a learned f_theta): plain rounds for the rest of the fit, from that round's replies.

The last update of a fit is always a plain one, so A_s and the statistics of the tests come from the same
replies, and a fit stops on the same test as without acceleration: an update that changes A_s by less
than tol. Exactly linear responses (f_theta the identity, no missing data) converge in three rounds.

Privacy: a prediction is computed from the replies and the augmentations already sent (post-processing
of the clients' releases); no client is asked for anything more. It is not used with augmentation noise,
whose calibration (fedgc.privacy.server) bounds lag(h^n) A_s^T for states h^n a client released, not
predicted states. What the server learns: F, G, P of a client are determined by any two of its replies,
so a server could always compute them; with acceleration it does (and keeps the pair in the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, NamedTuple, Sequence

import numpy as np
import scipy.linalg

from fedgc.core.regression import Blocks
from fedgc.core.response import ResponseModel, anderson_fixed_point, data_drive, identify_response, joint_states

ACCELERATIONS = ("secant", "none")
Status = Literal["collecting", "ready", "off"]

# The server-side solve: to INNER_TOL_FACTOR * tol (so the round after a prediction meets tol when the
# response model is exact), within MAX_EVALUATIONS evaluations of the newton update.
INNER_TOL_FACTOR = 0.01
MAX_EVALUATIONS = 60


class Snapshot(NamedTuple):
    """One client's side of an exchange: states, pseudo_obs (T, D_m), the augmentation it answered (T, D_m)."""

    states: np.ndarray
    pseudo_obs: np.ndarray
    augmentation: np.ndarray


@dataclass(frozen=True)
class SecantMemory:
    """The accelerator's state in the ProtocolState (module docstring); per-client tuples of length M.

    previous: while collecting, each client's last Snapshot (None: none yet, or dropped);
    models: once ready, each client's ResponseModel;  predicted: the state's A_s and states are a
    prediction, which the next update judges."""

    status: Status
    previous: tuple[Snapshot | None, ...]
    models: tuple[ResponseModel | None, ...]
    predicted: bool = False

    def __post_init__(self) -> None:
        if self.status not in ("collecting", "ready", "off"):
            raise ValueError(f"secant memory: unknown status {self.status!r}")
        if len(self.previous) != len(self.models):
            raise ValueError(f"secant memory: {len(self.previous)} snapshots for {len(self.models)} clients")

    @classmethod
    def start(cls, n_clients: int) -> "SecantMemory":
        return cls("collecting", (None,) * n_clients, (None,) * n_clients)

    def observed(self, snapshots: dict[int, Snapshot]) -> "SecantMemory":
        """After an exchange answered by the clients `snapshots` holds: while collecting, identify every
        one's response from its stored snapshot and this one; else (or if a fit is not finite) store these."""
        if self.status != "collecting":
            return self
        if all(self.previous[m] is not None for m in snapshots):
            models = list(self.models)
            for m, now in snapshots.items():
                before = self.previous[m]
                assert before is not None
                models[m] = identify_response(
                    now.states - before.states, now.augmentation - before.augmentation, now.pseudo_obs - before.pseudo_obs
                )
            if all(np.isfinite(models[m].residual) for m in snapshots):  # type: ignore[union-attr]
                return SecantMemory("ready", (None,) * len(models), tuple(models))
        return replace(self, previous=tuple(snapshots.get(m) for m in range(len(self.previous))))

    def judged(self, change: float, previous_change: float) -> "SecantMemory":
        """After the update that follows a prediction: off unless it lowered the change of A_s."""
        if not self.predicted:
            return self
        return replace(self, predicted=False, status="off" if not change < previous_change else self.status)


class Prediction(NamedTuple):
    """A_s (over the active clients' layout) and the states it is sent with (per active client, (T, D_m));
    residual: the relative change of the newton update at this A_s on the predicted states, converged:
    below INNER_TOL_FACTOR * tol;  evaluations: of the newton update."""

    A_s: np.ndarray
    states: list[np.ndarray]
    residual: float
    evaluations: int
    converged: bool


# image(states, pseudo_obs, A_s) -> the newton update of A_s on those replies (per active client).
Image = Callable[[list[np.ndarray], list[np.ndarray], np.ndarray], np.ndarray]


def predict(
    models: Sequence[ResponseModel], base: Sequence[Snapshot], h0: Sequence[np.ndarray], blocks: Blocks,
    image: Image, start: np.ndarray, *, tol: float,
) -> Prediction | None:  # fmt: skip
    """The fixed point A_s = image(predicted states) about the last round `base`, predicting the states of
    any A_s with the models (fedgc.core.response.joint_states); None if the update fails at `start`.
    Everything is over the active clients: models, base and h0 in their order, blocks their layout."""
    F = scipy.linalg.block_diag(*[m.transition for m in models])
    G = scipy.linalg.block_diag(*[m.input_gain for m in models])
    P = scipy.linalg.block_diag(*[m.lag_gain for m in models])
    H = np.hstack([b.states for b in base])
    Z = np.hstack([b.pseudo_obs for b in base])
    first = np.concatenate(list(h0))
    drive = data_drive(H, np.hstack([b.augmentation for b in base]), F, G, first)
    lag = np.vstack([first[None, :], H[:-1]])
    split = [blocks.slice(m) for m in range(len(blocks.dims))]

    last: list[tuple[np.ndarray, np.ndarray]] = []  # (A_s, its states) of the last evaluation

    def states(A: np.ndarray) -> np.ndarray:
        if last and last[0][0] is A:
            return last[0][1]
        Hx = joint_states(A, F, G, drive, first)
        last[:] = [(A, Hx)]
        return Hx

    def update(A: np.ndarray) -> np.ndarray:
        Hx = states(A)
        Zx = Z - (np.vstack([first[None, :], Hx[:-1]]) - lag) @ P.T
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.sum(Hx * Hx) + np.sum(Zx * Zx))  # then so is every regression sum
        if not finite:  # F + G A_s so unstable that the sums overflow: no prediction there
            return np.full_like(A, np.nan)
        return image([Hx[:, s] for s in split], [Zx[:, s] for s in split], A)

    fixed = anderson_fixed_point(update, start, tol=INNER_TOL_FACTOR * tol, max_evaluations=MAX_EVALUATIONS)
    if fixed is None:
        return None
    Hx = states(fixed.x)
    return Prediction(fixed.x, [np.ascontiguousarray(Hx[:, s]) for s in split], fixed.residual, fixed.evaluations,
                      fixed.converged)  # fmt: skip
