"""Checks on every message that crosses the client/server boundary, before it touches any state.

Server side (`validate_reply`): a reply, from whatever transport, must come from the client it was
asked of and answer the round it was asked for; carry the arrays its request needs, float64, finite,
states / pseudo-observations / gradients (T, D_m) and J (D_m, D_m); J = C^T R^{-1} C symmetric
positive definite (the newton rule solves with it, and a PSD-but-singular J means a state direction
the client does not observe) and, since it depends on the local model only, the same in every round;
a finite loss; and, in private runs, finite noise descriptions of the right shapes.

Client side (`validate_augmentation`): s_{1:T} is (T, D_m), float64, finite, and belongs to a
round after the last one the client answered.

Either raises InvalidMessage naming the client, the round, the field and the problem.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fedgc.errors import FedGCError

SYMMETRY_TOL = 1e-8  # relative: J is computed as C^T (R^{-1} C), symmetric up to rounding
INFORMATION_TOL = 1e-12  # relative change of J between rounds


class InvalidMessage(FedGCError):
    """A message that failed validation. direction: 'reply' (client -> server) or 'augmentation'."""

    def __init__(self, *, direction: str, client: str, round: int | None, field: str, problem: str) -> None:
        self.direction, self.client, self.round, self.field, self.problem = direction, client, round, field, problem
        where = "round ?" if round is None else f"round {round}"
        super().__init__(f"invalid {direction} for client '{client}', {where}: field '{field}' {problem}")


class ReplySpec(NamedTuple):
    """What the server expects of one reply."""

    client: str
    round: int
    n_steps: int
    state_dim: int
    request: str


def _problem_of_array(value: Any, shape: tuple[int, ...]) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"is {type(value).__name__}, not a numpy array"
    if value.dtype != np.float64:
        return f"has dtype {value.dtype}, expected float64"
    if value.shape != shape:
        return f"has shape {value.shape}, expected {shape}"
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if bad:
        return f"has {bad} non-finite value(s) (NaN or inf)"
    return None


def _problem_of_information(J: np.ndarray) -> str | None:
    scale = max(float(np.max(np.abs(J))), 1e-300)
    asym = float(np.max(np.abs(J - J.T)))
    if asym > SYMMETRY_TOL * scale:
        return f"is not symmetric (max |J - J^T| = {asym:.3g})"
    try:
        np.linalg.cholesky(0.5 * (J + J.T))
    except np.linalg.LinAlgError:
        return f"is not positive definite (smallest eigenvalue {np.linalg.eigvalsh(0.5 * (J + J.T))[0]:.3g})"
    return None


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def validate_reply(reply: Any, spec: ReplySpec, *, information: np.ndarray | None = None) -> None:
    """Raise InvalidMessage unless `reply` is a well-formed ClientReply for `spec`.
    information: J^m accepted earlier from this client (J must not change between rounds)."""

    def fail(field: str, problem: str) -> None:
        raise InvalidMessage(direction="reply", client=spec.client, round=spec.round, field=field, problem=problem)

    for name in ("states", "pseudo_obs", "information", "gradient", "loss", "noise", "client", "round"):
        if not hasattr(reply, name):
            fail(name, f"is missing (got a {type(reply).__name__})")
    if not isinstance(reply.client, str):
        fail("client", f"is {reply.client!r}, expected the client name '{spec.client}'")
    if reply.client != spec.client:
        fail("client", f"is '{reply.client}', expected '{spec.client}'")
    if not _is_int(reply.round) or int(reply.round) != spec.round:
        fail("round", f"is {reply.round!r}, expected {spec.round}")
    T, D = spec.n_steps, spec.state_dim
    needed = {"states": (T, D), "information": (D, D)}
    needed["gradient" if spec.request == "gd" else "pseudo_obs"] = (T, D)
    for name, shape in needed.items():
        value = getattr(reply, name)
        if value is None:
            fail(name, f"is missing (a '{spec.request}' reply needs it)")
        problem = _problem_of_array(value, shape)
        if problem:
            fail(name, problem)
    problem = _problem_of_information(reply.information)
    if problem:
        fail("information", problem)
    if information is not None:
        drift = float(np.max(np.abs(reply.information - information)))
        if drift > INFORMATION_TOL * max(float(np.max(np.abs(information))), 1e-300):
            fail(
                "information",
                f"changed since the client's first reply (max change {drift:.3g}); J depends on the local model only",
            )
    if not isinstance(reply.loss, (float, np.floating)) or not np.isfinite(reply.loss):
        fail("loss", f"is {reply.loss!r}, expected a finite float")
    if reply.noise is not None:
        if not all(hasattr(reply.noise, k) for k in ("state_cov", "cross_cov", "pseudo_obs_cov", "state_sensitivity")):
            fail("noise", f"is a {type(reply.noise).__name__}, not a privacy noise description")
        for name in ("state_cov", "cross_cov", "pseudo_obs_cov"):
            problem = _problem_of_array(getattr(reply.noise, name, None), (D, D))
            if problem:
                fail(f"noise.{name}", problem)
        sens = getattr(reply.noise, "state_sensitivity", None)
        if not isinstance(sens, (float, np.floating)) or not (np.isfinite(sens) and sens >= 0):
            fail("noise.state_sensitivity", f"is {sens!r}, expected a finite float >= 0")


def validate_augmentation(
    augmentation: Any, *, client: str, n_steps: int, state_dim: int, round_index: int | None, last_round: int | None
) -> np.ndarray:
    """The augmentation s_{1:T} (T, D_m) if valid, else InvalidMessage. round_index None: not checked
    (in-process callers); otherwise an integer >= 0 after last_round (the last round answered)."""

    def fail(field: str, problem: str) -> None:
        raise InvalidMessage(direction="augmentation", client=client, round=round_index, field=field, problem=problem)

    if round_index is not None:
        if not _is_int(round_index) or round_index < 0:
            fail("round", f"is {round_index!r}, expected an integer >= 0")
        if last_round is not None and round_index <= last_round:
            fail("round", f"is {round_index}, but round {last_round} was already answered")
    problem = _problem_of_array(augmentation, (n_steps, state_dim))
    if problem:
        fail("augmentation", problem)
    return augmentation
