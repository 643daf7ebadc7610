"""The clients of a run, from whichever source the config names: a synthetic scenario (`synthetic:`),
per-client CSV files (`clients:`), or the Tennessee Eastman units (`tep:`).

For the local engine every client becomes an in-process session (`local_clients`); for the Flower
engines each client's data (and given model) is a file a node reads (`deployment_files`), so both
engines see data exactly as plants export it. Each client reads only its own file; a local model is
given (.npz) or identified from the client's own data (fedgc.core.local_model.identify).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from fedgc.analysis.stream import Switch, true_switches
from fedgc.app.alert_reference import NormalOperation, cross_fit_sessions, reference_sessions
from fedgc.app.checkpoint import config_fingerprint
from fedgc.app.config import ClientOptions, ClientSpec, RunConfig
from fedgc.app.privacy import client_privacy
from fedgc.app.results import ClientData, RunResult, Truth
from fedgc.app.tep import TEPClients, tep_reference
from fedgc.app.worker_processes import can_fork, map_in_processes
from fedgc.core.local_model import LocalModel, identify, load_npz, save_npz, validate
from fedgc.core.snapshots import snapshot
from fedgc.core.window import ClientWindow, prepare_window
from fedgc.data.align import AlignedRows, align_tables, check_lengths
from fedgc.data.cleaning import ColumnPolicy, find_held
from fedgc.data.csv import ClientTable, read_client_csv, write_client_csv
from fedgc.data.synthetic import SyntheticData, simulate
from fedgc.errors import ConfigError, DataError, FedGCWarning, ModelError
from fedgc.privacy.budget import PrivacyPlan
from fedgc.privacy.local import ClientPrivacy
from fedgc.protocol.session import ClientSession, StreamingSession

# Threads of the local engine: clients built and their rounds run this many at a time (at most two: each
# client being built holds its raw table, ~0.5 GB with its file for a year of 1-minute data from 50 sensors).
LOCAL_WORKERS = max(1, min(2, os.cpu_count() or 1))

# Missing fraction above which the p-values' optimism is worth a warning (10% missing: 2% false positives at 0.05).
OPTIMISTIC_PVALUES_ABOVE = 0.15


@dataclass
class Clients:
    """What a run's clients are, for the local engine (sessions) or the Flower engines (a config whose
    clients read files). truth: known graph (synthetic); switches: known edge changes (synthetic streams);
    raw_data_bytes: raw data the clients keep; data: per-client data-quality notes (CSV clients);
    oracle_windows: every client's exact window, for the centralized oracle (evaluation only);
    finish: adds a source's own sections to the result (TEP: flowsheet, fault origin)."""

    config: RunConfig
    sessions: list[ClientSession] = field(default_factory=list)
    truth: Truth | None = None
    switches: list[Switch] | None = None
    raw_data_bytes: int = 0
    data: dict[str, ClientData] | None = None
    align: str = "none"
    oracle_windows: list[ClientWindow] | None = None
    finish: Callable[[RunResult], None] | None = None


