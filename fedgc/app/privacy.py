"""A private run's wiring: the budget solved before any data is touched, each client's mechanism, the
server's, and the figures the run reports (the maths is in fedgc.privacy).

The accountant needs opacus, which only private runs load: its module is imported inside the functions
that run only when privacy is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fedgc.app.config import RunConfig
from fedgc.errors import ConfigError
from fedgc.privacy.budget import PrivacyPlan
from fedgc.privacy.local import ClientPrivacy
from fedgc.privacy.server import ServerPrivacy
from fedgc.protocol.loop import FitResult
from fedgc.protocol.rules import rule_named
from fedgc.protocol.session import ClientSession

if TYPE_CHECKING:
    from fedgc.privacy.accounting import PrivacyAccountant


def privacy_plan(cfg: RunConfig) -> PrivacyPlan | None:
    """The noise multiplier and release budget of a private run, solved before any data is touched
    (ConfigError for a target that needs an absurd multiplier). None when privacy is off."""
    if cfg.privacy is None:
        return None
    # The guarantee covers releases computed from a fixed model; a model identified from the very
    # window it protects (its C, R, standardisation) is itself an unprotected function of that data.
    identified = [c.name for c in cfg.clients if c.model == "identify"]
    if cfg.clients and identified:
        raise ConfigError(
            f"{cfg.source or 'config'}: privacy needs given local models; clients {identified} would identify "
            "theirs from the data privacy protects (give model: a .npz identified on other data)"
        )
    if not cfg.clients and cfg.tep is None and cfg.local_models == "identify":
        raise ConfigError(
            f"{cfg.source or 'config'}: privacy needs local_models: given (an identified model is learned "
            "from the data privacy protects)"
        )
    if cfg.tep is not None and not cfg.clients and cfg.tep.identify_on in (None, cfg.tep.run):
        raise ConfigError(
            f"{cfg.source or 'config'}: privacy needs local models identified on other data than the window it "
            f"protects; set tep.identify_on (e.g. d00) to a run other than tep.run ({cfg.tep.run})"
        )
    from fedgc.privacy.accounting import plan_privacy  # opacus: private runs only

    rounds = cfg.server.max_rounds
    return plan_privacy(
        privacy_accountant(cfg), rounds=rounds, augmentations=rule_named(cfg.server.rule).data_dependent_augmentations(rounds),
        augmentation_noise=cfg.privacy.augmentation_noise,
    )  # fmt: skip


def privacy_accountant(cfg: RunConfig) -> PrivacyAccountant:
    from fedgc.privacy.accounting import PrivacyAccountant  # opacus: private runs only

    p = cfg.privacy
    if p is None:
        raise ConfigError("this run has no privacy section")
    return PrivacyAccountant(p.epsilon, p.delta, p.accountant, p.max_noise_multiplier)


def client_privacy(cfg: RunConfig, plan: PrivacyPlan | None, index: int) -> ClientPrivacy | None:
    """Client `index`'s privacy settings with its own Generator (derived from the run seed)."""
    if plan is None or cfg.privacy is None:
        return None
    p = cfg.privacy
    return ClientPrivacy(
        plan.noise_multiplier, p.clip, p.clip_space, p.debias == "client", np.random.default_rng([cfg.seed, 1, index]),
        noisy_augmentation=plan.augmentation_noise,
    )


def server_privacy(cfg: RunConfig, plan: PrivacyPlan | None) -> ServerPrivacy | None:
    if plan is None or cfg.privacy is None:
        return None
    sigma = plan.noise_multiplier if plan.augmentation_noise else 0.0  # else: post-processing, no noise
    return ServerPrivacy(
        sigma, np.random.default_rng([cfg.seed, 2]), debias=cfg.privacy.debias == "server", shrink=cfg.privacy.shrink
    )


def privacy_summary(
    cfg: RunConfig, plan: PrivacyPlan | None, fit: FitResult, sessions: Sequence[ClientSession] = (),
    server: ServerPrivacy | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The "privacy" record of result.json (fedgc.privacy.accounting.privacy_report)."""
    if plan is None or cfg.privacy is None:
        return {"enabled": False}
    from fedgc.privacy.accounting import privacy_report  # opacus: private runs only

    p = cfg.privacy
    report = privacy_report(
        privacy_accountant(cfg), plan, clients=list(fit.gc.clients), rounds_run=fit.rounds,
        augmentations_run=rule_named(cfg.server.rule).data_dependent_augmentations(fit.rounds), clip=p.clip,
        clip_space=p.clip_space, debias=p.debias,
        client_noise_std={s.name: float(s.privacy_noise_std) for s in sessions},
        server_noise_std=[] if server is None else server.noise_std,
    )  # fmt: skip
    report["shrink"] = p.shrink
    return report
