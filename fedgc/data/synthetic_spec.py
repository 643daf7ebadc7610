"""What a synthetic scenario generates (the `synthetic:` section of a run config; fedgc.data.synthetic draws
and simulates it), in a module of its own so that reading a config loads no numeric library."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Annotated, Literal

from fedgc.errors import ConfigError
from fedgc.settings_config import SETTINGS_CONFIG

MAX_CLIENTS = 1000  # the joint system is (sum D_m)^2 dense: beyond this it cannot be held


@dataclass(frozen=True)
class Perturbation:
    """At time step `time` (0-based), block A^{target, source} is switched on (to its
    drawn pattern at the system's edge strength), off, or multiplied by `factor`."""

    __pydantic_config__ = SETTINGS_CONFIG

    time: int
    """Time step (0-based) from which the change holds."""
    target: int
    """Client index m of the block A^{mn} (0-based)."""
    source: int
    """Client index n of the block A^{mn} (0-based, not the target)."""
    action: Literal["on", "off", "scale"]
    """'on': the block takes its drawn pattern; 'off': it becomes zero; 'scale': it is multiplied by `factor`."""
    factor: float = 1.0
    """Multiplier of the block for action 'scale'."""


@dataclass(frozen=True)
class SystemSpec:
    """What to generate (the `synthetic:` section of a run config)."""

    __pydantic_config__ = SETTINGS_CONFIG

    n_clients: int
    """Number of clients M, 2 to 1000."""
    state_dims: int | tuple[int, ...] = 3
    """Latent states D_m: one integer for every client or a list of M."""
    obs_dims: int | tuple[int, ...] = 20
    """Sensors P_m: one integer for every client or a list of M; each larger than the client's D_m."""
    edge_density: float = 0.25
    """Share of the ordered client pairs with a Granger-causal edge, in [0, 1]."""
    edge_strength: float = 0.3
    """Spectral norm of the cross block A^{mn} of each edge (>= 0)."""
    self_eig_range: Annotated[tuple[float, float], "[lo, hi], two numbers"] = (0.3, 0.7)
    """Range of the eigenvalues of each client's own block A^{mm}, 0 <= lo <= hi < 1."""
    snr: float = 1.0
    """Signal-to-noise ratio of the sensors (> 0)."""
    n_steps: int = 4000
    """Time steps T to simulate (>= 10)."""
    max_spectral_radius: float = 0.95
    """Largest spectral radius of the joint A (cross blocks are shrunk to reach it), between hi and 1."""
    perturbations: tuple[Perturbation, ...] = field(default_factory=tuple)
    """Changes of the cross blocks over time (the mean-shift experiments of streaming mode)."""

    def __post_init__(self) -> None:
        M = self.n_clients
        if M < 2:
            raise ConfigError(f"n_clients must be >= 2, got {M}")
        if M > MAX_CLIENTS:
            raise ConfigError(f"n_clients must be at most {MAX_CLIENTS}, got {M}")
        for name in ("state_dims", "obs_dims"):
            v = getattr(self, name)
            dims = [v] * M if isinstance(v, Integral) else list(v)
            if len(dims) != M or any(int(d) < 1 for d in dims):
                raise ConfigError(f"{name} must be a positive int or a list of {M} positive ints, got {v}")
            object.__setattr__(self, name, tuple(int(d) for d in dims))
        if any(p <= d for p, d in zip(self.obs_dims, self.state_dims)):
            raise ConfigError("every client needs more sensors than states (obs_dims > state_dims)")
        if not 0.0 <= self.edge_density <= 1.0:
            raise ConfigError(f"edge_density must lie in [0, 1], got {self.edge_density}")
        if self.snr <= 0 or self.n_steps < 10 or self.edge_strength < 0:
            raise ConfigError("snr must be > 0, n_steps >= 10, edge_strength >= 0")
        lo, hi = self.self_eig_range
        if not 0 <= lo <= hi < 1:
            raise ConfigError(f"self_eig_range must satisfy 0 <= lo <= hi < 1, got {self.self_eig_range}")
        if not hi < self.max_spectral_radius < 1:  # reachable only by shrinking cross blocks
            raise ConfigError(
                f"max_spectral_radius must lie between self_eig_range's upper end ({hi}) and 1, "
                f"got {self.max_spectral_radius}"
            )
        for p in self.perturbations:
            if not (0 <= p.time < self.n_steps and 0 <= p.target < M and 0 <= p.source < M and p.target != p.source):
                raise ConfigError(f"perturbation {p} is outside the system")
