"""Run the federated protocol on Tennessee Eastman data (a config's `tep:` section) and add its sections:

    result.json "flowsheet"   the learned unit graph next to the flowsheet's material flows (fedgc.data.tep)
    result.json "origin"      {fault run: origin record} when tep.fault_runs is set (fedgc.analysis.origin)

Each unit is a client. Its local model is identified on `tep.identify_on` (default: the GC run itself)
and the protocol runs on `tep.run`. For the origin analysis every client scores its own innovations
with that same model: it calibrates its threshold on the GC run (normal operation, data it already
holds) and sends the server only its first crossing, onset strength and peak per fault run.

Rounds: the full fixed-point protocol converges on TEP with identified models (25 rounds on
d00_te). It diverged while the identification's measurement-noise correction could claim the whole
residual covariance of a state direction (see fedgc.core.local_model.corrected_process_noise): the
near-deterministic directions left by clipping got almost no gain and the augmented filters blew up.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedgc.protocol.session import ClientSession
from fedgc.app.config import ClientSpec, RunConfig
from fedgc.errors import ConfigError
from fedgc.core.granger import GCResult
from fedgc.core.local_model import LocalModel, identify, save_npz
from fedgc.analysis.origin import ClientMonitor, OriginSettings, calibrate, monitor, origin_dict, rank_origins
from fedgc.protocol.transport import LocalTransport
from fedgc.data.tep import FAULT_ORIGINS, TEPRun, TEPSettings, flowsheet_comparison, write_client_csvs


def identify_models(cfg: RunConfig) -> tuple[TEPRun, dict[str, LocalModel]]:
    """The GC run's data and every unit's local model (identified on tep.identify_on, else on the run)."""
    tep = _settings(cfg)
    run = tep.load(tep.run)
    train = run if tep.identify_on in (None, tep.run) else tep.load(tep.identify_on)
    models = {
        unit: identify(values, client=unit, rng=np.random.default_rng(cfg.seed + i))
        for i, (unit, values) in enumerate(train.clients.items())
    }
    return run, models


def run_tep(cfg: RunConfig, *, on_round=None):
    """`fedgc simulate|run` on a config with a `tep:` section, local engine."""
    from fedgc.app.runner import client_privacy, execute

    if cfg.streaming is not None:
        return run_tep_streaming(cfg, on_round=on_round)
    tep = _settings(cfg)
    if cfg.privacy is not None and tep.identify_on in (None, tep.run):
        raise ConfigError(
            f"{cfg.source or 'config'}: privacy needs local models identified on other data than the window it "
            f"protects; set tep.identify_on (e.g. d00) to a run other than tep.run ({tep.run})"
        )
    from fedgc.app.runner import privacy_plan

    plan = privacy_plan(replace(cfg, clients=()))  # the models are not identified on the protected window
    t0 = time.perf_counter()
    run, models = identify_models(cfg)
    sessions = []
    for i, (unit, model) in enumerate(models.items()):
        privacy = client_privacy(cfg, plan, i)
        sessions.append(
            ClientSession(
                unit, model, run.clients[unit],
                learn_theta=cfg.client.learn_theta or (privacy is not None and privacy.noisy_augmentation),
                theta_kind=cfg.client.theta, privacy=privacy,
            )
        )  # fmt: skip
    setup = time.perf_counter() - t0
    result = execute(
        cfg, LocalTransport(sessions), windows=[s.exact_window for s in sessions], on_round=on_round, plan=plan,
        sessions=sessions,
    )
    result.timings["setup_s"] = setup
    result.raw_data_bytes = int(sum(v.nbytes for v in run.clients.values()))
    add_sections(result, cfg, run, models)
    return result


def run_tep_streaming(cfg: RunConfig, *, on_round=None):
    """Streaming mode over tep.run (typically a fault run) with every unit's model identified on
    tep.identify_on (normal operation): the GC matrices per window, and the alerts set against the
    fault's known start ("fault_stream" section)."""
    from fedgc.protocol.session import StreamingSession
    from fedgc.app.streaming import execute_streaming, refuse_privacy

    refuse_privacy(cfg)
    tep = _settings(cfg)
    if tep.identify_on in (None, tep.run):
        raise ConfigError(
            f"{cfg.source or 'config'}: streaming over TEP needs tep.identify_on (normal operation, e.g. d00) set "
            f"to a run other than tep.run ({tep.run}): a model identified on the faulty run has learned the fault"
        )
    run, models = identify_models(cfg)
    sessions = [
        StreamingSession(unit, model, run.clients[unit], learn_theta=cfg.client.learn_theta, theta_kind=cfg.client.theta)
        for unit, model in models.items()
    ]
    result = execute_streaming(cfg, sessions, on_round=on_round)
    result.raw_data_bytes = int(sum(v.nbytes for v in run.clients.values()))
    add_sections(result, cfg, run, models)
    result.sections["fault_stream"] = fault_stream_summary(result.streaming, run)
    return result


