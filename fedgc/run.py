"""Orchestration: build clients from a config (synthetic or CSV), run the protocol, evaluate.

Thin on purpose: the maths is in kalman/client/server/granger, the transport in protocol
(local) or the Flower apps (clients/, server/).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fedgc.client import ClientSession
from fedgc.config import ClientOptions, ClientSpec, RunConfig
from fedgc.align import align_tables, check_lengths
from fedgc.data import ClientTable, read_client_csv, write_client_csv
from fedgc.errors import ConfigError, FedGCError, FedGCWarning, ModelError
from fedgc.local_model import LocalModel, identify, load_npz, save_npz, validate
from fedgc.messages import CountingTransport
from fedgc.metrics import EdgeScores, edge_scores, relative_error
from fedgc.oracle import oracle_fit
from fedgc.protocol import FitResult, LocalTransport, RoundRecord, Transport, run_protocol
from fedgc.server import Blocks
from fedgc.synthetic import SyntheticData, simulate


@dataclass(frozen=True)
class Truth:
    """Known ground truth of a simulated run. edges: (M, M) [target, source];
    A: (D, D) true joint transition, comparable with A_s only when clients were given the true models."""

    edges: np.ndarray
    A: np.ndarray | None


@dataclass
class RunResult:
    """Everything a run produced; `fedgc.report` turns it into files."""

    config: RunConfig
    fit: FitResult
    engine: str
    truth: Truth | None = None
    oracle_A: np.ndarray | None = None
    oracle_history: list[RoundRecord] = field(default_factory=list)
    scores: EdgeScores | None = None
    error_vs_truth: float | None = None
    error_vs_oracle: float | None = None
    oracle_error_vs_truth: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    communication: dict[str, object] = field(default_factory=dict)
    raw_data_bytes: int = 0
    privacy: dict = field(default_factory=lambda: {"enabled": False})
    sections: dict = field(default_factory=dict)  # extra result.json keys, e.g. "flowsheet", "origin" (fedgc.tep_run)
    streaming: dict | None = None  # streaming mode: the "streaming" record of result.json (fedgc.streaming_run)
    data: dict = field(default_factory=dict)


def read_table(spec: ClientSpec, *, sort_timestamps: bool = False) -> ClientTable:
    """A client's own CSV file, read with its column policies (fedgc.cleaning)."""
    return read_client_csv(
        spec.data, client=spec.name, timestamp_column=spec.timestamp_column, policy=spec.policy,
        sort_timestamps=sort_timestamps,
    )


def build_session(
    spec: ClientSpec, options: ClientOptions, *, seed: int = 0, privacy=None, table: ClientTable | None = None,
    session_class=ClientSession,
) -> ClientSession:
    """A client built from its own CSV file and its own model (given .npz or identified).
    privacy: a fedgc.privacy.local.ClientPrivacy (with noisy augmentation theta is always learned: it shrinks it).
    table: the client's table when already read (and aligned); else its file is read here.
    session_class: ClientSession, or fedgc.streaming.StreamingSession for streaming mode."""
    table = read_table(spec) if table is None else table
    model = _local_model(spec, table, seed)
    return session_class(
        spec.name, model, table.values, learn_theta=options.learn_theta or (privacy is not None and privacy.noisy_augmentation),
        theta_kind=options.theta, privacy=privacy,
    )


def privacy_plan(cfg: RunConfig):
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
    if not cfg.clients and cfg.local_models == "identify":
        raise ConfigError(
            f"{cfg.source or 'config'}: privacy needs local_models: given (an identified model is learned "
            "from the data privacy protects)"
        )
    from fedgc.privacy.accounting import plan_privacy

    return plan_privacy(
        privacy_accountant(cfg), rule=cfg.server.rule, rounds=cfg.server.max_rounds,
        augmentation_noise=cfg.privacy.augmentation_noise,
    )  # fmt: skip


def privacy_accountant(cfg: RunConfig):
    from fedgc.privacy.accounting import PrivacyAccountant

    p = cfg.privacy
    return PrivacyAccountant(p.epsilon, p.delta, p.accountant, p.max_noise_multiplier)


