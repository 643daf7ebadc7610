"""Privacy accounting with opacus (RDP, or PRV), separate from the mechanisms.

Every release that depends on a client's data is one Gaussian mechanism with sample rate 1
and one step. For client n over a run:

  client -> server:  1 release (its privatised projected measurements; every later reply is
                     post-processing of it, see fedgc.privacy.local);
  server -> clients: with augmentation_noise (off by default), one release per round whose
                     augmentations depend on the data (every augmentation after the first, all-zero
                     one), calibrated to the stacked augmentations of all other clients (so it
                     holds against any coalition). Without it, no release at all: see below.

Why the server -> clients direction needs no noise of its own. Every augmentation s^m is computed
from A_s and the states the clients released; A_s from the clients' replies; every reply of client
k from its privatised window v~^k and the augmentations it received. By induction over the rounds
the whole transcript, in both directions and whoever observes it (the server, any coalition of
clients), is a deterministic function of (v~^1, ..., v~^M) and of the public local models. Client
n's data enters only through v~^n, one Gaussian mechanism; the others are independent of it. By the
post-processing theorem the transcript is (epsilon, delta)-DP for client n with the epsilon of that
one mechanism, however many rounds run. Augmentation noise therefore buys no privacy and costs
accuracy (and, composed, forces a larger sigma on the clients); it is kept as an option
(augmentation_noise: true) for deployments that want every message noised independently, e.g. if a
client's replies were ever computed from data it had not privatised.

The whole-run (epsilon, delta) composes every release that is made: one per client without
augmentation noise, 1 + (rounds - 1) (newton) with it. The noise multiplier (one sigma for every
release) is solved for before any data is touched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from opacus.accountants import create_accountant

from fedgc.errors import ConfigError
from fedgc.privacy.budget import PrivacyPlan, check_target, neighbouring_relation, releases_per_run


def epsilon_spent(*, noise_multiplier: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of `steps` Gaussian mechanisms with this multiplier (sample rate 1), composed by opacus."""
    return epsilon_of_mixture([(noise_multiplier, steps)], delta=delta, accountant=accountant)