def fault_stream_summary(stream: dict, run: TEPRun) -> dict:
    """Alerts of a TEP stream against the fault: how many came before the fault started (false
    alerts, the process being in normal operation; every alert of a run without a fault), and the
    first after it with its delay in samples."""
    start = run.fault_start
    alerts = stream["alerts"]
    # a normal-operation run (no fault) has only false alerts
    before = [a for a in alerts if start is None or a["time"] <= start]
    after = [a for a in alerts if start is not None and a["time"] > start]
    first = after[0] if after else None
    return {
        "run": run.name, "fault": run.fault, "fault_start": start, "known_origin": FAULT_ORIGINS.get(run.fault),
        "alerts_before_fault": len(before), "alerts_after_fault": len(after),
        "first_alert_after_fault": None if first is None else {
            "time": first["time"], "delay": None if start is None else first["time"] - start,
            "source": first["source"], "target": first["target"], "kind": first["kind"],
        },
        "sources_after_fault": sorted({a["source"] for a in after}),
    }  # fmt: skip


def add_sections(result, cfg: RunConfig, run: TEPRun, models: dict[str, LocalModel]) -> None:
    """Fill result.sections["flowsheet"] (and ["origin"] when tep.fault_runs is set)."""
    tep = _settings(cfg)
    gc = result.fit.gc
    t0 = time.perf_counter()
    result.sections["flowsheet"] = flowsheet_comparison(gc.clients, gc.edges, gc.strength, gc.log10_pvalue)
    result.sections["flowsheet"]["data"] = {"run": run.name, "identify_on": tep.identify_on or run.name, "source": str(run.source)}
    if tep.fault_runs:
        settings = tep.origin or OriginSettings()
        monitors = {u: calibrate(m, run.clients[u], client=u, settings=settings) for u, m in models.items()}
        result.sections["origin"] = {
            name: locate(tep.load(name), run, monitors, gc, settings) for name in tep.fault_runs
        }
        result.timings["origin_s"] = time.perf_counter() - t0


def locate(fault: TEPRun, normal: TEPRun, monitors: dict[str, ClientMonitor], gc: GCResult, settings: OriginSettings) -> dict:
    """The origin record of one fault run: each client scores its own data with its calibrated monitor;
    the server ranks from the crossing scalars and the learned graph."""
    if fault.columns != normal.columns:
        raise ConfigError(f"TEP run {fault.name} is split differently from {normal.name}")
    start = fault.fault_start if fault.fault_start is not None else 0
    results = {unit: monitor(mon, fault.clients[unit], start=start) for unit, mon in monitors.items()}
    ranking = rank_origins(
        {u: r.first_crossing for u, r in results.items()},
        {u: r.onset for u, r in results.items()},
        {u: r.peak for u, r in results.items()},
        clients=list(gc.clients),
        edges=np.asarray(gc.edges, dtype=bool),
        tie_window=settings.tie_window,
    )
    return origin_dict(
        results, ranking, start=start, fault=fault.fault, known_origin=FAULT_ORIGINS.get(fault.fault),
        calibration_run=normal.name, settings=settings._asdict(),
    )  # fmt: skip


def write_tep_clients(cfg: RunConfig, directory: str | Path) -> RunConfig:
    """Per-client CSVs of the GC run and each unit's identified model (.npz) in `directory`; returns the
    config that reads them (clients list, no tep section) for `fedgc run` and the Flower engines."""
    run, models = identify_models(cfg)
    directory = Path(directory)
    csvs = write_client_csvs(run, directory)
    specs = []
    for unit, model in models.items():
        path = directory / f"{unit}_model.npz"
        save_npz(path, model)
        # held_values: keep, as the in-process run feeds the arrays as they are (both engines see the same data)
        specs.append(ClientSpec(unit, csvs[unit], None, path, held_values="keep"))
    return replace(cfg, clients=tuple(specs), tep=None)


def run_tep_on_flower(cfg: RunConfig, *, out_dir: Path, superlink: str | None = None, on_round=None, message_format: str = "arrays"):
    """Flower engines: the per-client files go to OUT/clients/ and the nodes read them like any plant's; the
    flowsheet and origin sections are then computed in this process from the same (deterministic) models."""
    from fedgc.app.engines import run_with_engine

    files_cfg = write_tep_clients(cfg, Path(out_dir) / "clients")
    result = run_with_engine(files_cfg, mode="run", out_dir=out_dir, superlink=superlink, on_round=on_round, message_format=message_format)
    run, models = identify_models(cfg)
    add_sections(result, cfg, run, models)
    return result


def _settings(cfg: RunConfig) -> TEPSettings:
    if cfg.tep is None:
        raise ConfigError(f"{cfg.source or 'config'} has no 'tep' section")
    return cfg.tep