def client_privacy(cfg: RunConfig, plan, index: int):
    """Client `index`'s privacy settings with its own Generator (derived from the run seed)."""
    if plan is None:
        return None
    from fedgc.privacy.local import ClientPrivacy

    p = cfg.privacy
    return ClientPrivacy(
        plan.noise_multiplier, p.clip, p.clip_space, p.debias == "client", np.random.default_rng([cfg.seed, 1, index]),
        noisy_augmentation=plan.augmentation_noise,
    )


def server_privacy(cfg: RunConfig, plan):
    if plan is None:
        return None
    from fedgc.privacy.server import ServerPrivacy

    sigma = plan.noise_multiplier if plan.augmentation_noise else 0.0  # else: post-processing, no noise
    return ServerPrivacy(
        sigma, np.random.default_rng([cfg.seed, 2]), debias=cfg.privacy.debias == "server", shrink=cfg.privacy.shrink
    )


def privacy_summary(cfg: RunConfig, plan, fit: FitResult, sessions=None, server=None) -> dict:
    if plan is None:
        return {"enabled": False}
    from fedgc.privacy.accounting import privacy_report

    p = cfg.privacy
    acc = privacy_accountant(cfg)
    stds = {s.name: float(s.privacy_noise_std) for s in sessions or []}
    report = privacy_report(
        acc, plan, clients=list(fit.gc.clients), rounds_run=fit.rounds, rule=cfg.server.rule, clip=p.clip,
        clip_space=p.clip_space, debias=p.debias, client_noise_std=stds,
        server_noise_std=[] if server is None else server.noise_std,
    )
    report["shrink"] = p.shrink
    return report


def _local_model(spec: ClientSpec, table: ClientTable, seed: int) -> LocalModel:
    values = table.values
    if spec.model == "identify":
        return identify(
            values,
            client=spec.name,
            state_dim=spec.state_dim,
            explained_variance=spec.explained_variance,
            rng=np.random.default_rng(seed),
        )
    model = load_npz(spec.model, spec.name)
    kept, n_file = table.cleaning.kept, table.cleaning.file_columns
    if model.obs_dim == values.shape[1]:
        return model
    if kept and model.obs_dim == n_file:
        # A model of every column in the file: its marginal on the kept sensors (a dropped sensor is one
        # that is never observed, so its rows of C and R simply leave the measurement model).
        k = np.asarray(kept)
        restricted = LocalModel(
            A=model.A, C=model.C[k], Q=model.Q, R=model.R[np.ix_(k, k)], mean=model.mean[k], scale=model.scale[k]
        )
        try:
            validate(restricted, spec.name)
        except ModelError as exc:
            raise ModelError(f"{exc} (model {spec.model} without the dropped column(s) of {spec.data})") from None
        return restricted
    dropped = [*table.cleaning.dropped_constant, *(c for c, _ in table.cleaning.dropped_missing)]
    after = f" after dropping column(s) {', '.join(map(repr, dropped))} ({n_file} in the file)" if dropped else ""
    raise ConfigError(
        f"client '{spec.name}': model {spec.model} has {model.obs_dim} sensors but {spec.data} has "
        f"{values.shape[1]} columns{after}"
    )