def epsilon_of_mixture(mechanisms: list[tuple[float, int]], *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of Gaussian mechanisms (noise multiplier, count) of different multipliers, composed by opacus."""
    mechanisms = [(float(sigma), int(n)) for sigma, n in mechanisms if n > 0]
    if not mechanisms:
        return 0.0
    if any(sigma == 0 for sigma, _ in mechanisms):
        return math.inf
    acc = create_accountant(mechanism=accountant)
    for sigma, n in mechanisms:
        for _ in range(n):
            acc.step(noise_multiplier=sigma, sample_rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


@dataclass(frozen=True)
class PrivacyAccountant:
    """Solves sigma from a whole-run target (epsilon, delta) and reports what a run spent.

    epsilon > 0 (math.inf: no privacy); 0 < delta < 1; accountant 'rdp' | 'prv';
    max_noise_multiplier: a target needing more noise than this is refused as absurd.
    """

    epsilon: float
    delta: float
    accountant: str = "rdp"
    max_noise_multiplier: float = 100.0
    tolerance: float = 0.005

    def __post_init__(self) -> None:
        check_target(epsilon=self.epsilon, delta=self.delta, accountant=self.accountant,
                     max_noise_multiplier=self.max_noise_multiplier)  # fmt: skip

    def spent(self, *, noise_multiplier: float, steps: int) -> float:
        return epsilon_spent(
            noise_multiplier=noise_multiplier, steps=steps, delta=self.delta, accountant=self.accountant
        )

    def spent_mixture(self, mechanisms: list[tuple[float, int]]) -> float:
        """Epsilon of (noise multiplier, count) mechanisms composed, at this accountant's delta."""
        return epsilon_of_mixture(mechanisms, delta=self.delta, accountant=self.accountant)

    def noise_multiplier(self, *, steps: int) -> float:
        """Smallest sigma (to the tolerance) with spent(sigma, steps) <= epsilon; 0 if no step or epsilon = inf."""
        if steps < 1 or math.isinf(self.epsilon):
            return 0.0
        hi = self.max_noise_multiplier
        if self.spent(noise_multiplier=hi, steps=steps) > self.epsilon:
            raise ConfigError(
                f"privacy target epsilon={self.epsilon:g}, delta={self.delta:g} over {steps} releases needs a noise "
                f"multiplier above {hi:g}, which would drown the signal; raise epsilon or delta, or lower "
                "server.max_rounds (fewer releases)"
            )
        lo = 0.0
        while hi - lo > self.tolerance * max(hi, 1e-3):
            mid = 0.5 * (lo + hi)
            if self.spent(noise_multiplier=mid, steps=steps) <= self.epsilon:
                hi = mid
            else:
                lo = mid
        return hi


def plan_privacy(
    acc: PrivacyAccountant, *, rounds: int, augmentations: int, augmentation_noise: bool = False
) -> PrivacyPlan:
    """rounds: the planned server updates; augmentations: the data-dependent augmentations they send."""
    c2s, s2c = releases_per_run(augmentations=augmentations, augmentation_noise=augmentation_noise)
    sigma = acc.noise_multiplier(steps=c2s + s2c)
    return PrivacyPlan(sigma, c2s, s2c, rounds, acc.epsilon, acc.delta, acc.accountant, augmentation_noise)


def privacy_report(
    acc: PrivacyAccountant, plan: PrivacyPlan, *, clients: list[str], rounds_run: int, augmentations_run: int,
    clip: float | str, clip_space: str, debias: str, client_noise_std: dict[str, float],
    client_clip: dict[str, float] | None = None, server_noise_std: list[float], event_steps: int = 1,
    reproducible: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The figures for result.json / the report, per client and direction, for the rounds actually run.

    Epsilon is per client for the whole run and per event (event_steps consecutive steps); the same
    release protects one time step with multiplier sigma sqrt(event_steps) ("one_step"). A run whose noise
    was derived from its seed (reproducible) is not private: its figures are what the noise level would
    give, not a guarantee."""
    noisy = plan.augmentation_noise
    c2s, s2c = releases_per_run(augmentations=augmentations_run, augmentation_noise=noisy)
    sigma = plan.noise_multiplier
    eps_c2s = acc.spent(noise_multiplier=sigma, steps=c2s)
    # Without augmentation noise what the other clients see is post-processing of the client -> server
    # releases: bounded by their epsilon, with no release of its own.
    eps_s2c = acc.spent(noise_multiplier=sigma, steps=s2c) if noisy else eps_c2s
    eps_all = acc.spent(noise_multiplier=sigma, steps=c2s + s2c)
    eps_one = (
        eps_all if event_steps == 1 else acc.spent(noise_multiplier=sigma * math.sqrt(event_steps), steps=c2s + s2c)
    )
    per_client = {
        name: {
            "client_to_server": {"epsilon": eps_c2s, "delta": acc.delta, "releases": c2s},
            "server_to_clients": {
                "epsilon": eps_s2c,
                "delta": acc.delta,
                "releases": s2c,
                "post_processing": not noisy,
            },
            "whole_run": {"epsilon": eps_all, "delta": acc.delta, "releases": c2s + s2c},
            "one_step": {"epsilon": eps_one, "delta": acc.delta, "releases": c2s + s2c},
            "client_noise_std": client_noise_std.get(name),
            "clip": (client_clip or {}).get(name, clip),
        }
        for name in clients
    }
    return {
        "enabled": True,
        "private": not reproducible,
        "epsilon_guaranteed": not reproducible,
        "target_epsilon": acc.epsilon,
        "target_delta": acc.delta,
        "accountant": acc.accountant,
        "event_steps": event_steps,
        "neighbouring_relation": neighbouring_relation(event_steps),
        "clip": clip,
        "clip_space": clip_space,
        "debias": debias,
        "noise_multiplier": {"client_to_server": sigma, "server_to_clients": sigma if noisy else 0.0},
        "augmentation_noise": noisy,
        "planned_rounds": plan.rounds,
        "rounds_run": rounds_run,
        "server_noise_std_per_round": list(server_noise_std),
        "per_client": per_client,
        "notes": (
            (
                "NOT PRIVATE: privacy.reproducible_noise derived the noise from the run's seed, which result.json "
                "shows, so anyone can regenerate it; epsilon is not guaranteed (tests and benchmarks only). "
                if reproducible
                else "Every client drew its noise from its own operating system's entropy, where it runs. "
            )
            + "Clients privatise their clipped, whitened projected measurements once; every reply (states, "
            "pseudo-observations, gradients, loss) is post-processing. The information matrix J is a function "
            "of the local model only, not of the data. "
            + (
                "The server adds Gaussian noise to every data-dependent augmentation, calibrated through "
                "||A_s^{mn}||_2 times client n's state sensitivity. Epsilon is composed over both directions "
                "with sample rate 1 and one step per release."
                if noisy
                else "The augmentations the server sends are computed from the clients' privatised releases only, so "
                "the whole transcript in both directions is post-processing of one Gaussian mechanism per client "
                "(sample rate 1): the server -> clients figure is that client -> server bound, with no extra release."
            )
        ),
    }
