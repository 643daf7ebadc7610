"""A private run's wiring: the budget solved before any data is touched, each client's mechanism, the
server's, and the figures the run reports (the maths is in fedgc.privacy).

The accountant needs opacus, which only private runs load: its modules (fedgc.privacy.accounting, and the
ledger that composes with it) are looked up by name in `accounting()` and `ledgers()`, which only the
functions that run when privacy is on call, so a run without privacy never imports opacus.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fedgc.app.config import ClientSpec, RunConfig
from fedgc.core.local_model import model_provenance
from fedgc.data.cleaning import ColumnPolicy
from fedgc.errors import ConfigError
from fedgc.files import file_digest
from fedgc.core.regression import Blocks
from fedgc.privacy.budget import PrivacyPlan
from fedgc.privacy.local import ClientPrivacy
from fedgc.privacy.server import ServerPrivacy
from fedgc.protocol.loop import FitResult
from fedgc.protocol.rules import rule_named
from fedgc.protocol.session import ClientSession

if TYPE_CHECKING:
    from fedgc.privacy.accounting import PrivacyAccountant

ACCOUNTING_MODULE = "fedgc.privacy.accounting"  # opacus's RDP/PRV accountant: private runs only
LEDGER_MODULE = "fedgc.privacy.ledger"  # a client's spends on its data file, composed by that accountant


def accounting() -> ModuleType:
    """fedgc.privacy.accounting, loaded (with opacus) when a private run first needs its accountant."""
    return importlib.import_module(ACCOUNTING_MODULE)


def ledgers() -> ModuleType:
    """fedgc.privacy.ledger, loaded (with opacus) when a private client opens the ledger of its data file."""
    return importlib.import_module(LEDGER_MODULE)


def privacy_plan(cfg: RunConfig) -> PrivacyPlan | None:
    """The noise multiplier and release budget of a private run, solved before any data is touched
    (ConfigError for a target that needs an absurd multiplier, or for anything the run would decide
    from the data it protects). None when privacy is off."""
    if cfg.privacy is None:
        return None
    refuse_data_dependence(cfg)
    rounds = cfg.server.max_rounds
    return accounting().plan_privacy(
        privacy_accountant(cfg), rounds=rounds, augmentations=rule_named(cfg.server.rule).data_dependent_augmentations(rounds),
        augmentation_noise=cfg.privacy.augmentation_noise,
    )  # fmt: skip


def refuse_data_dependence(cfg: RunConfig) -> None:
    """Nothing a private run releases may depend on the protected data except through the one accounted
    release: the model (and with it the columns used and the standardisation) comes from the model file or
    from other data (identify_on), never from the window itself; no column cleaning; no per-row alignment;
    no fault-origin scores (computed from raw data)."""
    where = cfg.source or "config"
    identified = [c.name for c in cfg.clients if c.model == "identify" and c.identify_on is None]
    if identified:
        raise ConfigError(
            f"{where}: privacy needs given local models; clients {identified} would identify theirs from the data "
            "privacy protects (give model: a .npz, e.g. from `fedgc identify --data history.csv`, or identify_on: a "
            "file of other, public or historical data)"
        )
    cleaning = [c.name for c in cfg.clients if c.policy != ColumnPolicy()]
    if cleaning:
        raise ConfigError(
            f"{where}: privacy: clients {cleaning} set column cleaning (constant_columns, held_values, max_missing), "
            "which the private data would decide; a private run uses exactly the model file's columns, as they are: "
            "remove those settings (clean the data, or the model, beforehand)"
        )
    if cfg.align != "none":
        raise ConfigError(f"{where}: privacy: align: {cfg.align} inserts rows where the data lack a time; align the "
                          "files beforehand (a private run needs complete, aligned data)")  # fmt: skip
    if not cfg.clients and cfg.tep is None and cfg.local_models == "identify":
        raise ConfigError(
            f"{where}: privacy needs local_models: given (an identified model is learned from the data privacy protects)"
        )
    if cfg.tep is not None and not cfg.clients:
        if cfg.tep.identify_on in (None, cfg.tep.run):
            raise ConfigError(
                f"{where}: privacy needs local models identified on other data than the window it protects; set "
                f"tep.identify_on (e.g. d00) to a run other than tep.run ({cfg.tep.run})"
            )
        if cfg.tep.fault_runs:
            raise ConfigError(
                f"{where}: privacy: the fault-origin analysis (tep.fault_runs) sends scores computed from raw data "
                "outside the accounted release; run it without privacy"
            )


def privacy_accountant(cfg: RunConfig) -> PrivacyAccountant:
    p = cfg.privacy
    if p is None:
        raise ConfigError("this run has no privacy section")
    return accounting().PrivacyAccountant(p.epsilon, p.delta, p.accountant, p.max_noise_multiplier)


def client_privacy(
    cfg: RunConfig, plan: PrivacyPlan | None, index: int, *, client: str = "", data_file: Path | None = None,
    run: str = "",
) -> ClientPrivacy | None:  # fmt: skip
    """Client `index`'s mechanism. Its noise comes from the operating system's entropy where it runs; with a
    data file, the client's ledger beside it records the seed for run `run` (a resumed run redraws the same
    release) and refuses a run past privacy.budget. privacy.reproducible_noise derives the noise from the
    run seed instead (NOT private: tests and benchmarks)."""
    if plan is None or cfg.privacy is None:
        return None
    p = cfg.privacy
    seed: int | tuple[int, ...] | None = None
    if p.reproducible_noise:
        seed = (cfg.seed, 1, index)
    elif data_file is not None:
        refuse_model_of_protected_data(cfg.clients[index] if index < len(cfg.clients) else None, data_file)
        ledger = ledgers().Ledger.open(data_file, client=client)
        seed = ledger.admit(
            client=client, run=run, plan=plan, acc=privacy_accountant(cfg), event_steps=p.event_steps, budget=p.budget
        )
    return ClientPrivacy(
        plan.noise_multiplier, p.clip if p.clip == "auto" else float(p.clip), p.clip_space,  # type: ignore[arg-type]
        p.debias == "client", seed, noisy_augmentation=plan.augmentation_noise, event_steps=p.event_steps,
        reproducible=p.reproducible_noise,
    )  # fmt: skip


def refuse_model_of_protected_data(spec: ClientSpec | None, data_file: Path) -> None:
    """A model file whose provenance (fedgc identify) is the very data file a private run protects would
    carry that data outside the accounted release."""
    if spec is None or not isinstance(spec.model, Path) or not spec.model.is_file():
        return
    if model_provenance(spec.model) == file_digest(data_file):
        raise ConfigError(
            f"client '{spec.name}': model file {spec.model} was identified on {data_file} itself, the data this "
            "private run protects; identify it on other data (`fedgc identify` with --data history.csv, or "
            "identify_on: in the client entry)"
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
    server: ServerPrivacy | None = None, *, client_noise_std: dict[str, float] | None = None,
    client_clip: dict[str, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The "privacy" record of result.json (fedgc.privacy.accounting.privacy_report). The clients' noise
    levels and clip norms come from the in-process sessions, or (Flower engines) from what the nodes reported."""
    if plan is None or cfg.privacy is None:
        return {"enabled": False}
    p = cfg.privacy
    stds = {s.name: float(s.privacy_noise_std) for s in sessions} if client_noise_std is None else client_noise_std
    clips = {s.name: float(s.privacy_clip) for s in sessions} if client_clip is None else client_clip
    report = accounting().privacy_report(
        privacy_accountant(cfg), plan, clients=list(fit.gc.clients), rounds_run=fit.rounds,
        augmentations_run=rule_named(cfg.server.rule).data_dependent_augmentations(fit.rounds), clip=p.clip,
        clip_space=p.clip_space, debias=p.debias, client_noise_std=stds, client_clip=clips,
        server_noise_std=[] if server is None else server.noise_std, event_steps=p.event_steps,
        reproducible=p.reproducible_noise,
    )  # fmt: skip
    report["shrink"] = p.shrink
    snr = {s.name: float(s.privacy_snr) for s in sessions}
    for name, ratio in snr.items():
        report["per_client"][name]["signal_to_noise"] = ratio
    report["noise_swamps_signal"] = noise_swamps_signal(fit, snr)
    return report


# A release whose signal variance is under this share of its noise variance barely shows its dynamics.
SWAMPED_BELOW = 0.1


def noise_swamps_signal(fit: FitResult, snr: dict[str, float]) -> bool:
    """The privacy noise drowns what the run estimates: every off-diagonal block of A_s came out zero (the
    shrinkage found no block above its noise level), or every client's release has a signal-to-noise
    ratio under SWAMPED_BELOW. Then AUROC and edges say little: raise epsilon or use a longer window."""
    blocks = Blocks.of(fit.gc.dims)
    off = ~np.eye(len(blocks.dims), dtype=bool)
    strengths = np.nan_to_num(np.asarray(fit.gc.strength, dtype=float))[off]
    return bool(np.all(strengths == 0.0)) or (bool(snr) and all(r < SWAMPED_BELOW for r in snr.values()))