def simulate_scenario(cfg: RunConfig) -> SyntheticData:
    if cfg.synthetic is None:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc simulate` needs a 'synthetic' section")
    return simulate(cfg.synthetic, np.random.default_rng(cfg.seed))


def scenario_sessions(cfg: RunConfig, data: SyntheticData, plan=None, *, session_class=ClientSession) -> list[ClientSession]:
    """In-process clients for a simulated scenario (the local engine's shortcut past CSV files)."""
    sessions = []
    for m, y in enumerate(data.y):
        name = f"client{m}"
        if cfg.local_models == "given":
            model = data.system.local_model(m)
        else:
            model = identify(y, client=name, rng=np.random.default_rng(cfg.seed + m))
        privacy = client_privacy(cfg, plan, m)
        sessions.append(
            session_class(
                name, model, y, learn_theta=cfg.client.learn_theta or (privacy is not None and privacy.noisy_augmentation),
                theta_kind=cfg.client.theta, privacy=privacy,
            )
        )
    return sessions


def write_scenario_files(cfg: RunConfig, data: SyntheticData, directory: Path) -> RunConfig:
    """Write each simulated client's CSV (and true model when given) and return the config that reads them,
    so deployed engines can run a scenario exactly as they would run real plant data."""
    directory.mkdir(parents=True, exist_ok=True)
    specs = []
    for m, y in enumerate(data.y):
        name = f"client{m}"
        csv = directory / f"{name}.csv"
        write_client_csv(csv, y, columns=[f"s{j}" for j in range(y.shape[1])])
        model: str | Path = "identify"
        if cfg.local_models == "given":
            model = directory / f"{name}_model.npz"
            save_npz(model, data.system.local_model(m))
        specs.append(ClientSpec(name, csv, None, model))
    return replace(cfg, clients=tuple(specs))


def execute(
    cfg: RunConfig,
    transport: Transport,
    *,
    windows: Sequence | None = None,
    truth: Truth | None = None,
    engine: str = "local",
    on_round: Callable[[RoundRecord], None] | None = None,
    stop_when: Callable[[np.ndarray], bool] | None = None,
    plan=None,
    sessions=None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the protocol over `transport`; evaluate against the oracle (from in-process windows) and truth.
    plan: the privacy plan (privacy_plan) or None; sessions: the in-process clients, for the privacy report.
    checkpoint_dir: write a checkpoint there after every round (fedgc.checkpoint); resume: continue from it.
    result.communication: the bytes each exchange put on the wire (fedgc.messages.payload_bytes)."""
    t0 = time.perf_counter()
    server = server_privacy(cfg, plan)
    counting = transport if isinstance(transport, CountingTransport) else CountingTransport(transport)
    saver, start = None, None
    if checkpoint_dir is not None:
        from fedgc.checkpoint import Checkpointing, config_fingerprint

        saver = Checkpointing(
            Path(checkpoint_dir), config_fingerprint(cfg), cfg.server.rule, tuple(sessions or ()), plan,
            None if plan is None else privacy_accountant(cfg),
        )  # fmt: skip
        start = saver.start(resume=resume)
    elif resume:
        raise ConfigError("resuming needs the output folder that holds the checkpoint")
    try:
        fit = run_protocol(
            counting, cfg.server, on_round=on_round, stop_when=stop_when, privacy=server, resume=start, on_checkpoint=saver
        )
    except FedGCError as exc:
        from fedgc.checkpoint import CHECKPOINT_FILE

        kept = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
        if kept is not None and kept.is_file():
            exc.args = (f"{exc}; the last completed round is kept in {kept} (continue with --resume {checkpoint_dir})",)
        raise
    result = RunResult(cfg, fit, engine, truth=truth)
    result.timings["protocol_s"] = time.perf_counter() - t0
    result.privacy = privacy_summary(cfg, plan, fit, sessions=sessions, server=server)
    result.communication = counting.log.summary()
    return evaluate(result, windows=windows, truth=truth)


def evaluate(result: RunResult, *, windows: Sequence | None = None, truth: Truth | None = None) -> RunResult:
    """Fill in the oracle (from in-process windows: evaluation only, it sees raw data) and truth scores."""
    cfg, fit = result.config, result.fit
    result.truth = truth
    blocks = Blocks.of(fit.gc.dims)
    if cfg.oracle and windows is not None:
        t1 = time.perf_counter()
        result.oracle_A, result.oracle_history = oracle_fit(windows, cfg.server)
        result.timings["oracle_s"] = time.perf_counter() - t1
        result.error_vs_oracle = relative_error(fit.A_s, result.oracle_A, blocks)
    if truth is not None:
        score = -np.nan_to_num(fit.gc.log10_pvalue, nan=0.0)
        result.scores = edge_scores(score, fit.gc.edges, truth.edges)
        if truth.A is not None:
            result.error_vs_truth = relative_error(fit.A_s, truth.A, blocks)
            if result.oracle_A is not None:
                result.oracle_error_vs_truth = relative_error(result.oracle_A, truth.A, blocks)
    return result


def run_simulation(cfg: RunConfig, *, on_round=None, checkpoint_dir: Path | None = None, resume: bool = False) -> RunResult:
    """`fedgc simulate` with the local engine (checkpoint_dir, resume: see execute)."""
    if resume and (cfg.tep is not None or cfg.streaming is not None):
        raise ConfigError(f"{cfg.source or 'config'}: --resume continues batch runs; tep and streaming runs start afresh")
    if cfg.tep is not None:
        from fedgc.tep_run import run_tep

        return run_tep(cfg, on_round=on_round)
    if cfg.streaming is not None:
        from fedgc.streaming_run import simulate_streaming

        return simulate_streaming(cfg, on_round=on_round, out_dir=checkpoint_dir)
    plan = privacy_plan(cfg)  # before any data is touched
    data = simulate_scenario(cfg)
    sessions = scenario_sessions(cfg, data, plan)
    truth = Truth(data.system.edges, data.system.A if cfg.local_models == "given" else None)
    result = execute(
        cfg, LocalTransport(sessions), windows=[s.exact_window for s in sessions], truth=truth, on_round=on_round,
        plan=plan, sessions=sessions, checkpoint_dir=checkpoint_dir, resume=resume,
    )
    result.raw_data_bytes = int(sum(y.nbytes for y in data.y))
    return result


def run_real(cfg: RunConfig, *, on_round=None, checkpoint_dir: Path | None = None, resume: bool = False) -> RunResult:
    """`fedgc run` with the local engine: every client reads only its own file (checkpoint_dir, resume: see execute)."""
    if resume and (cfg.tep is not None or cfg.streaming is not None):
        raise ConfigError(f"{cfg.source or 'config'}: --resume continues batch runs; tep and streaming runs start afresh")
    if cfg.tep is not None and not cfg.clients:
        from fedgc.tep_run import run_tep

        return run_tep(cfg, on_round=on_round)
    if not cfg.clients:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc run` needs a 'clients' list (or --data files)")
    if cfg.streaming is not None:
        from fedgc.streaming_run import run_streaming_real

        return run_streaming_real(cfg, on_round=on_round, out_dir=checkpoint_dir)
    plan = privacy_plan(cfg)  # before any data is touched
    tables, data = read_tables(cfg)
    sessions = [
        build_session(spec, cfg.client, seed=cfg.seed + i, privacy=client_privacy(cfg, plan, i), table=table)
        for i, (spec, table) in enumerate(zip(cfg.clients, tables))
    ]
    result = execute(
        cfg, LocalTransport(sessions), windows=[s.exact_window for s in sessions], on_round=on_round, plan=plan,
        sessions=sessions, checkpoint_dir=checkpoint_dir, resume=resume,
    )
    result.raw_data_bytes = int(sum(s.window.ytil.shape[0] * s.model.obs_dim * 8 for s in sessions))
    result.data = data
    return result