def local_clients(cfg: RunConfig, *, mode: str, plan: PrivacyPlan | None) -> Clients:
    """In-process sessions for the local engine (streaming sessions in streaming mode), and the exact windows
    the oracle pools when cfg asks for it (a private run's sessions keep none: the oracle of a private
    simulation is computed here, from the synthetic data, outside the guarantee)."""
    session_class = StreamingSession if cfg.streaming is not None else ClientSession
    siv = snapshot_request(cfg)
    if cfg.tep is not None and not cfg.clients:
        tep = TEPClients.of(cfg)
        sessions = [
            session_class(unit, model, tep.run.clients[unit], learn_theta=_learns(cfg.client, privacy),
                          theta_kind=cfg.client.theta, privacy=privacy,  # type: ignore[arg-type]
                          snapshot=snapshot_series(tep.run.clients[unit], client=unit, request=siv))
            for (unit, model), privacy in zip(tep.models.items(), _privacies(cfg, plan, list(tep.models)))
        ]  # fmt: skip
        return Clients(cfg, sessions, raw_data_bytes=tep.raw_data_bytes, finish=tep.add_sections,
                       oracle_windows=_exact(sessions))  # fmt: skip
    if mode == "simulate":
        data = simulate_scenario(cfg)
        sessions = scenario_sessions(cfg, data, plan, session_class=session_class)
        if cfg.streaming is not None:
            truth = Truth(np.asarray(data.edges_over_time[-1], dtype=bool), None)
            switches = true_switches(data, cfg.synthetic.perturbations if cfg.synthetic else ())
        else:
            truth, switches = scenario_truth(cfg, data), None
        windows = _exact(sessions)
        if plan is not None and cfg.evaluation.oracle:
            windows = [prepare_window(s.model, y, s.name) for s, y in zip(sessions, data.y)]
        return Clients(cfg, sessions, truth, switches, raw_data_bytes=int(sum(y.nbytes for y in data.y)),
                       oracle_windows=windows)  # fmt: skip
    if not cfg.clients:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc run` needs a 'clients' list (or --data files)")
    sessions, summary = read_sessions(cfg, plan, session_class=session_class, workers=LOCAL_WORKERS,
                                      snapshots=snapshot_request(cfg))  # fmt: skip
    raw = int(sum(s.series_steps * s.model.obs_dim * 8 for s in sessions))
    return Clients(cfg, sessions, raw_data_bytes=raw, data=summary, align=cfg.align, oracle_windows=_exact(sessions))


def _exact(sessions: list[ClientSession]) -> list[ClientWindow] | None:
    """The sessions' exact windows, or None when one has none (a private client keeps nothing raw)."""
    windows = [s.exact_window for s in sessions]
    return None if any(w is None for w in windows) else [w for w in windows if w is not None]


def deployment_files(cfg: RunConfig, *, mode: str, directory: Path) -> Clients:
    """The run as per-client files in `directory` for the Flower engines (a synthetic scenario's CSVs and
    given models, or the TEP units' CSVs and identified models), with the evaluation the submitter can
    do: the truth of a simulated scenario. Never the oracle (runner.with_oracle_decided: it pools raw data,
    which a Flower engine's clients keep on their nodes), so a deployed submitter needs only the config."""
    finish = None
    if mode == "simulate" and cfg.tep is None:
        data = simulate_scenario(cfg)
        return Clients(write_scenario_files(cfg, data, directory), truth=scenario_truth(cfg, data))
    if cfg.tep is not None and not cfg.clients:
        tep = TEPClients.of(cfg)
        cfg, finish = tep.write(cfg, directory), tep.add_sections
    if not cfg.clients:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc run` needs a 'clients' list (or --data files)")
    return Clients(cfg, finish=finish)


def _learns(options: ClientOptions, privacy: ClientPrivacy | None) -> bool:
    """With noisy augmentations a client always learns theta: it shrinks the noisy term."""
    return options.learn_theta or (privacy is not None and privacy.noisy_augmentation)


def _privacies(cfg: RunConfig, plan: PrivacyPlan | None, names: list[str]) -> list[ClientPrivacy | None]:
    """The mechanisms of clients without a data file of their own (synthetic, TEP): no ledger."""
    return [client_privacy(cfg.privacy, plan, i, seed=cfg.seed, client=name) for i, name in enumerate(names)]


# ---------------------------------------------------------------------------------------------- synthetic


