"""Client side: the augmented steady-state filter over a window and the reply for the server.

Augmented client model (client m, local model A, C, Q, R, gain K):

    prior:      h_{t|t-1} = A h_{t-1} + f_theta(s_t)
    posterior:  h_t = h_{t|t-1} + K (y_t - C h_{t|t-1})
    loss:       L = sum_t || R^{-1/2} (y_t - C h_{t|t-1}) ||^2

Raw measurements are touched once, in `prepare_window`, which projects them to
ytil_t = C^T R^{-1} y_t (T, D); every round afterwards works in D dimensions.

Missing measurements (NaN) are handled exactly (fedgc.gaps): the filter uses only the observed
sensors o_t (ytil_t = C_o^T R_oo^{-1} y_o, information J_t) with the exact covariance recursion
around the gaps, and the loss counts observed sensors only. The reply keeps its form (states,
pseudo-observations, one J): at gap steps the pseudo-observation is completed with the
prediction of the missing sensors at the client's prior (EM), z_t = ytil_t - J_t A h_{t-1} +
(J - J_t) u_t, so the server's fixed-J least squares J B sum x x^T = sum z x^T has, at its fixed
point u_t = B x_{t-1}, exactly the solution of the observed-data normal equations
sum_t J_t B x x^T = sum_t (ytil_t - J_t A h_{t-1}) x^T.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from fedgc.errors import DataError
from fedgc.gaps import FilterPlan, Gaps, complete_pseudo_obs, gapped_scan, missing_quadratic, plan_filter, project_observed
from fedgc.kalman import filter_scan, information_matrix, solve_noise
from fedgc.local_model import LocalModel, validate
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.validation import validate_augmentation

UpdateRule = Literal["newton", "gd"]
RequestKind = Literal["newton", "gd", "stats"]


class ClientWindow(NamedTuple):
    """A client's window, reduced to what the filter needs.

    ytil:        (T, D) C^T R^{-1} y_t of the standardised measurements.
    yRy:         (T,)   y_t^T R^{-1} y_t, for the loss.
    J:           (D, D) C^T R^{-1} C.
    A:           (D, D) local transition.
    Q:           (D, D) local process noise covariance.
    F:           (D, D) (I - K C) A, posterior recursion.
    G:           (D, D) I - K C, gain on the prior input.
    Sigma:       (D, D) steady-state posterior covariance.
    gaps:        steps with missing sensors and their information J_t (None: nothing missing);
                 ytil and yRy then hold the observed sensors' C_o^T R_oo^{-1} y_o and y_o^T R_oo^{-1} y_o.
    plan:        the exact filter's F_t, G_t, Sigma_t around the gaps (None when gaps is None).
    """

    ytil: np.ndarray
    yRy: np.ndarray
    J: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    F: np.ndarray
    G: np.ndarray
    Sigma: np.ndarray
    gaps: Gaps | None = None
    plan: FilterPlan | None = None


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


def prepare_window(model: LocalModel, raw: np.ndarray, client: str) -> ClientWindow:
    """The window of raw measurements (T, P), NaN for missing ones, reduced to D dimensions."""
    steady = validate(model, client)
    raw = np.asarray(raw, dtype=float)
    # A block of rows at a time (each row's projection is its own): only (block, P) temporaries besides
    # the (T, D) result. Missing values anywhere: the whole window through project_observed instead.
    T = raw.shape[0]
    ytil, yRy, gaps, plan = np.empty((T, model.C.shape[1])), np.empty(T), None, None
    complete = True
    for a in range(0, T, PROJECTION_BLOCK_ROWS):
        y = model.standardise(raw[a : a + PROJECTION_BLOCK_ROWS])
        if np.isinf(y).any():
            raise DataError(f"client '{client}': the measurements contain infinite values")
        complete = complete and not np.isnan(y).any()
        if complete:
            Rinv_y = solve_noise(model.R, y)
            ytil[a : a + len(y)] = Rinv_y @ model.C
            yRy[a : a + len(y)] = np.einsum("tp,tp->t", y, Rinv_y)
    if not complete:
        ytil, yRy, gaps = project_observed(model.standardise(raw), model.C, model.R)
    J = information_matrix(model.C, model.R)
    A = np.asarray(model.A, dtype=float)
    Q = np.asarray(model.Q, dtype=float)
    if gaps is not None:
        plan = plan_filter(A, Q, J, steady, gaps)
    return ClientWindow(ytil, yRy, J, A, Q, steady.transition, steady.input_gain, steady.posterior_cov, gaps, plan)


# Rows per block when projecting a complete window (bounds the (rows, P) temporaries).
PROJECTION_BLOCK_ROWS = 1 << 15


def run_filter(window: ClientWindow, prior_input: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """Posterior states h_{1:T} (T, D) given the prior input u_t = f_theta(s_t) (T, D)."""
    if window.plan is not None:
        return gapped_scan(window.F, window.G, window.Sigma, window.plan, prior_input, window.ytil, h0)
    drive = prior_input @ window.G.T + window.ytil @ window.Sigma.T
    return filter_scan(window.F, drive, h0)


def lagged(states: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """h_{0:T-1} from h_{1:T}: the states each step's prior is built from."""
    first = np.zeros((1, states.shape[1])) if h0 is None else h0[None, :]
    return np.vstack([first, states[:-1]])