# Missing fraction above which the p-values' optimism is worth a warning (10% missing: 2% false positives at 0.05).
OPTIMISTIC_PVALUES_ABOVE = 0.15


def read_tables(cfg: RunConfig) -> tuple[list[ClientTable], dict]:
    """Every client's table on one time axis (cfg.align, fedgc.align) and what was done to the data."""
    align = cfg.align == "timestamp"
    tables = [read_table(spec, sort_timestamps=align) for spec in cfg.clients]
    rows = None
    if align:
        tables, rows = align_tables(tables)
    else:
        check_lengths(tables)
    summary = {}
    for t in tables:
        entry = {"file": str(t.path), "columns": len(t.columns), "rows": int(t.values.shape[0]),
                 "rows_sorted": bool(t.rows_sorted), **t.cleaning.summary()}
        entry["missing_fraction"] = float(np.isnan(t.values).mean())
        if entry["missing_fraction"] > OPTIMISTIC_PVALUES_ABOVE:
            warnings.warn(FedGCWarning(
                f"client {t.client!r} ({t.path}): {entry['missing_fraction']:.0%} of the measurements are missing; "
                "the filter skips them exactly, but the Granger p-values count completed steps as observed and "
                "are optimistic at this level (measured: ~20% false positives at alpha 0.05 with 30% missing)"
            ), stacklevel=2)
        if rows is not None:
            entry["alignment"] = rows[t.client]._asdict()
        summary[t.client] = entry
    return tables, {"align": cfg.align, "clients": summary}


def config_from_files(paths: Sequence[str | Path], **overrides) -> RunConfig:
    """A first look without a config: one client per file, named after the file, D_m from the data."""
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    if len(paths) < 2:
        raise ConfigError("--data needs at least two client files")
    if len(set(names)) != len(names):
        raise ConfigError(f"--data files must have distinct names, got {names}")
    return RunConfig(name="run", clients=tuple(ClientSpec(n, p) for n, p in zip(names, paths)), **overrides)
