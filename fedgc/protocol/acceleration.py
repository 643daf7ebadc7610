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
                 data, a learned f_theta), or the server's solve did not converge: plain rounds for the rest
                 of the fit, from that round's replies.

The last update of a fit is always a plain one, so A_s and the statistics of the tests come from the same
replies, and a fit stops on the same test as without acceleration: an update that changes A_s by less
than tol. Exactly linear responses (f_theta the identity, no missing data) converge in three rounds.

Privacy: a prediction is computed from the replies and the augmentations already sent (post-processing
of the clients' releases); no client is asked for anything more. It is not used with augmentation noise,
whose calibration (fedgc.privacy.server) bounds lag(h^n) A_s^T for states h^n a client released, not
predicted states. What the server learns: F, G, P of a client are determined by any two of its replies,
so a server could always compute them; with acceleration it does (and keeps the first IDENTIFY_ROWS steps
of one round's replies and augmentations in the checkpoint until it has).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np

from fedgc.core.regression import Blocks, RegressionStats
from fedgc.core.response import (
    BaseRound,
    ResponseModel,
    anderson_fixed_point,
    identify_response,
    prepare_round,
    prepared_pass,
)

Status = Literal["collecting", "ready", "off"]

# The server-side solve: to INNER_TOL_FACTOR * tol (so the round after a prediction meets tol when the
# response model is exact), within MAX_EVALUATIONS evaluations of the newton update (each one pass over the
# window and one update: about the server's work in one plain round); a solve that does not converge in
# them turns the accelerator off for the fit.
INNER_TOL_FACTOR = 0.01
MAX_EVALUATIONS = 40
# A client's response is identified from the first IDENTIFY_ROWS steps of the two rounds (exact for a linear
# time-invariant response from a few times 2 D_m steps): the snapshot the server keeps (and checkpoints)
# between them stays small whatever T is.
IDENTIFY_ROWS = 4096


class Snapshot(NamedTuple):
    """One client's side of an exchange: states, pseudo_obs, the augmentation it answered ((rows, D_m) each:
    the first IDENTIFY_ROWS steps, or all of them)."""

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
    def start(cls, n_clients: int) -> SecantMemory:
        return cls("collecting", (None,) * n_clients, (None,) * n_clients)

    def observed(self, snapshots: dict[int, Snapshot]) -> SecantMemory:
        """After an exchange answered by the clients `snapshots` holds: while collecting, identify every
        one's response from its stored snapshot and this one; else (or if a fit is not finite) store these."""
        if self.status != "collecting":
            return self
        snapshots = {m: Snapshot(*(np.array(x[:IDENTIFY_ROWS], dtype=np.float64) for x in snap))
                     for m, snap in snapshots.items()}  # fmt: skip
        if all(self.previous[m] is not None for m in snapshots):
            models = list(self.models)
            for m, now in snapshots.items():
                before = self.previous[m]
                assert before is not None
                models[m] = identify_response(
                    now.states - before.states, now.augmentation - before.augmentation,
                    now.pseudo_obs - before.pseudo_obs,
                )  # fmt: skip
            if all(np.isfinite(models[m].residual) for m in snapshots):  # type: ignore[union-attr]
                return SecantMemory("ready", (None,) * len(models), tuple(models))
        return replace(self, previous=tuple(snapshots.get(m) for m in range(len(self.previous))))

    def judged(self, change: float, previous_change: float) -> SecantMemory:
        """After the update that follows a prediction: off unless it lowered the change of A_s."""
        if not self.predicted:
            return self
        return replace(self, predicted=False, status="off" if not change < previous_change else self.status)

    def off(self) -> SecantMemory:
        return replace(self, status="off", predicted=False)


class Prediction(NamedTuple):
    """A_s (over the active clients' layout) and the states it is sent with (per active client, (T, D_m));
    residual: the relative change of the newton update at this A_s on the predicted states, converged:
    below INNER_TOL_FACTOR * tol;  evaluations: of the newton update."""

    A_s: np.ndarray
    states: list[np.ndarray]
    residual: float
    evaluations: int
    converged: bool


# image(sums, A_s) -> the rule's update of A_s from the regression sums of predicted replies.
Image = Callable[[RegressionStats, np.ndarray], np.ndarray]


def predict(
    models: Sequence[ResponseModel], base: BaseRound, blocks: Blocks, image: Image, start: np.ndarray, *,
    burn_in: int, tol: float,
) -> Prediction | None:  # fmt: skip
    """The fixed point A_s = image(sums of the replies predicted for A_s) about the round `base`
    (fedgc.core.response.joint_pass), solved from `start`; None if the update fails at `start`.
    Everything is over the active clients: models and base in their order, blocks their layout.
    The base round's part of the passes is computed once, and the states of the last A_s tried are kept:
    the solve ends on that A_s when it converges, so no pass is repeated for the states sent."""
    prepared = prepare_round(models, base, burn_in=burn_in)
    last: dict[str, np.ndarray | None] = {"A_s": None, "states": None}

    def update(A: np.ndarray) -> np.ndarray:
        sums, last["states"] = prepared_pass(A, prepared, keep=True)
        last["A_s"] = A
        if not all(np.all(np.isfinite(x)) for x in (sums.gram, sums.cross, sums.zz)):
            return np.full_like(A, np.nan)  # the joint recursion explodes for this A_s: no prediction there
        return image(sums, A)

    fixed = anderson_fixed_point(update, start, tol=INNER_TOL_FACTOR * tol, max_evaluations=MAX_EVALUATIONS)
    if fixed is None:
        return None
    if last["A_s"] is fixed.x:
        states = last["states"]
    else:  # the solve gave up on an earlier iterate
        _, states = prepared_pass(fixed.x, prepared, keep=True)
    assert states is not None
    split = [np.ascontiguousarray(states[:, blocks.slice(m)]) for m in range(len(blocks.dims))]
    return Prediction(fixed.x, split, fixed.residual, fixed.evaluations, fixed.converged)
