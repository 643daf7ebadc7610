"""A client's mutable round state over a window: its (privatised) window, theta and last states.

The maths lives in fedgc.core.window (the augmented filter, pseudo-observations, loss) and
fedgc.core.theta (f_theta); a session only sequences them and answers the server's requests.
A StreamingSession moves over a long series window by window, its filter never restarting.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedgc.core.local_model import LocalModel
from fedgc.core.window import ClientWindow, lagged, prediction_loss, prepare_window, pseudo_observations, run_filter
from fedgc.errors import ConfigError, DataError, FedGCError
from fedgc.privacy.local import ClientPrivacy, privatise_window
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.protocol.messages import REPLY_FIELDS, ClientReply, ReleaseFigures, RequestKind
from fedgc.protocol.validation import validate_augmentation

if TYPE_CHECKING:
    from fedgc.core.theta import ThetaFunction

ThetaKind = Literal["linear", "mlp"]
# The module of each form of f_theta (the `client.theta` setting). It needs torch, so it is looked up by name
# when a client learns f_theta (learnable_theta), and a run that keeps f_theta the identity never imports torch.
THETA_MODULES: dict[str, str] = {"linear": "fedgc.core.theta", "mlp": "fedgc.core.theta"}


def learnable_theta(dim: int, kind: ThetaKind) -> ThetaFunction:
    """f_theta of form `kind` for a client that learns it (its ThetaFunction, from THETA_MODULES)."""
    if kind not in THETA_MODULES:
        raise ConfigError(f"client.theta must be one of {tuple(THETA_MODULES)}, got {kind!r}")
    theta_class: type[ThetaFunction] = importlib.import_module(THETA_MODULES[kind]).ThetaFunction
    return theta_class(dim, kind)


class ClientSession:
    """One client's mutable round state over a fixed window: its theta and last states."""

    def __init__(
        self,
        name: str,
        model: LocalModel,
        raw: np.ndarray,
        *,
        learn_theta: bool = False,
        theta_kind: ThetaKind = "linear",
        privacy: ClientPrivacy | None = None,
        snapshot: np.ndarray | None = None,
    ) -> None:
        """privacy: the raw window is then clipped and privatised here, once, and every later release
        is computed from the privatised window only (then there is no exact window: nothing computed from
        the raw data stays in the session). snapshot: (T, r) the client's snapshot series (fedgc.core.snapshots,
        computed from its raw data by the caller) that the setup reply carries when the test is SIV; a private
        client has none (it is not an accounted release)."""
        if snapshot is not None and privacy is not None:
            raise ConfigError(
                f"client '{name}': a private client cannot send a snapshot series (not an accounted release)"
            )
        self.name = name
        self.snapshot = None if snapshot is None else np.ascontiguousarray(snapshot, dtype=np.float64)
        self.model = model
        self.noise: ReleaseNoise | None = None
        self.release: ReleaseFigures | None = None  # a private client's noise std, clip and signal-to-noise
        self.exact_window: ClientWindow | None
        if privacy is None:
            self.window = prepare_window(model, raw, name)
            self.exact_window = self.window  # for the in-process oracle only (evaluation); never released
        else:
            missing = int(np.isnan(np.asarray(raw, dtype=float)).any(axis=1).sum())
            if missing:
                raise DataError(
                    f"client '{name}': {missing} step(s) have missing measurements; a private run needs complete "
                    "data (its sensitivity bounds assume the steady-state gain): fill or drop those rows first"
                )
            private = privatise_window(model, raw, privacy, client=name)
            self.window, self.noise = private.window, private.noise
            self.release = ReleaseFigures(private.noise_std, private.clip, private.signal_to_noise)
            self.exact_window = None
        # theta is None while f_theta is the identity (not learned): no torch on the hot path.
        self.theta = learnable_theta(model.state_dim, theta_kind) if learn_theta else None
        self.h0 = np.zeros(model.state_dim)
        self.states = run_filter(self.window, np.zeros_like(self.window.ytil), self.h0)
        self.last_round: int | None = None

    @property
    def learn_theta(self) -> bool:
        return self.theta is not None

    @property
    def state_dim(self) -> int:
        return self.model.state_dim

    @property
    def n_steps(self) -> int:
        """Steps of the current window."""
        return int(self.window.ytil.shape[0])

    @property
    def series_steps(self) -> int:
        """Steps of the client's whole series (the window, for a batch client)."""
        return self.n_steps

    def round(
        self, augmentation: np.ndarray, request: RequestKind = "newton", round_index: int | None = None
    ) -> ClientReply:
        """Take s_{1:T} (T, D), run the augmented filter, return the reply the request asks for
        (fedgc.protocol.messages.REPLY_FIELDS). A malformed augmentation (shape, dtype, non-finite, a round
        already answered) raises fedgc.protocol.validation.InvalidMessage before any state changes."""
        if request not in REPLY_FIELDS:
            raise ValueError(f"client '{self.name}': unknown request kind {request!r}")
        s = validate_augmentation(
            augmentation, client=self.name, n_steps=self.n_steps, state_dim=self.state_dim,
            round_index=round_index, last_round=self.last_round,
        )  # fmt: skip
        if round_index is not None:
            self.last_round = int(round_index)
        if self.theta is not None:
            self.theta.fit(self.window, s, lagged(self.states, self.h0))
        u = s if self.theta is None else self.theta.apply(s)
        self.states = run_filter(self.window, u, self.h0)
        prev = lagged(self.states, self.h0)
        priors = prev @ self.window.A.T + u
        loss = prediction_loss(self.window, priors)
        z = pseudo_observations(self.window, prev, u)
        if "gradient" not in REPLY_FIELDS[request]:
            return ClientReply(self.states, z, self.window.J, None, loss, self.noise, self.name, round_index)
        # dL/ds_t = -2 (df/ds)^T C^T R^{-1} (y_t - C prior_t) = -2 (df/ds)^T (z_t - J u_t)
        innov = z - u @ self.window.J.T
        grad = -2.0 * (innov if self.theta is None else self.theta.input_jacobian_T(s, innov))
        return ClientReply(self.states, None, self.window.J, grad, loss, self.noise, self.name, round_index)

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The client's own state between rounds (what its replies depend on besides its data and
        the augmentation): theta and its last states when theta is learned, else nothing."""
        if self.theta is None:
            return {}
        out = {f"theta.{k}": v for k, v in self.theta.state_arrays().items()}
        out["states"] = np.asarray(self.states, dtype=np.float64)
        return out

    def restore_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of checkpoint_state."""
        theta = {k[len("theta.") :]: v for k, v in arrays.items() if k.startswith("theta.")}
        if theta and self.theta is not None:
            self.theta.load_arrays(theta)
        if "states" in arrays:
            self.states = np.array(arrays["states"], dtype=np.float64)


class StreamingSession(ClientSession):
    """A client over a stream: the whole series is projected once (C^T R^{-1} y_t is per sample), then
    `open_window` moves to the next window, starting the filter from the state it reached at start - 1."""

    def __init__(self, name: str, model: LocalModel, raw: np.ndarray, *, learn_theta: bool = False,
                 theta_kind: ThetaKind = "linear", privacy: ClientPrivacy | None = None,
                 snapshot: np.ndarray | None = None) -> None:  # fmt: skip
        if snapshot is not None:
            raise ConfigError(f"client '{name}': streaming mode uses the LR test; it takes no snapshot series")
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
        return int(self.stream.ytil.shape[0])

    @property
    def series_steps(self) -> int:
        return self.stream_steps

    def open_window(self, start: int, end: int) -> None:
        if not 0 <= start < end <= self.stream_steps:
            raise FedGCError(
                f"client '{self.name}': window [{start}, {end}) is outside its {self.stream_steps} samples"
            )
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
