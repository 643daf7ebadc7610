"""The protocol's settings: the server's rounds and tests, and streaming windows. Validated where built.

Plain settings only (no numeric library): a run config is read and checked without loading the maths.
The rules and dropout policies they name are implemented in fedgc.protocol.rules and fedgc.protocol.dropout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fedgc.errors import ConfigError
from fedgc.settings_config import SETTINGS_CONFIG

RULE_NAMES = ("newton", "gd")  # the update rules of fedgc.protocol.rules (its RULES), in that order
ON_DROPOUT = ("stop", "continue")  # what a client without a valid reply does to the run (fedgc.protocol.dropout)
ACCELERATIONS = ("secant", "none")  # server.acceleration (fedgc.protocol.acceleration)
SIV_INSTRUMENTS = ("both", "lagged")  # server.siv_instruments (fedgc.core.siv)
MESSAGE_FORMATS = ("arrays", "compact")  # how a Flower transport carries a packed buffer (fedgc.protocol.wire)
GC_TESTS = ("auto", "lr", "siv")  # server.test: the Granger test of the p-values (fedgc.core.granger, fedgc.core.siv)
# The centralized oracle (fedgc.analysis.oracle) iterates to tol with at least this many rounds allowed: here, so
# that the command line sizes the oracle's progress bar without loading the oracle.
ORACLE_MIN_ROUNDS = 100


@dataclass(frozen=True)
class ServerConfig:
    """The server's rounds and tests (the `server:` section of a run config)."""

    __pydantic_config__ = SETTINGS_CONFIG

    rule: Literal["newton", "gd"] = "newton"
    """'newton': exact least squares per round; 'gd': the paper's gradient step."""
    max_rounds: int = 20
    """Most rounds of the protocol (>= 1)."""
    tol: float = 1e-6
    """Relative change of A_s that stops the rounds (> 0)."""
    penalty: float = 0.0
    """Group-lasso weight on ||A_s^{mn}||_F per time step (>= 0)."""
    diagonal: Literal["fixed", "joint"] = "fixed"
    """'fixed': each client's local A^{mm} is kept; 'joint': re-estimated with the cross blocks."""
    learning_rate: float | None = None
    """Step of the 'gd' rule (> 0); null: the safe step 1 / (2 lambda_max(J_m) lambda_max(X^T X / n)) per client."""
    alpha: float = 0.05
    """FDR level of the edges (Benjamini-Hochberg), in (0, 1)."""
    burn_in: int = 1
    """Leading time steps left out of the regressions' sums (>= 1)."""
    test: Literal["auto", "lr", "siv"] = "auto"
    """Granger test of the p-values and edges: 'lr' (likelihood ratio on the fixed point's states, exact with
    the true local models), 'siv' (snapshot instrumental variables on series the clients send once at setup,
    calibrated with identified models; fedgc.core.siv) or 'auto': 'siv' when a client's model is identified
    and privacy and streaming are off, else 'lr' (docs/robustness.md)."""
    siv_instruments: Literal["both", "lagged"] = "both"
    """The SIV test's tests of a pair: 'both' (with lagged instruments, and with the source site's own past
    among the instruments; twice the smaller p-value) or 'lagged' (the first alone). The second assumes the
    sites' snapshot noises are independent at the same step: use 'lagged' when sites' sensors share a fast
    disturbance that their states do not carry on (docs/robustness.md)."""
    on_dropout: Literal["stop", "continue"] = "stop"
    """What a client without a valid reply does to the run: 'stop' (error, last round kept) or 'continue'
    (without it, its pairs unknown; fedgc.protocol.dropout)."""
    acceleration: Literal["secant", "none"] = "secant"
    """'secant': from the second round on, the server identifies each client's linear response to its
    augmentation from two rounds of replies and sends the fixed point it predicts (3 rounds when the
    response is exact, plain rounds again if a prediction fails; fedgc.protocol.acceleration); 'none': the
    plain fixed-point rounds. Only the newton rule without augmentation noise is accelerated."""

    def __post_init__(self) -> None:
        if self.on_dropout not in ON_DROPOUT:
            raise ConfigError(f"server.on_dropout must be one of {ON_DROPOUT}, got {self.on_dropout!r}")
        if not (isinstance(self.rule, str) and self.rule in RULE_NAMES):
            raise ConfigError(f"server.rule must be {' or '.join(map(repr, RULE_NAMES))}, got {self.rule!r}")
        if self.acceleration not in ACCELERATIONS:
            raise ConfigError(f"server.acceleration must be one of {ACCELERATIONS}, got {self.acceleration!r}")
        if self.siv_instruments not in SIV_INSTRUMENTS:
            raise ConfigError(f"server.siv_instruments must be one of {SIV_INSTRUMENTS}, got {self.siv_instruments!r}")
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
        if self.test not in GC_TESTS:
            raise ConfigError(f"server.test must be one of {GC_TESTS}, got {self.test!r}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"server.alpha must lie in (0, 1), got {self.alpha!r}")
        if not (isinstance(self.burn_in, int) and self.burn_in >= 1):
            raise ConfigError(f"server.burn_in must be an integer >= 1, got {self.burn_in!r}")


@dataclass(frozen=True)
class StreamingConfig:
    """Streaming windows (the `streaming:` section of a run config)."""

    __pydantic_config__ = SETTINGS_CONFIG

    window: int = 500
    """Window W in samples (>= 1)."""
    step: int | None = None
    """Step S in samples between windows, 1 <= S <= W; null: S = W."""
    forgetting: float = 0.9
    """Forgetting factor lambda per step, in (0, 1] (1: nothing forgotten)."""
    alert_alpha: float = 0.01
    """Chance of any false alert per window, in (0, 1) (Bonferroni over the M (M - 1) pairs)."""
    max_rounds: int = 10
    """Rounds of the protocol per window (>= 1), warm-started from the previous window's A_s."""
    tol: float = 1e-4
    """Relative change of A_s that ends a window's rounds (> 0)."""
    reset_on_alert: bool = True
    """Restart the forgotten statistics at an alert."""
    alert_variance: Literal["wald", "hac"] = "wald"
    """Variance of the change test: 'wald' (white innovations), 'hac' (Newey-West over the window, F tails)."""
    alert_calibration: Literal["none", "reference", "cross_fit"] = "none"
    """Null of the change statistics: 'none' (chi-square), 'reference' (a scaled chi-square fitted on normal operation
    streamed with the same models: TEP's tep.identify_on run, or every CSV client's identify_on file), 'cross_fit' (the
    same data cut in halves, each streamed
    with models identified on the other: out of sample, as the test run is; predictive F tail; docs/streaming.md)."""

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
        if self.alert_variance not in ("wald", "hac"):
            raise ConfigError(f"streaming.alert_variance must be 'wald' or 'hac', got {self.alert_variance!r}")
        if self.alert_calibration not in ("none", "reference", "cross_fit"):
            raise ConfigError(
                f"streaming.alert_calibration must be 'none', 'reference' or 'cross_fit', got {self.alert_calibration!r}"
            )

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