def simulate_scenario(cfg: RunConfig) -> SyntheticData:
    if cfg.synthetic is None:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc simulate` needs a 'synthetic' section")
    return simulate(cfg.synthetic, np.random.default_rng(cfg.seed))


def scenario_truth(cfg: RunConfig, data: SyntheticData) -> Truth:
    """The true graph; the true A only when clients run the true local models (A_s is comparable then)."""
    return Truth(data.system.edges, data.system.A if cfg.local_models == "given" else None)


def scenario_sessions(
    cfg: RunConfig, data: SyntheticData, plan: PrivacyPlan | None, *, session_class: type[ClientSession] = ClientSession
) -> list[ClientSession]:
    """In-process clients for a simulated scenario (the local engine's shortcut past CSV files)."""
    sessions = []
    names = [f"client{m}" for m in range(len(data.y))]
    for m, (y, privacy) in enumerate(zip(data.y, _privacies(cfg, plan, names))):
        name = f"client{m}"
        if cfg.local_models == "given":
            model = data.system.local_model(m)
        else:
            model = identify(y, client=name, rng=np.random.default_rng(cfg.seed + m))
        series = snapshot_series(y, client=name, request=snapshot_request(cfg))
        sessions.append(
            session_class(
                name,
                model,
                y,
                learn_theta=_learns(cfg.client, privacy),
                theta_kind=cfg.client.theta,  # type: ignore[arg-type]
                privacy=privacy,
                snapshot=series,
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


# ---------------------------------------------------------------------------------------------- CSV files


def read_table(spec: ClientSpec, *, sort_timestamps: bool = False, private: bool = False) -> ClientTable:
    """A client's own CSV file, read with its column policies (fedgc.data.cleaning); a private client
    takes every column and value as it is (what it uses is the model file's, never the data's decision)."""
    return read_client_csv(
        spec.data, client=spec.name, timestamp_column=spec.timestamp_column,
        policy=ColumnPolicy(clean=False) if private else spec.policy, sort_timestamps=sort_timestamps,
    )  # fmt: skip


def _data_file_sizes(cfg: RunConfig) -> list[int] | None:
    """Every client's data file size in bytes; None when one cannot be read (its reader names the problem)."""
    try:
        return [os.path.getsize(spec.data) for spec in cfg.clients]
    except OSError:
        return None


def read_tables(cfg: RunConfig) -> tuple[list[ClientTable], dict[str, ClientData]]:
    """Every client's table on one time axis (cfg.align, fedgc.data.align) and what was done to the data."""
    align = cfg.align == "timestamp"
    tables = [read_table(spec, sort_timestamps=align, private=cfg.privacy is not None) for spec in cfg.clients]
    rows = None
    if align:
        tables, rows = align_tables(tables)
    else:
        check_lengths(tables)
    return tables, {t.client: _data_notes(cfg, t, None if rows is None else rows[t.client]) for t in tables}


def read_sessions(
    cfg: RunConfig, plan: PrivacyPlan | None, *, session_class: type[ClientSession] = ClientSession,
    workers: int = 1, snapshots: str = "",
) -> tuple[list[ClientSession], dict[str, ClientData]]:  # fmt: skip
    """The in-process clients of `fedgc run` (local engine) and what was done to their data.

    Client by client: its file is read, its model identified (or loaded) and its window projected to
    (T, D_m), and its raw (T, P) table is dropped as its session is built, so raw data sits in memory
    for at most `workers` clients at a time. Clients are built `workers` at a time: on forked worker
    processes when there are many small files (`_in_processes`: their building holds the GIL), else on
    threads (reading, identifying and projecting long tables is numpy's work, which releases it). Row
    counts are compared once every file has been read (the same error as read_tables); with several
    faulty clients the first one's error is raised. Alignment by timestamp needs every table at once:
    then all are read first, and each is still dropped as soon as its session is built."""
    run = config_fingerprint(cfg) if cfg.privacy is not None else ""  # hashes every data file: private runs only
    sessions: list[ClientSession] = []
    if cfg.align == "timestamp":
        tables: list[ClientTable | None]
        tables, summary = read_tables(cfg)  # type: ignore[assignment]
        for i, table in enumerate(tables):
            tables[i] = None
            sessions.append(_session(cfg, plan, run, snapshots, session_class, i, table))  # type: ignore[arg-type]
        return sessions, summary

    client = partial(_client, cfg, plan, run, snapshots, session_class)
    indices = range(len(cfg.clients))
    if workers == 1 or len(cfg.clients) < 2:
        built = [client(i) for i in indices]
    elif _in_processes(cfg, plan, session_class):
        built = map_in_processes(client, indices, workers=workers)
    else:  # a pool of `workers` threads: that many tables in memory at a time; errors in client order
        pool = ThreadPoolExecutor(min(workers, len(cfg.clients)))
        try:
            built = [future.result() for future in [pool.submit(client, i) for i in indices]]
        finally:
            pool.shutdown(cancel_futures=True)
    check_lengths([shape for _, _, shape in built])
    return [session for session, _, _ in built], dict(notes for _, notes, _ in built)


# Clients from which, and data files up to which, a run's clients are built on worker processes.
PROCESS_MIN_CLIENTS = 8
PROCESS_MAX_FILE_BYTES = 16 * 2**20


def _in_processes(cfg: RunConfig, plan: PrivacyPlan | None, session_class: type[ClientSession]) -> bool:
    """Build the clients on forked processes: many small files (each client's work is many small calls holding
    the GIL), plain batch sessions (a private client's ledger, a learnable theta's torch module and a
    streaming session stay on threads) and a system that forks."""
    if plan is not None or cfg.privacy is not None or session_class is not ClientSession or cfg.client.learn_theta:
        return False
    if len(cfg.clients) < PROCESS_MIN_CLIENTS or not can_fork():
        return False
    sizes = _data_file_sizes(cfg)
    return sizes is not None and max(sizes) <= PROCESS_MAX_FILE_BYTES


def _client(
    cfg: RunConfig, plan: PrivacyPlan | None, run: str, snapshots: str, session_class: type[ClientSession], i: int
) -> tuple[ClientSession, tuple[str, ClientData], ClientTable]:
    """Client i of read_sessions: its session, its data notes and its table's rows and timestamps (no values)."""
    table = read_table(cfg.clients[i], private=cfg.privacy is not None)
    notes = (table.client, _data_notes(cfg, table, None))
    shape = table._replace(values=np.empty((table.values.shape[0], 0)))  # rows and timestamps only
    return _session(cfg, plan, run, snapshots, session_class, i, table), notes, shape


def _session(
    cfg: RunConfig, plan: PrivacyPlan | None, run: str, snapshots: str, session_class: type[ClientSession], i: int,
    table: ClientTable,
) -> ClientSession:  # fmt: skip
    spec = cfg.clients[i]
    privacy = client_privacy(
        cfg.privacy, plan, i, seed=cfg.seed, client=spec.name, data_file=spec.data, run=run, spec=spec
    )
    return build_session(spec, cfg.client, seed=cfg.seed + i, privacy=privacy, table=table,
                         session_class=session_class, snapshots=snapshots)  # fmt: skip


def _data_notes(cfg: RunConfig, table: ClientTable, alignment: AlignedRows | None) -> ClientData:
    """What was done to one client's table; a private client refuses missing cells here, before any release."""
    entry = ClientData.of(table, alignment)
    if cfg.privacy is not None:
        refuse_missing_cells(table)
    if entry.missing_fraction > OPTIMISTIC_PVALUES_ABOVE:
        warnings.warn(FedGCWarning(
            f"client {table.client!r} ({table.path}): {entry.missing_fraction:.0%} of the measurements are missing; "
            "the filter skips them exactly, but the Granger p-values count completed steps as observed and "
            "are optimistic at this level (measured: ~20% false positives at alpha 0.05 with 30% missing)"
        ), stacklevel=3)  # fmt: skip
    return entry


def refuse_missing_cells(table: ClientTable) -> None:
    """A private client's data must be complete: which cells are missing would be public."""
    missing = int(np.count_nonzero(np.isnan(table.values)))
    if missing:
        raise DataError(
            f"client {table.client!r}: data file {str(table.path)!r} has {missing} missing cell(s); a "
            "private run needs complete data (fill or drop those rows first: which cells are missing would be public)"
        )


def build_session(
    spec: ClientSpec, options: ClientOptions, *, seed: int = 0, privacy: ClientPrivacy | None = None,
    table: ClientTable | None = None, session_class: type[ClientSession] = ClientSession, snapshots: str = "",
) -> ClientSession:  # fmt: skip
    """A client built from its own CSV file and its own model (given .npz, identified on another file, or
    identified from the data). table: the client's table when already read (and aligned). A private client
    refuses missing cells before anything is computed from its data. snapshots: also compute its snapshot
    series for the SIV test ('siv', or 'auto': none when its data cannot give one; see snapshot_series); held
    columns, by the cleaning's report or find_held, are left out (unless the spec says held_values: keep: then
    its held values count as measurements), and D_m is the snapshot rank when the spec gives state_dim."""
    table = read_table(spec, private=privacy is not None) if table is None else table
    if privacy is not None:
        refuse_missing_cells(table)
    model, values = local_model(spec, table, seed)
    series = None
    if snapshots:
        names = model.columns if model.columns is not None else tuple(table.columns)
        held = {h.column for h in table.cleaning.held}
        named = len(names) == values.shape[1]
        by_name = [j for j, c in enumerate(names) if c in held] if named else []
        keep = spec.held_values == "keep"
        series = snapshot_series(values, client=spec.name, request=snapshots, held=None if keep else by_name,
                                 search=not (named and table.cleaning.held_searched), rank=spec.state_dim,
                                 where=str(spec.data))  # fmt: skip
    return session_class(
        spec.name, model, values, learn_theta=_learns(options, privacy), theta_kind=options.theta,  # type: ignore[arg-type]
        privacy=privacy, snapshot=series,
    )  # fmt: skip


def snapshot_request(cfg: RunConfig) -> str:
    """What the clients are asked for: '' (the run's test is LR), 'siv' (server.test: siv) or 'auto'."""
    return "" if cfg.gc_test != "siv" else cfg.server.test


def snapshot_series(
    values: np.ndarray, *, client: str, request: str = "siv", held: Sequence[int] | None = (), search: bool = True,
    rank: int | None = None, where: str = "",
) -> np.ndarray | None:  # fmt: skip
    """A client's snapshot series (fedgc.core.snapshots) from its own measurements (T, P): held analyser columns
    (`held`, plus any find_held finds unless search is False: the cleaning has searched these columns already;
    held None: none, every column is used) are left out. request '': None;
    'siv': DataError naming the client and file when the data cannot give one; 'auto': then a warning and None
    (the run falls back to the LR test)."""
    if not request:
        return None
    drop: set[int] = set()
    if held is not None:
        drop = set(held) | (set(find_held(values)) if search else set())
    try:
        return snapshot(values, drop=sorted(drop), rank=rank, client=client).series
    except ValueError as exc:
        message = f"{exc}{f' (data file {where!r})' if where else ''}"
        if request == "siv":
            raise DataError(message) from None
        warnings.warn(FedGCWarning(f"{message}; the run uses the LR test (server.test: auto)"), stacklevel=2)
        return None


def identify_rows(spec: ClientSpec, values: np.ndarray, seed: int) -> LocalModel:
    """The client's model identified on its (T, P) rows: its state_dim or explained_variance, that seed."""
    return identify(values, client=spec.name, state_dim=spec.state_dim, explained_variance=spec.explained_variance,
                    rng=np.random.default_rng(seed))  # fmt: skip


def identify_model(spec: ClientSpec, table: ClientTable, seed: int) -> LocalModel:
    """The client's model identified from `table`, named by the table's columns."""
    return replace(identify_rows(spec, table.values, seed), columns=tuple(table.columns))


def identify_on_table(spec: ClientSpec) -> ClientTable:
    """The file a client identifies its model on (spec.identify_on), read with its column policies."""
    assert spec.identify_on is not None
    return read_client_csv(spec.identify_on, client=spec.name, policy=spec.policy)


def normal_operation(cfg: RunConfig) -> NormalOperation:
    """The normal-operation reference of a stream's alert calibration (streaming.alert_calibration): TEP's
    tep.identify_on run, or every CSV client's identify_on file, the data its model is identified on
    (RunConfig refuses the calibration without them); a client identifies its model on part of it as the
    run does (its state_dim or explained_variance, seed cfg.seed + its index)."""
    if cfg.tep is not None:
        return tep_reference(cfg)
    specs = {spec.name: spec for spec in cfg.clients}
    rows = {name: identify_on_table(spec).values for name, spec in specs.items()}
    if len({len(r) for r in rows.values()}) > 1:
        files = ", ".join(f"client '{n}': {specs[n].identify_on} ({len(r)} rows)" for n, r in rows.items())
        raise DataError(f"the alert reference (every client's identify_on file) needs the same number of rows in "
                        f"every file, got {files}")  # fmt: skip

    return NormalOperation(rows, lambda i, name, values: identify_rows(specs[name], values, cfg.seed + i))


def alert_references(cfg: RunConfig, models: Mapping[str, LocalModel]) -> list[list[StreamingSession]]:
    """The normal-operation streams that calibrate a stream's alerts (streaming.alert_calibration): the
    reference streamed with the stream's own models ('reference'), its two cross-fitted halves ('cross_fit',
    each half at least window + 2 steps long), or none ('none')."""
    stream = cfg.streaming
    assert stream is not None
    theta = {"learn_theta": cfg.client.learn_theta, "theta_kind": cfg.client.theta}
    if stream.alert_calibration == "reference":
        return [reference_sessions(normal_operation(cfg), models, **theta)]
    if stream.alert_calibration == "cross_fit":
        return cross_fit_sessions(normal_operation(cfg), min_length=stream.window + 2 * stream.stride, **theta)
    return []


def local_model(spec: ClientSpec, table: ClientTable, seed: int) -> tuple[LocalModel, np.ndarray]:
    """The client's model and the table's values it reads, column for column: identified from the table,
    identified on spec.identify_on (other data the client spends), or its .npz. A model that names its
    columns takes them by name; one that does not takes the file's columns in order (restricted to the
    kept ones when it covers every column of the file)."""
    if spec.identify_on is not None:
        model = identify_model(spec, identify_on_table(spec), seed)
    elif spec.model == "identify":
        model = identify_model(spec, table, seed)
    else:
        model = load_npz(spec.model, spec.name)
    return _model_columns(spec, table, model)


def _model_columns(spec: ClientSpec, table: ClientTable, model: LocalModel) -> tuple[LocalModel, np.ndarray]:
    values = table.values
    if model.columns is not None:
        absent = [c for c in model.columns if c not in table.columns and c not in _dropped(table)]
        if absent:
            raise DataError(f"client '{spec.name}': data file {str(spec.data)!r} lacks the model's column(s) "
                            f"{', '.join(map(repr, absent))}")  # fmt: skip
        keep = [j for j, c in enumerate(model.columns) if c in table.columns]
        names = [model.columns[j] for j in keep]
        model = _restricted(spec, model, keep) if len(keep) < model.obs_dim else model
        if tuple(names) == tuple(table.columns):
            return model, values  # the table's own columns in order: no (T, P) copy
        return model, np.take(values, [table.columns.index(c) for c in names], axis=1)
    kept, n_file = table.cleaning.kept, table.cleaning.file_columns
    if model.obs_dim == values.shape[1]:
        return model, values
    if kept and model.obs_dim == n_file:
        # A model of every column in the file: its marginal on the kept sensors (a dropped sensor is one
        # that is never observed, so its rows of C and R simply leave the measurement model).
        return _restricted(spec, model, list(kept)), values
    dropped = _dropped(table)
    after = f" after dropping column(s) {', '.join(map(repr, dropped))} ({n_file} in the file)" if dropped else ""
    raise ConfigError(
        f"client '{spec.name}': model {spec.model} has {model.obs_dim} sensors but {spec.data} has "
        f"{values.shape[1]} columns{after}"
    )


def _dropped(table: ClientTable) -> list[str]:
    return [*table.cleaning.dropped_constant, *(c for c, _ in table.cleaning.dropped_missing)]


def _restricted(spec: ClientSpec, model: LocalModel, keep: list[int]) -> LocalModel:
    k = np.asarray(keep)
    restricted = replace(
        model, C=model.C[k], R=model.R[np.ix_(k, k)], mean=model.mean[k], scale=model.scale[k],
        columns=None if model.columns is None else tuple(model.columns[j] for j in keep),
    )  # fmt: skip
    try:
        validate(restricted, spec.name)
    except ModelError as exc:
        raise ModelError(f"{exc} (model {spec.model} without the dropped column(s) of {spec.data})") from None
    return restricted
