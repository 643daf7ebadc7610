"""A private run's budget before any data is touched: how many releases it makes and with which noise
multiplier (solved by fedgc.privacy.accounting, which needs opacus), and the neighbouring relation."""

from __future__ import annotations

from typing import Any, NamedTuple

from fedgc.errors import ConfigError

ACCOUNTANTS = ("rdp", "prv")
NEIGHBOURING = (
    "Two datasets of a client are neighbours when they differ in one time step's measurement vector y_t "
    "(any change, after standardisation and clipping to L2 norm c at the client); the other clients' "
    "data and all time steps but one are the same. The guarantee is per client for the whole run."
)


def neighbouring_relation(event_steps: int = 1) -> str:
    """The neighbouring relation in plain words, for events of `event_steps` consecutive steps."""
    if event_steps == 1:
        return NEIGHBOURING
    return (
        f"Two datasets of a client are neighbours when they differ in the measurement vectors of up to "
        f"{event_steps} consecutive time steps (any change, after standardisation and clipping to L2 norm c "
        "per step at the client); the other clients' data and all other time steps are the same. The "
        "guarantee is per client for the whole run; one time step alone is protected at the smaller "
        "'one_step' epsilon."
    )


def check_target(*, epsilon: Any, delta: Any, accountant: Any, max_noise_multiplier: Any) -> None:
    """ConfigError unless epsilon > 0 (math.inf: no privacy), 0 < delta < 1, accountant 'rdp' | 'prv' and
    max_noise_multiplier > 0 (a target needing more noise than this is refused as absurd)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ConfigError(f"privacy.epsilon must be a number > 0, got {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(f"privacy.delta must lie in (0, 1), got {delta!r}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"privacy.accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if (
        isinstance(max_noise_multiplier, bool)
        or not isinstance(max_noise_multiplier, (int, float))
        or not max_noise_multiplier > 0
    ):
        raise ConfigError(f"max_noise_multiplier must be > 0, got {max_noise_multiplier!r}")


def releases_per_run(*, augmentations: int, augmentation_noise: bool = False) -> tuple[int, int]:
    """(client -> server, server -> client) releases of one client's data in a run whose exchanges sent
    `augmentations` data-dependent augmentations (fedgc.protocol.rules.UpdateRule.data_dependent_augmentations).
    Without augmentation noise the augmentations are post-processing: (1, 0); with it, one release each."""
    if augmentations < 0:
        raise ConfigError(f"a run sends a non-negative number of augmentations, got {augmentations}")
    return (1, augmentations) if augmentation_noise else (1, 0)


class PrivacyPlan(NamedTuple):
    """Fixed before any data is touched: sigma for every release and the release budget."""

    noise_multiplier: float
    client_releases: int
    server_releases: int
    rounds: int
    epsilon: float
    delta: float
    accountant: str
    augmentation_noise: bool = False

    @property
    def steps(self) -> int:
        return self.client_releases + self.server_releases