def pseudo_observations(
    window: ClientWindow, prev_states: np.ndarray, prior_input: np.ndarray | None = None
) -> np.ndarray:
    """z_t = ytil_t - J A h_{t-1}, (T, D). At gap steps: without prior_input the observed-data form
    ytil_t - J_t A h_{t-1}; with the prior input u_t (T, D) the completed form (module docstring)
    ytil_t - J_t A h_{t-1} + (J - J_t) u_t."""
    z = window.ytil - prev_states @ (window.J @ window.A).T
    if window.gaps is None:
        return z
    s = window.gaps.steps
    priors = prev_states[s] @ window.A.T
    if prior_input is not None:
        priors = priors + prior_input[s]
    return complete_pseudo_obs(z, window.J, window.gaps, priors)


def prediction_loss(window: ClientWindow, priors: np.ndarray) -> float:
    """sum_t (y_t - C p_t)^T R^{-1} (y_t - C p_t) over the observed sensors, for prior means p_t (T, D)."""
    loss = float(window.yRy.sum() - 2.0 * np.sum(priors * window.ytil) + np.sum((priors @ window.J) * priors))
    if window.gaps is not None:
        loss -= missing_quadratic(window.J, window.gaps, priors[window.gaps.steps])
    return loss


class ThetaFunction(torch.nn.Module):
    """f_theta: R^D -> R^D applied to the augmentation term. 'linear' is theta s with theta
    initialised to the identity; 'mlp' adds a residual two-layer correction initialised to zero."""

    def __init__(self, dim: int, kind: Literal["linear", "mlp"] = "linear", hidden: int = 16) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim, dtype=torch.float64))
        self.mlp = None
        if kind == "mlp":
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(dim, hidden, dtype=torch.float64),
                torch.nn.Tanh(),
                torch.nn.Linear(hidden, dim, dtype=torch.float64),
            )
            with torch.no_grad():
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        out = self.linear(s)
        return out if self.mlp is None else out + self.mlp(s)

    def apply(self, s: np.ndarray) -> np.ndarray:  # type: ignore[override]
        with torch.no_grad():
            return self(torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))).numpy()

    def input_jacobian_T(self, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Rows (df/ds_t)^T v_t for every t: the chain rule for the gd rule."""
        st = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64)).requires_grad_(True)
        out = self(st)
        (grad,) = torch.autograd.grad(out, st, grad_outputs=torch.from_numpy(np.ascontiguousarray(v)))
        return grad.numpy()


def train_theta(
    theta: ThetaFunction, window: ClientWindow, augmentation: np.ndarray, prev_states: np.ndarray, *, steps: int = 20
) -> float:
    """Fit f_theta on the client's one-step prediction loss with h_{t-1} held fixed:
    L(theta) = const - 2 sum_t f(s_t)^T z_t + sum_t f(s_t)^T J_t f(s_t) (z_t in the observed-data
    form; J_t = J without gaps). Returns the final loss / T."""
    z = torch.from_numpy(pseudo_observations(window, prev_states))
    s = torch.from_numpy(np.ascontiguousarray(augmentation, dtype=np.float64))
    J = torch.from_numpy(window.J)
    T = max(len(s), 1)
    opt = torch.optim.LBFGS(theta.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    if window.gaps is not None:
        gap_steps = torch.from_numpy(window.gaps.steps)
        lost = torch.from_numpy(window.J - window.gaps.info)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = theta(s)
        loss = -2.0 * (f * z).sum() + ((f @ J) * f).sum()
        if window.gaps is not None:
            fg = f[gap_steps]
            loss = loss - torch.einsum("ki,kij,kj->", fg, lost, fg)
        loss = loss / T
        loss.backward()
        return loss

    return float(opt.step(closure).detach())


class ClientSession:
    """One client's mutable round state over a fixed window: its theta and last states.

    The maths lives in the pure functions above; this object only sequences them.
    """

    def __init__(
        self,
        name: str,
        model: LocalModel,
        raw: np.ndarray,
        *,
        learn_theta: bool = False,
        theta_kind: Literal["linear", "mlp"] = "linear",
        privacy=None,
    ) -> None:
        """privacy: a fedgc.privacy.local.ClientPrivacy; the raw window is then clipped and privatised
        here, once, and every later release is computed from the privatised window only."""
        self.name = name
        self.model = model
        self.window = prepare_window(model, raw, name)
        if privacy is not None and self.window.gaps is not None:
            raise DataError(
                f"client '{name}': {self.window.gaps.steps.size} step(s) have missing measurements; privacy "
                "needs complete data (its sensitivity bounds assume the steady-state gain)"
            )
        self.noise: ReleaseNoise | None = None
        # The exact window, for the in-process oracle only (evaluation); never released.
        self.exact_window = self.window
        self.privacy_noise_std = 0.0
        if privacy is not None:
            from fedgc.privacy.local import privatise_window

            private = privatise_window(model, raw, self.window, privacy)
            self.window, self.noise = private.window, private.noise
            self.privacy_noise_std = private.noise_std
        self.learn_theta = learn_theta
        self.theta = ThetaFunction(model.state_dim, theta_kind)
        self.h0 = np.zeros(model.state_dim)
        self.states = run_filter(self.window, np.zeros_like(self.window.ytil), self.h0)
        self.last_round: int | None = None

    @property
    def state_dim(self) -> int:
        return self.model.state_dim

    @property
    def n_steps(self) -> int:
        return self.window.ytil.shape[0]

    def round(self, augmentation: np.ndarray, request: RequestKind = "newton", round_index: int | None = None) -> ClientReply:
        """Take s_{1:T} (T, D), run the augmented filter, return the reply the request asks for:
        'newton' and 'stats' send states, pseudo-observations and J; 'gd' sends states and gradients.
        A malformed augmentation (shape, dtype, non-finite, a round already answered) raises
        fedgc.validation.InvalidMessage before any state changes."""
        if request not in ("newton", "gd", "stats"):
            raise ValueError(f"client '{self.name}': unknown request kind {request!r}")
        s = validate_augmentation(
            augmentation, client=self.name, n_steps=self.n_steps, state_dim=self.state_dim,
            round_index=round_index, last_round=self.last_round,
        )  # fmt: skip
        if round_index is not None:
            self.last_round = int(round_index)
        if self.learn_theta:
            train_theta(self.theta, self.window, s, lagged(self.states, self.h0))
        # An untrained f_theta is the identity: skip torch on the hot path.
        u = self.theta.apply(s) if self.learn_theta else s
        self.states = run_filter(self.window, u, self.h0)
        prev = lagged(self.states, self.h0)
        priors = prev @ self.window.A.T + u
        loss = prediction_loss(self.window, priors)
        z = pseudo_observations(self.window, prev, u)
        if request != "gd":
            return ClientReply(self.states, z, self.window.J, None, loss, self.noise, self.name, round_index)
        # dL/ds_t = -2 (df/ds)^T C^T R^{-1} (y_t - C prior_t) = -2 (df/ds)^T (z_t - J u_t)
        innov = z - u @ self.window.J.T
        grad = -2.0 * (self.theta.input_jacobian_T(s, innov) if self.learn_theta else innov)
        return ClientReply(self.states, None, self.window.J, grad, loss, self.noise, self.name, round_index)

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The client's own state between rounds (what its replies depend on besides its data and
        the augmentation): theta and its last states when theta is learned, else nothing."""
        if not self.learn_theta:
            return {}
        out = {f"theta.{k}": v.detach().numpy().copy() for k, v in self.theta.state_dict().items()}
        out["states"] = np.asarray(self.states, dtype=np.float64)
        return out

    def restore_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of checkpoint_state."""
        theta = {k[len("theta."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("theta.")}
        if theta:
            self.theta.load_state_dict(theta)
        if "states" in arrays:
            self.states = np.array(arrays["states"], dtype=np.float64)
