"""The client's learnable function f_theta on the augmentation term (the one module that needs torch).

    prior: h_{t|t-1} = A h_{t-1} + f_theta(s_t)

'linear' is theta s with theta initialised to the identity; 'mlp' adds a residual two-layer
correction initialised to zero, so an untrained f_theta is the identity either way. theta is fitted
by the client on its own one-step prediction loss (train_theta), which lets it shrink a noisy term.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from fedgc.core.window import ClientWindow, pseudo_observations


class ThetaFunction(torch.nn.Module):
    """f_theta: R^D -> R^D applied to the augmentation term. 'linear' is theta s with theta
    initialised to the identity; 'mlp' adds a residual two-layer correction initialised to zero."""

    def __init__(self, dim: int, kind: Literal["linear", "mlp"] = "linear", hidden: int = 16) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim, dtype=torch.float64))
        self.mlp: torch.nn.Sequential | None = None
        if kind == "mlp":
            out = torch.nn.Linear(hidden, dim, dtype=torch.float64)
            with torch.no_grad():
                out.weight.zero_()
                out.bias.zero_()
            self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden, dtype=torch.float64), torch.nn.Tanh(), out)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        out = self.linear(s)
        return out if self.mlp is None else out + self.mlp(s)

    def apply(self, s: np.ndarray) -> np.ndarray:  # type: ignore[override]
        with torch.no_grad():
            return self(torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))).numpy()

    def fit(self, window: ClientWindow, augmentation: np.ndarray, prev_states: np.ndarray) -> float:
        """One client round's training (train_theta); returns the final loss / T."""
        return train_theta(self, window, augmentation, prev_states)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """theta's parameters as float64 arrays (a checkpoint's form), keyed by parameter name."""
        return {k: v.detach().numpy().copy() for k, v in self.state_dict().items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of state_arrays."""
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})

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
