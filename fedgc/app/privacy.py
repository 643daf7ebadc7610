"""A private run's wiring: the budget solved before any data is touched, each client's mechanism, the
server's, and the figures the run reports (the maths is in fedgc.privacy).

Every engine builds a client's mechanism here, where the client runs: the local engine in process
(fedgc.app.clients), a Flower node in its ClientApp (node_privacy, from the settings and plan the setup
message carries), so noise, ledger and refusals are the same whatever carries the messages.

The accountant needs opacus, which only private runs load: its modules (fedgc.privacy.accounting, and the
ledger that composes with it) are looked up by name in `accounting()` and `ledgers()`, which only the
functions that run when privacy is on call, so a run without privacy never imports opacus.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgc.app.config import ClientSpec, PrivacySettings, RunConfig, to_plain
from fedgc.app.config_schema import codec_for
from fedgc.core.local_model import model_provenance
from fedgc.core.regression import Blocks
from fedgc.data.cleaning import ColumnPolicy
from fedgc.errors import ConfigError
from fedgc.files import file_digest
from fedgc.privacy.budget import PrivacyPlan
from fedgc.privacy.local import ClientPrivacy
from fedgc.privacy.server import ServerPrivacy
from fedgc.protocol.loop import FitResult
from fedgc.protocol.messages import ClientInfo
from fedgc.protocol.rules import rule_named

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
    refuse_client_data_dependence(cfg.clients, where=where)
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


def refuse_client_data_dependence(clients: Sequence[ClientSpec], *, where: str) -> None:
    """What a private client may not let its data decide, wherever it runs: its model (identified from the
    window it protects) and its column cleaning."""
    identified = [c.name for c in clients if c.model == "identify" and c.identify_on is None]
    if identified:
        raise ConfigError(
            f"{where}: privacy needs given local models; clients {identified} would identify theirs from the data "
            "privacy protects (give model: a .npz, e.g. from `fedgc identify --data history.csv`, or identify_on: a "
            "file of other, public or historical data)"
        )
    cleaning = [c.name for c in clients if c.policy != ColumnPolicy()]
    if cleaning:
        raise ConfigError(
            f"{where}: privacy: clients {cleaning} set column cleaning (constant_columns, held_values, max_missing), "
            "which the private data would decide; a private run uses exactly the model file's columns, as they are: "
            "remove those settings (clean the data, or the model, beforehand)"
        )


def privacy_accountant(cfg: RunConfig) -> PrivacyAccountant:
    if cfg.privacy is None:
        raise ConfigError("this run has no privacy section")
    return accountant_of(cfg.privacy)


def accountant_of(p: PrivacySettings) -> PrivacyAccountant:
    return accounting().PrivacyAccountant(p.epsilon, p.delta, p.accountant, p.max_noise_multiplier)


def client_privacy(
    p: PrivacySettings | None, plan: PrivacyPlan | None, index: int, *, seed: int, client: str = "",
    data_file: Path | None = None, run: str = "", spec: ClientSpec | None = None,
) -> ClientPrivacy | None:  # fmt: skip
    """Client `index`'s mechanism under privacy settings p and the run's plan. Its noise comes from the
    operating system's entropy where it runs; with a data file, the client's ledger beside it records the
    seed for run `run` (a resumed run redraws the same release) and refuses a run past p.budget, and a
    model file of `spec` identified on that data file itself.
    p.reproducible_noise derives the noise from the run seed `seed` instead (NOT private: tests and
    benchmarks)."""
    if plan is None or p is None:
        return None
    check_plan(p, plan, client=client)
    noise_seed: int | tuple[int, ...] | None = None
    if p.reproducible_noise:
        noise_seed = (seed, 1, index)
    elif data_file is not None:
        refuse_model_of_protected_data(spec, data_file)
        ledger = ledgers().Ledger.open(data_file, client=client)
        noise_seed = ledger.admit(
            client=client, run=run, plan=plan, acc=accountant_of(p), event_steps=p.event_steps, budget=p.budget
        )
    return ClientPrivacy(
        plan.noise_multiplier, p.clip if p.clip == "auto" else float(p.clip), p.clip_space,  # type: ignore[arg-type]
        p.debias == "client", noise_seed, noisy_augmentation=plan.augmentation_noise, event_steps=p.event_steps,
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


def check_plan(p: PrivacySettings, plan: PrivacyPlan, *, client: str = "") -> None:
    """A plan that keeps the settings' promise: the same target, and a noise multiplier whose releases
    spend no more than epsilon (a client that receives its plan from the server checks it before releasing)."""
    who = f"client '{client}': " if client else ""
    target = (float(p.epsilon), float(p.delta), p.accountant, p.augmentation_noise)
    planned = (float(plan.epsilon), float(plan.delta), plan.accountant, plan.augmentation_noise)
    if planned != target or plan.client_releases < 1:
        raise ConfigError(f"{who}the privacy plan {tuple(plan)} does not match the privacy settings {target}")
    spent = accountant_of(p).spent(noise_multiplier=plan.noise_multiplier, steps=plan.steps)
    if not spent <= p.epsilon * (1 + 1e-9) and not math.isinf(p.epsilon):
        raise ConfigError(
            f"{who}the privacy plan's noise multiplier {plan.noise_multiplier:g} over {plan.steps} releases spends "
            f"epsilon {spent:.4g}, over the target {p.epsilon:g}: the client refuses to release"
        )


def privacy_text(p: PrivacySettings) -> str:
    """The privacy settings as the JSON text a Flower setup message carries (fedgc.protocol.wire.SetupRequest)."""
    return json.dumps(to_plain(p))


def node_privacy(
    text: str, plan: PrivacyPlan, spec: ClientSpec, *, index: int, seed: int, run: str
) -> ClientPrivacy | None:  # fmt: skip
    """A Flower node's mechanism for its client `spec` (its own node config) from the settings (JSON text)
    and plan the server's setup sent: the refusals of the local engine for this client, then client_privacy
    with the node's own data file, so its ledger lives beside that file, on the node."""
    where = f"client '{spec.name}' (data file {str(spec.data)!r})"
    try:
        p = codec_for(PrivacySettings).parse(json.loads(text), where=f"{where}: the setup's privacy settings")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: the setup's privacy settings are not JSON: {exc}") from None
    refuse_client_data_dependence([spec], where=where)
    return client_privacy(p, plan, index, seed=seed, client=spec.name, data_file=spec.data, run=run, spec=spec)


