"""The settings of the fault-origin analysis (fedgc.analysis.origin): the `tep.origin:` section of a run
config, in a module of its own so that reading a config loads no numeric library."""

from __future__ import annotations

from dataclasses import dataclass

from fedgc.errors import ConfigError
from fedgc.settings_config import SETTINGS_CONFIG


@dataclass(frozen=True)
class OriginSettings:
    """How a client's threshold and crossings are set (the `tep.origin:` section of a run config)."""

    __pydantic_config__ = SETTINGS_CONFIG

    quantile: float = 0.99
    """Quantile of the normal-operation scores that sets each client's threshold, in (0, 1)."""
    run_length: int = 3
    """Consecutive samples above the threshold that make a crossing (>= 1)."""
    tie_window: int = 2
    """Crossings this many samples apart or less are near-ties, broken by the learned graph (>= 0)."""

    def __post_init__(self) -> None:
        q, k, w = self.quantile, self.run_length, self.tie_window
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
            raise ConfigError(f"origin.quantile must lie in (0, 1), got {q!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"origin.run_length must be an integer >= 1, got {k!r}")
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ConfigError(f"origin.tie_window must be an integer >= 0, got {w!r}")
