"""The protocol's settings: the server's rounds and tests, and streaming windows. Validated where built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fedgc.errors import ConfigError
from fedgc.protocol.dropout import POLICIES
from fedgc.protocol.rules import rule_named


@dataclass(frozen=True)
class ServerConfig:
    """rule: 'newton' (exact least squares per round) or 'gd' (the paper's gradient step);
    diagonal: 'fixed' (local A^{mm} kept) or 'joint' (re-estimated with the cross blocks);
    penalty: group-lasso weight on ||A_s^{mn}||_F per time step; tol: relative change of A_s
    that stops the rounds; alpha: FDR level of the edges; on_dropout: what a client without a valid
    reply does to the run, 'stop' (error, last round kept) or 'continue' (without it; fedgc.protocol.dropout)."""

    rule: Literal["newton", "gd"] = "newton"
    max_rounds: int = 20
    tol: float = 1e-6
    penalty: float = 0.0
    diagonal: Literal["fixed", "joint"] = "fixed"
    learning_rate: float | None = None
    alpha: float = 0.05
    burn_in: int = 1
    on_dropout: Literal["stop", "continue"] = "stop"

    def __post_init__(self) -> None:
        if self.on_dropout not in POLICIES:
            raise ConfigError(f"server.on_dropout must be one of {POLICIES}, got {self.on_dropout!r}")
        rule_named(self.rule)
        if self.diagonal not in ("fixed", "joint"):
            raise ConfigError(f"server.diagonal must be 'fixed' or 'joint', got {self.diagonal!r}")
        if not (isinstance(self.max_rounds, int) and self.max_rounds >= 1):
            raise ConfigError(f"server.max_rounds must be a positive integer, got {self.max_rounds!r}")
        if not self.tol > 0:
            raise ConfigError(f"server.tol must be > 0, got {self.tol!r}")
        if self.penalty < 0:
            raise ConfigError(f"server.penalty must be >= 0, got {self.penalty!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"server.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"server.alpha must lie in (0, 1), got {self.alpha!r}")
        if not (isinstance(self.burn_in, int) and self.burn_in >= 1):
            raise ConfigError(f"server.burn_in must be an integer >= 1, got {self.burn_in!r}")


@dataclass(frozen=True)
class StreamingConfig:
    """window W and step S in samples (1 <= S <= W; S defaults to W); forgetting lambda in (0, 1] per step;
    alert_alpha: chance of any false alert per window (Bonferroni over the M (M - 1) pairs);
    max_rounds, tol: the protocol's rounds per window (warm-started from the previous window's A_s);
    reset_on_alert: restart the forgotten statistics at an alert."""

    window: int = 500
    step: int | None = None
    forgetting: float = 0.9
    alert_alpha: float = 0.01
    max_rounds: int = 10
    tol: float = 1e-4
    reset_on_alert: bool = True

    def __post_init__(self) -> None:
        if self.step is None:
            object.__setattr__(self, "step", self.window)
        for key in ("window", "step", "max_rounds"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"streaming.{key} must be a positive integer, got {v!r}")
        if self.stride > self.window:
            raise ConfigError(f"streaming.step ({self.step}) must not exceed streaming.window ({self.window}): "
                              "every sample has to pass through a window")  # fmt: skip
        if not _number(self.forgetting) or not 0 < self.forgetting <= 1:
            raise ConfigError(f"streaming.forgetting must lie in (0, 1], got {self.forgetting!r}")
        if not _number(self.alert_alpha) or not 0 < self.alert_alpha < 1:
            raise ConfigError(f"streaming.alert_alpha must lie in (0, 1), got {self.alert_alpha!r}")
        if not _number(self.tol) or not self.tol > 0:
            raise ConfigError(f"streaming.tol must be > 0, got {self.tol!r}")
        if not isinstance(self.reset_on_alert, bool):
            raise ConfigError(f"streaming.reset_on_alert must be true or false, got {self.reset_on_alert!r}")

    @property
    def stride(self) -> int:
        """S, the samples between window starts (the window length when step is not given)."""
        return self.window if self.step is None else int(self.step)

    def steady_effective_size(self) -> float:
        """N_eff once the memory is full, W = S: S (1 + lambda) / (1 - lambda) (inf at lambda = 1)."""
        lam, S = self.forgetting, self.stride
        return float("inf") if lam >= 1 else S * (1 + lam) / (1 - lam) + (self.window - S)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
