"""The typed messages of a round: what a client replies, what the server knows of each client, and
what a transport returns for a client it could not reach. The wire form is fedgc.protocol.wire."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from fedgc.privacy.mechanism import ReleaseNoise

RequestKind = Literal["newton", "gd", "stats"]

# The arrays each request kind's reply carries (fedgc.protocol.rules): the newton rule and the final
# statistics exchange need pseudo-observations, the gd rule gradients; J always.
REPLY_FIELDS: dict[str, tuple[str, ...]] = {
    "newton": ("states", "pseudo_obs", "information"),
    "gd": ("states", "gradient", "information"),
    "stats": ("states", "pseudo_obs", "information"),
}
REQUEST_KINDS: tuple[str, ...] = tuple(REPLY_FIELDS)


class ClientReply(NamedTuple):
    """What client m sends the server after a round (never y, C or anything of size P).

    states:      (T, D_m) posterior h_{1:T}.
    pseudo_obs:  (T, D_m) z_t = C^T R^{-1} (y_t - C A h_{t-1}), for the newton rule and GC tests.
    information: (D_m, D_m) J = C^T R^{-1} C.
    gradient:    (T, D_m) dL/ds_t (gd rule) or None.
    loss:        one-step prediction loss L of the round (private runs: without the data-only constant).
    noise:       privacy noise the server must know about (covariances, state sensitivity), or None.
    client:      the replying client's name;  round: the round of the message it answers
                 (the server rejects a reply whose client or round it did not ask for).
    """

    states: np.ndarray
    pseudo_obs: np.ndarray | None
    information: np.ndarray | None
    gradient: np.ndarray | None
    loss: float
    noise: ReleaseNoise | None = None
    client: str | None = None
    round: int | None = None

    def required(self, name: str) -> np.ndarray:
        """The array field `name`, which a validated reply of its request kind carries."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"client '{self.client}': the reply has no {name} (validation lets no such reply through)")
        return np.asarray(value)


class ReleaseFigures(NamedTuple):
    """What a private client reports of its one release (functions of its model and the privacy plan,
    never of its data): the noise std s, the clip norm c and the release's signal-to-noise ratio."""

    noise_std: float
    clip: float
    signal_to_noise: float


class ClientInfo(NamedTuple):
    """What the server knows of a client after the setup. release: its privacy figures (private runs);
    snapshot: (T, r) its snapshot series (fedgc.core.snapshots) when the run's Granger test is SIV, else None."""

    name: str
    state_dim: int
    n_steps: int
    release: ReleaseFigures | None = None
    snapshot: np.ndarray | None = None


class ClientFailure(NamedTuple):
    """What a transport returns in place of a reply it did not get (timeout, error reply, undecodable)."""

    client: str
    reason: str