def server_privacy(cfg: RunConfig, plan: PrivacyPlan | None) -> ServerPrivacy | None:
    if plan is None or cfg.privacy is None:
        return None
    sigma = plan.noise_multiplier if plan.augmentation_noise else 0.0  # else: post-processing, no noise
    return ServerPrivacy(
        sigma, np.random.default_rng([cfg.seed, 2]), debias=cfg.privacy.debias == "server", shrink=cfg.privacy.shrink
    )


def privacy_summary(
    cfg: RunConfig, plan: PrivacyPlan | None, fit: FitResult, clients: Sequence[ClientInfo] = (),
    server: ServerPrivacy | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The "privacy" record of result.json (fedgc.privacy.accounting.privacy_report). The clients' noise
    levels, clip norms and signal-to-noise ratios are what each reported of its release (ClientInfo.release:
    the in-process sessions, or a Flower node's setup reply), so every engine fills it the same way."""
    if plan is None or cfg.privacy is None:
        return {"enabled": False}
    p = cfg.privacy
    released = {c.name: c.release for c in clients if c.release is not None}
    report = accounting().privacy_report(
        privacy_accountant(cfg), plan, clients=list(fit.gc.clients), rounds_run=fit.rounds,
        augmentations_run=rule_named(cfg.server.rule).data_dependent_augmentations(fit.rounds), clip=p.clip,
        clip_space=p.clip_space, debias=p.debias, client_noise_std={n: r.noise_std for n, r in released.items()},
        client_clip={n: r.clip for n, r in released.items()},
        server_noise_std=[] if server is None else server.noise_std, event_steps=p.event_steps,
        reproducible=p.reproducible_noise,
    )  # fmt: skip
    report["shrink"] = p.shrink
    snr = {name: r.signal_to_noise for name, r in released.items()}
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
